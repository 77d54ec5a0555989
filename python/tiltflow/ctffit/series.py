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

The step uses :func:`smooth_path` instead: a smooth trend plus an independent focusing error per exposure
(SerialEM focuses before every tilt), which follows the trend through a run of weak late tilts where the
random walk can only hold the last value (simulated demo session: 45 nm RMS against 53 nm).
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


#: a tilt's own curve counts towards the smooth trend only above this peak log-likelihood (noise alone
#: reaches about e^3 over a few hundred defoci)
TREND_EVIDENCE = 3.0


def smooth_path(curves: list[tuple[np.ndarray, np.ndarray, int]], nominal: list[float], sigma: float,
                bandwidth: float = 3.0, iterations: int = 3) -> np.ndarray:
    """Most probable defocus per tilt (A), tilts in acquisition order: own evidence + a smooth trend.

    The model behind it: the defocus of an exposure is a slowly varying target (SerialEM's focus target
    plus the slow drift of the specimen height) plus an independent focusing error of s.d. ``sigma`` (A)
    per exposure (autofocus before every tilt). So a tilt is tied to a *smooth trend* through its
    neighbours, not to its previous tilt as in a random walk (which has to hold the last value through a
    run of weak, late tilts and cannot follow the trend there).

    Per tilt the log-likelihood curve (:func:`log_likelihood`, no threshold) gives its own estimate and
    its precision (from the width of its peak: a drop of 2 log units = 2 s.d.). The trend at tilt i is a
    locally linear, Gaussian-kernel (``bandwidth`` tilts) weighted regression of the *other* tilts'
    offsets from the nominal defocus, each weighted by 1 / (its variance + sigma^2), tilts without a
    decisive peak (:data:`TREND_EVIDENCE`) left out. Each tilt then takes the maximum of its own
    log-likelihood plus the Gaussian prior N(trend, sigma^2 + trend variance); the estimates feed the
    next trend (``iterations`` rounds). A tilt with sharp rings keeps its own peak; a weak one with two
    similar peaks (two ring orders) takes the one near the trend.
    """
    n = len(curves)
    grids = [np.asarray(d, float) - nom for (d, _, _), nom in zip(curves, nominal, strict=True)]
    lls = [log_likelihood(s, nb, 0.0) for (_, s, nb) in curves]
    idx = np.arange(n, dtype=float)
    est = np.array([g[int(np.argmax(ll))] for g, ll in zip(grids, lls, strict=True)])
    if n < 3 or sigma <= 0:
        return est + np.asarray(nominal, float)
    for _ in range(max(1, iterations)):
        w = np.zeros(n)
        for i, (g, ll) in enumerate(zip(grids, lls, strict=True)):
            if ll.max() < TREND_EVIDENCE:
                continue
            j = int(np.argmin(np.abs(g - est[i])))
            near = g[ll >= ll[j] - 2.0]
            near = near[np.abs(near - est[i]) <= 3 * sigma + (g[1] - g[0] if len(g) > 1 else 0.0)]
            sd = 0.25 * (np.ptp(near) + (g[1] - g[0] if len(g) > 1 else 0.0)) if len(near) else sigma
            w[i] = 1.0 / (sd * sd + sigma * sigma)
        new = est.copy()
        for i, (g, ll) in enumerate(zip(grids, lls, strict=True)):
            k = w * np.exp(-0.5 * ((idx - i) / bandwidth) ** 2)
            k[i] = 0.0  # leave the tilt out of its own trend
            if (k > 0).sum() < 2:
                continue
            x = np.stack([np.ones(n), idx - i], axis=1)
            a = x.T @ (k[:, None] * x) + 1e-12 * np.eye(2)
            cov = np.linalg.inv(a)
            beta = cov @ (x.T @ (k * est))
            var = sigma * sigma + min(float(cov[0, 0]), 4.0 * sigma * sigma)
            new[i] = g[int(np.argmax(ll - (g - beta[0]) ** 2 / (2.0 * var)))]
        if np.array_equal(new, est):
            break
        est = new
    return est + np.asarray(nominal, float)
