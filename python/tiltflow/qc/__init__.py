"""Quality control: tilt exclusion with reasons, defocus handedness, and the session report.

Modules: ``exclusion`` (per-tilt decisions and user overrides), ``imagestats`` (dark and blank images),
``handedness`` (sign of the defocus gradient, rlnTomoHand), ``session`` (reading a results folder),
``plots`` (matplotlib figures), ``report`` (the one-page HTML).
"""
