"""Defocus consistency across a tilt series: one path through the acquisition that explains every tilt.

Why: the late exposures of a dose-symmetric series have lost their high-resolution Thon rings to
radiation damage, and the two or three rings left fit several defoci (ring orders) almost equally well,
so fitting each tilt on its own (as RELION's CtfFind does) fails there by micrometres. Exposures taken
one after another have similar defoci (SerialEM focuses every tilt to the same target; the height of the
specimen drifts slowly), which is the missing information.

Method: each tilt's 1-D search gives a score curve r(d) (normalised correlation per defocus). With N
independent bins, the profile log-likelihood of a CTF with free amplitude is -N/2 log(1 - r^2). The
defocus offsets from the nominal defocus follow a Gaussian random walk in acquisition order (step s.d.
``sigma``); the most probable path (Viterbi) is found by dynamic programming on the defocus grid. Tilts
with sharp peaks pin the path; weak tilts follow their neighbours unless their own data are decisive.
Tilts with no decisive evidence anywhere (late, damaged exposures) keep the last well-determined value
(a random walk's best guess), rather than a noise peak.
"""

from __future__ import annotations

import numpy as np

#: bins of a rotational average are correlated by the tile window (about two per independent value)
BINS_PER_INDEPENDENT_VALUE = 2.0

#: evidence a tilt needs before it counts (log-likelihood units, e^5 = 150:1): the best of a few hundred
#: defoci scores about e^3 on noise alone, and the spectrum's non-CTF structure (gold beads' form factor,
#: particles) is the same in every tilt, so weak peaks agree with each other and would otherwise drag the
#: path away step by step (measured on the simulated demo session: 3 lets the late tilts run off by
#: 0.5-0.8 um, 5 does not)
EVIDENCE_THRESHOLD = 5.0


def log_likelihood(scores: np.ndarray, n_bins: int, threshold: float = EVIDENCE_THRESHOLD) -> np.ndarray:
    """Profile log-likelihood of a CTF whose rings correlate ``scores`` with the spectrum, less ``threshold``.

    -N/2 log(1 - r^2) for r > 0 with N independent bins; values below ``threshold`` count as no evidence.
    """
    r = np.clip(np.asarray(scores, dtype=np.float64), 0.0, 0.999)
    n = max(n_bins / BINS_PER_INDEPENDENT_VALUE, 1.0)
    return np.maximum(-0.5 * n * np.log1p(-r * r) - threshold, 0.0)


def consistent_path(curves: list[tuple[np.ndarray, np.ndarray, int]], nominal: list[float],
                    sigma: float, step: float = 100.0) -> np.ndarray:
    """Most probable defocus per tilt (A), tilts in acquisition order.

    ``curves[i]`` = (defoci, scores, n_bins) of tilt i's 1-D search; ``nominal[i]`` its nominal defocus
    (the random walk is on the offsets from it); ``sigma`` the step s.d. between consecutive tilts (A).
    """
    offsets = [np.asarray(d, float) - nom for (d, _, _), nom in zip(curves, nominal, strict=True)]
    lo = min(float(o.min()) for o in offsets)
    hi = max(float(o.max()) for o in offsets)
    grid = np.arange(lo, hi + 0.5 * step, step)
    ll = np.full((len(curves), len(grid)), -np.inf)
    for i, ((_, scores, n_bins), off) in enumerate(zip(curves, offsets, strict=True)):
        inside = (grid >= off.min() - 1e-6) & (grid <= off.max() + 1e-6)
        ll[i, inside] = np.interp(grid[inside], off, log_likelihood(scores, n_bins))
    jump = (grid[:, None] - grid[None, :]) ** 2 / (2.0 * sigma * sigma)  # [to, from]
    value = ll[0].copy()
    back = np.zeros((len(curves), len(grid)), dtype=np.int64)
    for i in range(1, len(curves)):
        cand = value[None, :] - jump
        back[i] = np.argmax(cand, axis=1)
        value = ll[i] + cand[np.arange(len(grid)), back[i]]
    path = np.zeros(len(curves), dtype=np.int64)
    path[-1] = int(np.argmax(value))
    for i in range(len(curves) - 1, 0, -1):
        path[i - 1] = back[i, path[i]]
    return grid[path] + np.asarray(nominal, float)


def gradient_sign_evidence(fits) -> tuple[int, float]:
    """The sign of the defocus gradient across the tilt axis for a whole series, and its evidence.

    Each tilted image's 1-D search scored the tilt-corrected spectrum for both signs (``gradient_scores``);
    the handedness is the same for all tilts, so their log-likelihood ratios add up. Returns (0, 0) when
    no tilt was tested or the evidence does not favour either sign.
    """
    total = 0.0
    for f in fits:
        sc = getattr(f, "gradient_scores", {}) or {}
        if 1 in sc and -1 in sc and f.curve is not None:
            n = f.curve[2]
            total += float(log_likelihood(np.array([sc[1]]), n, 0.0)[0] - log_likelihood(np.array([sc[-1]]), n, 0.0)[0])
    if abs(total) < 1e-9:
        return 0, 0.0
    return (1 if total > 0 else -1), abs(total)
