"""The shift gauge: what projections cannot tell, fixed for output and removed for comparisons.

Shifts are defined up to a rigid translation (dx, dy, dz) of the specimen: in the tilt-axis frame it
adds ``dx cos(t) + dz sin(t)`` across the axis and ``dy`` along it. Output (:func:`fix_gauge`): the
mean shift along the axis and the cos(t) term across it are set to zero (the specimen centred in x
and y), the sin(t) term (the specimen's height, fixed by the slab of projection matching) is kept.
Comparisons with a ground truth (:func:`gauge_free_error`, tests and benchmark) remove all three terms
from the *difference*, identically for both.
"""

from __future__ import annotations

import numpy as np

from tiltflow.align import warp


def _basis(tilts) -> np.ndarray:
    th = np.deg2rad(np.asarray(tilts, float))
    return np.column_stack([np.cos(th), np.sin(th)])


def fix_gauge(shifts_px, tilts, rot) -> np.ndarray:
    """Shifts (n, 2) with zero mean along the axis and no cos(tilt) term across it."""
    d = warp.to_axis_frame(np.asarray(shifts_px, float), rot)
    b = _basis(tilts)
    coef = np.linalg.lstsq(b, d[:, 0], rcond=None)[0]
    d[:, 0] -= coef[0] * b[:, 0]
    d[:, 1] -= d[:, 1].mean()
    return warp.to_image_frame(d, rot)


def gauge_free_error(est_px, true_px, tilts, rot) -> np.ndarray:
    """(n, 2) error in the tilt-axis frame after removing dx cos + dz sin (across) and dy (along)."""
    e = warp.to_axis_frame(np.asarray(est_px, float) - np.asarray(true_px, float), rot)
    b = _basis(tilts)
    coef = np.linalg.lstsq(b, e[:, 0], rcond=None)[0]
    e[:, 0] -= b @ coef
    e[:, 1] -= e[:, 1].mean()
    return e


def rms(err: np.ndarray) -> float:
    """Root-mean-square length of (n, 2) errors."""
    return float(np.sqrt(np.mean(np.sum(np.asarray(err) ** 2, axis=1))))
