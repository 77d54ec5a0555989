"""Specimen shifts between tilts (tracking errors) and beam-induced drift within each movie.

Conventions (the ground truth's): ``shift_px`` is RELION's per-tilt shift in movie pixels (x, y), added after
the rotation (``geometry.project_points``). ``frame_shifts_px[i]`` is the drift of frame ``i``: its content is
the tilt image translated by ``+frame_shifts_px[i]``, measured from the mean position over the movie (the
shifts of one movie sum to zero), so aligning frame ``i`` needs a shift of ``-frame_shifts_px[i]``.
"""

from __future__ import annotations

import math

import numpy as np


def specimen_shifts(tilts_deg: np.ndarray, sigma_px: float, rng: np.random.Generator) -> np.ndarray:
    """Per-tilt shifts (n, 2): Gaussian, larger at high tilt (where tracking is worse), capped at 4 sigma."""
    t = np.asarray(tilts_deg, dtype=np.float64)
    scale = sigma_px * (0.6 + 0.4 * np.abs(np.sin(np.radians(t))) / math.sin(math.radians(60)))
    s = rng.normal(size=(len(t), 2)) * scale[:, None]
    cap = 4 * max(sigma_px, 1e-9)
    return np.clip(s, -cap, cap)


def frame_drift(n_frames: int, path_px: float, rng: np.random.Generator, kick: float = 1.0) -> np.ndarray:
    """Smooth drift of one movie (n_frames, 2), mean zero.

    Beam-induced motion is fastest at the start of an exposure and decays: the position follows
    ``1 - exp(-t / tau)`` along a random direction with a slight bend. ``kick`` scales the path (the first
    exposure after a large stage move drifts more).
    """
    if n_frames < 2 or path_px <= 0:
        return np.zeros((max(n_frames, 1), 2))
    length = path_px * kick * rng.uniform(0.6, 1.4)
    phi = rng.uniform(0, 2 * math.pi)
    tau = rng.uniform(0.2, 0.6)
    bend = rng.uniform(-0.4, 0.4)
    u = np.array([math.cos(phi), math.sin(phi)])
    v = np.array([-u[1], u[0]])
    t = (np.arange(n_frames) + 0.5) / n_frames
    s = (1 - np.exp(-t / tau)) / (1 - math.exp(-1 / tau))
    pos = length * (s[:, None] * u + bend * (s * (1 - s))[:, None] * v)
    return pos - pos.mean(axis=0)


def stage_kick(prev_deg: float | None, this_deg: float) -> float:
    """Drift multiplier after a stage move of ``|this - prev|`` degrees (1 for small steps, up to 2)."""
    if prev_deg is None:
        return 1.5
    return 1.0 + min(abs(this_deg - prev_deg) / 30.0, 1.0)
