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

The step uses :func:`series_model` (one gradient sign, :func:`smooth_path`, one astigmatism) and
:func:`apply_series_model` (refits from each tilt's kept 1-D searches, no second reading of the images).
:func:`smooth_path` rather than :func:`consistent_path`: a smooth trend plus an independent focusing error per exposure
(SerialEM focuses before every tilt), which follows the trend through a run of weak late tilts where the
random walk can only hold the last value (simulated demo session: 45 nm RMS against 53 nm).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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


#: a tilt keeps its own defocus against the path when the path's 2-D score is below this share of its own
OWN_RINGS_WIN = 0.5

#: a fit counts as good when its rings reach within this factor of the series' best fit resolution
WELL_FITTED = 1.5

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


# --- the series pass: one handedness, one defocus path, one astigmatism; then refits -------------------------


@dataclass(frozen=True)
class SeriesModel:
    """What the series as a whole says about each tilt's CTF (tilts in acquisition order)."""

    gradient_sign: int  # one sign of the defocus gradient for every tilt (0: not determined)
    evidence: float  # its log-likelihood ratio
    path: np.ndarray  # most probable defocus per tilt (A)
    astigmatism: tuple[float, float] | None  # one (|U - V| A, angle deg) for the series, or None


@dataclass(frozen=True)
class SeriesDecision:
    """One tilt after the series pass: its fit, whether it was refitted and whether the series imposed its defocus."""

    fit: object  # fit.CtfFit
    own_defocus: float  # A, the best of the tilt's own 1-D curve (for the chosen sign)
    refitted: bool
    imposed: bool  # the tilt's data disagreed with the path: its defocus is the path's, the rest was fitted
    seconds: float  # spent refitting it


def series_model(fits: list, nominal: list[float], prior_sd: float, one_astigmatism: bool) -> SeriesModel:
    """The series-level decisions from every fitted tilt's first fit (``prior_sd``: A; 0 = no defocus path prior).

    One defocus-gradient sign for all tilts (the handedness is the same for every tilt); a defocus path
    consistent across the acquisition (:func:`smooth_path`: a smooth trend plus an independent focusing error per
    exposure) on the curves of that sign; optionally one astigmatism (:func:`series_astigmatism`).
    """
    sign, evidence = gradient_sign_evidence(fits)
    curves = [f.curves.get(sign, f.curve) for f in fits]
    if prior_sd > 0:
        path = smooth_path(curves, nominal, prior_sd)
    else:
        path = np.array([_curve_peak(c) for c in curves])
    astig = series_astigmatism(fits) if one_astigmatism else None
    return SeriesModel(sign, evidence, np.asarray(path, float), astig)


def apply_series_model(fits: list, model: SeriesModel, agree: float, workers: int = 1) -> list[SeriesDecision]:
    """Refit only the tilts the model changes, from the 1-D searches each fit kept (:func:`fit.refit`).

    A tilt whose own best defocus agrees with the path (within ``agree`` A), whose sign is the series' and whose
    astigmatism is free is kept as it is. Otherwise a tilt whose own peak agrees is refitted near it with the
    series' sign and astigmatism; a tilt whose data disagree (weak rings, a wrong ring order) gets the path's
    defocus - the most probable value given its own curve and its neighbours' - and only the rest is fitted,
    unless the tilt is well fitted (rings to within 1.5x of the series' best resolution) and the path's
    defocus explains less than :data:`OWN_RINGS_WIN` of the 2-D correlation its own does (two ring orders of a
    damaged tilt score alike and fit to low resolution; a real focusing error of a good tilt does not). The refits are independent: ``workers`` of them at a time (:mod:`tiltflow.parallel`).
    """
    import time

    from tiltflow.ctffit.fit import refit
    from tiltflow.parallel import map_ordered

    sign = model.gradient_sign
    resolutions = [f.resolution for f in fits if math.isfinite(f.resolution) and f.resolution > 0]
    best = min(resolutions) if resolutions else math.inf

    def well_fitted(f) -> bool:  # rings as far as the series' good fits (:data:`WELL_FITTED`)
        return f.score > 0 and math.isfinite(f.resolution) and f.resolution <= WELL_FITTED * best

    def decide(i: int) -> SeriesDecision:
        f, d = fits[i], model.path[i]
        own = _curve_peak(f.curves.get(sign, f.curve))
        consistent = abs(own - d) <= agree
        same_sign = sign == 0 or f.gradient_sign in (0, sign)
        if consistent and same_sign and model.astigmatism is None and abs(f.defocus - d) <= agree:
            return SeriesDecision(f, own, False, False, 0.0)
        t0 = time.perf_counter()
        near_own = refit(f, gradient_sign=sign or None, fixed_astigmatism=model.astigmatism)
        if consistent:
            return SeriesDecision(near_own, own, True, False, time.perf_counter() - t0)
        on_path = refit(f, gradient_sign=sign or None, fixed_astigmatism=model.astigmatism, fixed_defocus=float(d))
        if well_fitted(near_own) and on_path.score < OWN_RINGS_WIN * near_own.score:
            # the tilt's rings say otherwise, clearly: a focusing error, not a weak tilt (simulated test session:
            # CC 0.31 to 10 A at its own defocus, -0.06 on the path 0.8 um away)
            return SeriesDecision(near_own, own, True, False, time.perf_counter() - t0)
        return SeriesDecision(on_path, own, True, True, time.perf_counter() - t0)

    if len(fits) != len(model.path):
        raise ValueError(f"{len(fits)} fits but a defocus path of {len(model.path)} tilts")
    return map_ordered(decide, range(len(fits)), workers)


def _curve_peak(curve: tuple) -> float:
    return float(curve[0][int(np.argmax(curve[1]))])


def series_astigmatism(fits: list, min_tilts: int = 3) -> tuple[float, float] | None:
    """One astigmatism (|U - V| A, angle deg) for a series: astigmatism is a property of the microscope,
    so it is taken from the well-fitted tilts only (fit resolution within 1.5x of the series' best, at
    least ``min_tilts``), as the weighted median (weights 1/resolution^2) of their astigmatism vectors -
    a median, so that one spurious fit cannot move it.
    """
    from tiltflow.ctffit.model import from_relion, to_relion

    good = sorted((f for f in fits if math.isfinite(f.resolution) and f.resolution > 0), key=lambda f: f.resolution)
    if len(good) < min_tilts:
        return None
    close = [f for f in good if f.resolution <= WELL_FITTED * good[0].resolution]
    good = close if len(close) >= min_tilts else good[:min_tilts]
    w = np.array([1.0 / f.resolution**2 for f in good])
    vec = np.array([from_relion(f.defocus_u, f.defocus_v, f.defocus_angle)[1:] for f in good])
    ax, ay = weighted_median(vec[:, 0], w), weighted_median(vec[:, 1], w)
    u, v, angle = to_relion(0.0, ax, ay)
    return u - v, angle


def weighted_median(x: np.ndarray, w: np.ndarray) -> float:
    """The smallest ``x`` at which the cumulative weight reaches half the total (a median, not interpolated)."""
    order = np.argsort(x)
    cum = np.cumsum(w[order])
    return float(x[order][np.searchsorted(cum, 0.5 * cum[-1])])
