"""A movie's frame trajectory: RELION's convention, smoothing, and RELION's accumulated-motion statistics.

Convention (RELION's ``rlnMicrographShiftX/Y`` and MotionCor2's log): ``shifts[i]`` is the translation, in
movie pixels, that is *applied to frame i* to align it, relative to the first frame used (whose shift is
0). A specimen drifting by ``+d`` therefore has shift ``-d``; :meth:`Trajectory.drift` gives ``+d``.
Frames left out of the sum (``--throw``/``--trunc``) have no shift (NaN; RELION writes -9999).

Smoothing: beam-induced motion is smooth over a tilt's few frames while per-frame estimates at tomography
doses are noisy. :func:`smooth` fits a Whittaker smoother (least squares with a penalty on second
differences) whose strength is chosen by generalised cross-validation, so precise estimates are kept as
they are and noisy ones are smoothed - no per-dataset tuning.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: RELION's --dose_motionstats_cutoff default (e/A^2): motion up to this dose is "early"
EARLY_DOSE_CUTOFF = 4.0


@dataclass
class Trajectory:
    """Per-frame shifts of one movie (``(n_frames, 2)`` x, y, movie pixels; NaN = frame not used).

    ``local_model`` is RELION's third-order polynomial model (36 coefficients: 18 for x, 18 for y) of the
    local motion on top of the global shifts, or None for global-only correction.
    """

    shifts: np.ndarray
    local_model: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.shifts = np.asarray(self.shifts, dtype=float).reshape(-1, 2)

    @property
    def n_frames(self) -> int:
        """Frames in the movie, used or not."""
        return self.shifts.shape[0]

    @property
    def used(self) -> np.ndarray:
        """Boolean mask of the frames that were aligned and summed."""
        return np.isfinite(self.shifts).all(axis=1)

    @property
    def first_frame(self) -> int:
        """1-based number of the first frame used (RELION's rlnMicrographStartFrame)."""
        idx = np.flatnonzero(self.used)
        return int(idx[0]) + 1 if idx.size else 1

    @classmethod
    def from_used(cls, shifts_used: np.ndarray, n_frames: int, first: int, local_model=None) -> Trajectory:
        """Build from the shifts of the used frames ``first..first+len-1`` (0-based ``first``).

        The shifts are re-referenced to the first used frame, as RELION writes them.
        """
        s = np.asarray(shifts_used, dtype=float).reshape(-1, 2)
        full = np.full((n_frames, 2), np.nan)
        full[first:first + len(s)] = s - s[0]
        return cls(full, local_model)

    def drift(self) -> np.ndarray:
        """Specimen drift ``(n, 2)`` (the content moved by ``+drift``), mean over used frames removed."""
        d = -self.shifts.copy()
        d[self.used] -= d[self.used].mean(axis=0)
        return d

    def accumulated_motion(
        self, pixel_size: float, dose_per_frame: float, pre_exposure: float, cutoff: float = EARLY_DOSE_CUTOFF
    ) -> tuple[float, float, float]:
        """``(total, early, late)`` path length of the global trajectory in Angstrom.

        RELION's rule (``MotioncorrRunner::generateLogFilePDFAndWriteStarFiles``): the step into frame ``f``
        (1-based movie frame) is early when ``f <= (cutoff - pre_exposure) / dose_per_frame``. RELION sums
        the shifts in movie pixels although its labels say Angstrom; tiltflow multiplies by the movie pixel
        size, so the values mean what the labels say.
        """
        idx = np.flatnonzero(self.used)
        if idx.size < 2:
            return 0.0, 0.0, 0.0
        cutoff_frame = (cutoff - pre_exposure) / dose_per_frame if dose_per_frame > 0 else -np.inf
        total = early = late = 0.0
        for a, b in zip(idx[:-1], idx[1:], strict=True):
            d = float(np.hypot(*(self.shifts[b] - self.shifts[a]))) * pixel_size
            total += d
            if b + 1 <= cutoff_frame:
                early += d
            else:
                late += d
        return total, early, late


def smooth(shifts: np.ndarray, weights: np.ndarray | None = None,
           lambdas: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """Whittaker-smooth ``shifts`` (``(n, 2)``) with the GCV-optimal penalty; return (smoothed, lambda).

    The same penalty is used for x and y (one trajectory). Fewer than 4 frames are returned unchanged.
    """
    y = np.asarray(shifts, dtype=float)
    n = y.shape[0]
    if n < 4:
        return y.copy(), 0.0
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=float)
    wm = np.diag(w)
    d2 = np.diff(np.eye(n), n=2, axis=0)
    pen = d2.T @ d2
    grid = np.logspace(-3, 5, 33) if lambdas is None else np.asarray(lambdas, dtype=float)
    best = (np.inf, 0.0, y.copy())
    for lam in grid:
        hat = np.linalg.solve(wm + lam * pen, wm)
        fit = hat @ y
        rss = float((w[:, None] * (y - fit) ** 2).sum())
        dof = n - float(np.trace(hat))
        score = n * rss / max(dof, 1e-9) ** 2
        if score < best[0]:
            best = (score, float(lam), fit)
    return best[2], best[1]
