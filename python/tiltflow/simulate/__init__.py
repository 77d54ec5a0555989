"""Synthetic SerialEM sessions with ground truth: the data every later step is tested and benchmarked on.

``simulate_session(make_config("tiny"), out)`` writes movies, one mdoc per tilt series, the gain reference
and ``ground_truth.json``; :func:`load_truth` reads the latter back. Modules: ``config`` (settings,
presets), ``schemes`` (acquisition order), ``phantom`` (the specimen), ``project`` (analytic projection),
``imaging`` (CTF, intensity, frames), ``motion`` (shifts, drift), ``detector`` (sensitivity, counts, files),
``serialem`` (names, mdoc), ``volume`` (phantom voxels), ``truth`` (JSON), ``session`` (orchestration).
"""

from tiltflow.simulate.config import PRESETS, SimulationConfig, make_config
from tiltflow.simulate.truth import GroundTruth, SeriesTruth, TiltTruth, load_truth


def simulate_session(cfg, out):
    """Write a simulated session into ``out`` (see :mod:`tiltflow.simulate.session`)."""
    from tiltflow.simulate.session import simulate_session as _run

    return _run(cfg, out)


__all__ = ["PRESETS", "GroundTruth", "SeriesTruth", "SimulationConfig", "TiltTruth", "load_truth", "make_config",
           "simulate_session"]
