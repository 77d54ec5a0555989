"""Dark and blank tilt detection, with the numbers behind every decision.

Dark (AreTomo's rule, ``MrcUtil/CRemoveDarkFrames.cpp``): r = |mean| / std of each image; an image is
dark when r <= dark_tol x r(zero tilt) (or std is ~0 / not finite). A dark image is one where the beam
was mostly blocked (grid bar, thick ice at high tilt): few counts, so shot noise dominates the std.

Blank (tiltflow's addition): an image with counts but no specimen contrast (e.g. the stage drifted off
the target, or a blurred or empty frame). Measured as the neighbour correlation of the 4x-binned,
mean-removed image: shot noise is white (correlation ~0), specimen structure is not. An image is blank
when that correlation is below ``blank_tol`` x the series median and below 0.1 absolute, or below
0.02 (or 3 sigma of its estimate on small images) whatever the series (pure white noise: a whole series of such images is "all blank").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def white_level(shape: tuple[int, int]) -> float:
    """Neighbour correlation below which an image is white noise: 0.02, or 3 sigma of the estimate."""
    h, w = shape
    a = (h - 2 * (h // 10), w - 2 * (w // 10))
    b = max(1, min(a) // 64)
    return max(0.02, 3.0 / np.sqrt((a[0] // b) * (a[1] // b)))


@dataclass
class DarkReport:
    """Per tilt: ``ratio`` = |mean|/std, ``structure`` = neighbour correlation, ``reasons`` (None = kept)."""

    ratio: np.ndarray
    structure: np.ndarray
    threshold: float
    reasons: list[str | None]

    @property
    def excluded(self) -> dict[int, str]:
        """The images set aside, by index, each with the reason it was."""
        return {i: r for i, r in enumerate(self.reasons) if r is not None}


def image_stats(stack) -> tuple[np.ndarray, np.ndarray]:
    """(|mean|/std, neighbour correlation at 4x binning) per image, on the central 80 %.

    ``stack`` (n, h, w): an array or a lazy one (``io.mrc.MrcSections``); read one image at a time.
    """
    n, h, w = stack.shape
    y0, x0 = h // 10, w // 10
    ratio = np.zeros(n)
    struct = np.zeros(n)
    for i in range(n):
        a = np.asarray(stack[i][y0: h - y0, x0: w - x0], dtype=np.float64)
        if not np.all(np.isfinite(a)):
            ratio[i], struct[i] = 0.0, 0.0
            continue
        sd = a.std()
        ratio[i] = abs(a.mean()) / sd if sd > 1e-12 * max(1.0, abs(a.mean())) else 0.0
        b = max(1, min(a.shape) // 64)
        hb, wb = a.shape[0] // b, a.shape[1] // b
        a = a[: hb * b, : wb * b].reshape(hb, b, wb, b).mean(axis=(1, 3))
        a = a - a.mean()
        v = (a * a).mean()
        if v <= 0:
            continue
        cx = (a[:, 1:] * a[:, :-1]).mean() / v
        cy = (a[1:, :] * a[:-1, :]).mean() / v
        struct[i] = 0.5 * (cx + cy)
    return ratio, struct


def detect_dark(
    stack, tilt_angles, dark_tol: float = 0.7, blank_tol: float = 0.3, log=None,
) -> DarkReport:
    """Flag dark and blank tilts of ``stack`` (n, h, w) whose rows have ``tilt_angles`` (deg).

    ``dark_tol`` <= 0 or >= 1 disables the dark rule (as in AreTomo); ``blank_tol`` <= 0 disables blanks.
    """
    tilts = np.asarray(tilt_angles, float)
    ratio, struct = image_stats(stack)
    zero = int(np.argmin(np.abs(tilts)))
    ref = ratio[zero]
    if ref <= 0:  # the zero tilt itself is dark: use the series' brightest images as reference
        ref = float(np.median(np.sort(ratio)[len(ratio) // 2:]))
    use_dark = 0.0 < dark_tol < 1.0
    threshold = dark_tol * ref if use_dark else 0.0
    white = white_level(stack.shape[-2:])
    med_struct = float(np.median(struct[ratio > threshold])) if np.any(ratio > threshold) else 0.0
    reasons: list[str | None] = []
    for i, t in enumerate(tilts):
        reason = None
        if ratio[i] <= 0:
            reason = f"dark: constant or non-finite image (|mean|/std {ratio[i]:.3g})"
        elif use_dark and ratio[i] <= threshold:
            reason = f"dark: |mean|/std {ratio[i]:.3g} <= {dark_tol:g} x {ref:.3g} (zero tilt)"
        elif blank_tol > 0 and struct[i] < white:
            reason = f"blank: only white noise, neighbour correlation {struct[i]:.3f} < {white:.3f}"
        elif blank_tol > 0 and struct[i] < blank_tol * med_struct and struct[i] < 0.1:
            reason = (f"blank: no specimen contrast, neighbour correlation {struct[i]:.3f} "
                      f"< {blank_tol:g} x {med_struct:.3f} (series median)")
        reasons.append(reason)
        if log is not None:
            if reason:
                log.info("tilt %6.1f: %s", t, reason)
            else:
                log.debug("tilt %6.1f: kept, |mean|/std %.3g (threshold %.3g), structure %.3f", t,
                          ratio[i], threshold, struct[i])
    return DarkReport(ratio, struct, threshold, reasons)
