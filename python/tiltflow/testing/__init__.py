"""Generators for tests, benchmarks and ``make demo``; no pipeline step imports them.

Kept apart from the library so that what ships as tiltflow's processing code is only that:
``align_series`` (analytic Gaussian-blob tilt series projected in RELION's model, with their truth),
``ctf_micrograph`` (micrographs with a known CTF), ``demo_summary`` (``make demo``'s comparison with the
simulated truth: ``python -m tiltflow.testing.demo_summary SESSION RESULTS``).
"""
