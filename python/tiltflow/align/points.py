"""3-D point-model refinement (as IMOD's tiltalign with fiducials or patch tracks).

Why: leave-one-out projection matching cannot see a *smooth* shift error across the tilt axis, since
neighbouring tilts share it and every reference is built from them. Tracked features pin it: each
feature is one 3-D point whose projections must follow ``Rz(axis) Ry(t) X + s`` in every tilt; its
depth z absorbs the parallax, the per-tilt shifts s take up what is common to all features, and one
global axis angle the residual rotation.

Coordinates here are in the *working tilt-axis frame* of an existing alignment (rot0, shifts0): an
observation ``q`` (stack pixels, relative to the image centre) of tilt i is the point sampled by
``p = Rz(rot0) q + shifts0_i + c_img``. With the true model ``p = Rz(rot0 + d) Ry(t_i) X + s_i + c``,

    q = Rz(d) [cos t_i x + sin t_i z, y] + e_i,      e_i = Rz(-rot0) (s_i - shifts0_i),

which for a fixed axis correction ``d`` is linear in (x, y, z) per point and e_i per tilt (after
rotating the observations by -d the x and y rows separate). ``d`` is found by a 1-D search. The gauge
(a rigid translation of all points) is fixed by keeping e_i free of the ``cos t``, ``sin t`` terms
across the axis and of the mean along it: the height and centring of the input alignment are kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class PointFit:
    """Solution of the point model (all in stack pixels, working tilt-axis frame)."""

    xyz: np.ndarray  # (m, 3) per-point position (rows of dropped points are nan)
    e: np.ndarray  # (n, 2) per-tilt shift corrections in the working frame (see module doc)
    d_axis: float  # axis-angle correction, degrees
    residual: np.ndarray  # (n, m) residual length per observation (nan where unused)
    used: np.ndarray  # (n, m) bool: observations kept
    tilt_residual: np.ndarray  # (n,) RMS residual per tilt over its kept observations (nan if none)
    rms: float  # RMS residual over all kept observations

    @property
    def n_points(self) -> int:
        """Points observed in at least one tilt (dropped points do not count)."""
        return int(np.sum(self.used.any(axis=0)))


def _rot2(deg: float) -> np.ndarray:
    a = np.deg2rad(deg)
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s], [s, c]])


def _solve_fixed(obs: np.ndarray, used: np.ndarray, tilts: np.ndarray, d_axis: float, weights=None):
    """Least-squares points and corrections at a fixed axis correction; returns (xyz, e, residual (n, m)).

    The points are eliminated (Schur complement): per point a 2x2 (x, z) or 1x1 (y) system, leaving
    an n x n system for the per-tilt corrections, whose gauge null space is pinned by adding the
    outer products of its basis (cos t, sin t across the axis; ones along it).
    """
    n, m, _ = obs.shape
    th = np.deg2rad(tilts)
    c, s = np.cos(th), np.sin(th)
    u = np.einsum("ij,nmj->nmi", _rot2(-d_axis), np.nan_to_num(obs))  # observations in the rotated frame
    w = used.astype(float) if weights is None else used * np.asarray(weights, float)[None, :]
    cnt_t = w.sum(axis=1)
    cnt_p = w.sum(axis=0)
    # across the axis: u_x = c_i x_k + s_i z_k + ex_i
    g = np.column_stack([c, s])  # (n, 2)
    a = np.einsum("nm,ni,nj->mij", w, g, g) + 1e-9 * np.eye(2)[None]  # (m, 2, 2)
    ainv = np.linalg.inv(a)
    bk = w.T[:, None, :] * g.T[None]  # (m, 2, n)
    rk = np.einsum("nm,ni,nm->mi", w, g, u[..., 0])  # (m, 2)
    re = np.sum(w * u[..., 0], axis=1)  # (n,)
    bta = np.einsum("min,mij->mnj", bk, ainv)  # (m, n, 2)
    mat = np.diag(cnt_t) - np.einsum("mnj,mjl->nl", bta, bk)
    lam = max(1.0, float(cnt_t.max()))
    mat += lam * (np.outer(c, c) + np.outer(s, s)) / n + 1e-9 * np.eye(n)
    rhs = re - np.einsum("mnj,mj->n", bta, rk)
    ex = np.linalg.solve(mat, rhs)
    pxz = np.einsum("mij,mj->mi", ainv, rk - np.einsum("min,n->mi", bk, ex))
    # along the axis: u_y = y_k + ey_i
    inv_p = 1.0 / np.maximum(cnt_p, 1e-9)
    mat = np.diag(cnt_t) - (w * inv_p[None, :]) @ w.T
    mat += lam * np.ones((n, n)) / n + 1e-9 * np.eye(n)
    sy = np.sum(w * u[..., 1], axis=0)  # (m,)
    rhs = np.sum(w * u[..., 1], axis=1) - w @ (sy * inv_p)
    ey = np.linalg.solve(mat, rhs)
    y = (sy - w.T @ ey) * inv_p
    xyz = np.column_stack([pxz[:, 0], y, pxz[:, 1]])
    e_rot = np.column_stack([ex, ey])
    pred = np.stack([c[:, None] * xyz[None, :, 0] + s[:, None] * xyz[None, :, 2] + e_rot[:, None, 0],
                     np.broadcast_to(xyz[None, :, 1] + e_rot[:, None, 1], (n, m))], axis=-1)
    res = np.linalg.norm(u - pred, axis=-1)
    res[~used] = np.nan
    e = e_rot @ _rot2(d_axis).T  # e_i = Rz(d) e_rot_i
    return xyz, e, res


def _sse(obs, used, tilts, d, weights=None):
    _, _, res = _solve_fixed(obs, used, tilts, d, weights)
    wt = np.ones(obs.shape[1]) if weights is None else np.asarray(weights, float)
    return float(np.nansum(res**2 * wt[None, :]))


def _search_axis(obs, used, tilts, start: float, span: float, weights=None) -> float:
    """Axis correction minimising the residual: a grid, then golden-section search around its best."""
    grid = np.linspace(start - span, start + span, 13)
    vals = [_sse(obs, used, tilts, d, weights) for d in grid]
    k = int(np.argmin(vals))
    lo, hi = grid[max(k - 1, 0)], grid[min(k + 1, len(grid) - 1)]
    g = (np.sqrt(5) - 1) / 2
    x1, x2 = hi - g * (hi - lo), lo + g * (hi - lo)
    f1, f2 = _sse(obs, used, tilts, x1, weights), _sse(obs, used, tilts, x2, weights)
    for _ in range(25):
        if f1 < f2:
            hi, x2, f2 = x2, x1, f1
            x1 = hi - g * (hi - lo)
            f1 = _sse(obs, used, tilts, x1, weights)
        else:
            lo, x1, f1 = x1, x2, f2
            x2 = lo + g * (hi - lo)
            f2 = _sse(obs, used, tilts, x2, weights)
        if hi - lo < 1e-3:
            break
    return float(0.5 * (lo + hi))


def fit(obs: np.ndarray, tilts, fit_axis: bool = True, axis_span: float = 3.0, min_obs: int | None = None,
        reject: float = 4.0, floor_px: float = 1.0, rounds: int = 4, used: np.ndarray | None = None,
        weighted: bool = True) -> PointFit:
    """Fit the point model to observations ``obs`` (n tilts, m points, 2; nan where missing).

    Robust: after each solve, observations further than ``reject`` robust sigmas (at least
    ``floor_px``) from the model are dropped, then points whose RMS residual is over ``reject``/1.5 times
    the median point's, and points left with fewer than ``min_obs`` observations (default: a third of
    the tilts, at least 4). ``weighted``: points are weighted by the inverse of their mean squared
    residual (plus (floor_px/4)^2), so sharp features (gold) count more than extended or 3-D ones, whose
    apparent centre moves with the tilt.
    """
    obs = np.asarray(obs, float)
    tilts = np.asarray(tilts, float)
    n, m, _ = obs.shape
    ok = np.all(np.isfinite(obs), axis=-1)
    used = ok.copy() if used is None else (np.asarray(used, bool) & ok)
    min_obs = max(4, n // 3) if min_obs is None else int(min_obs)
    d = 0.0
    wts = np.ones(m)
    for rnd in range(rounds + 1):
        used &= (used.sum(axis=0) >= min_obs)[None, :]
        if used.sum() == 0:
            break
        if fit_axis:
            d = _search_axis(obs, used, tilts, d, axis_span if rnd == 0 else max(0.5, axis_span / 4), wts)
        xyz, e, res = _solve_fixed(obs, used, tilts, d, wts)
        if rnd == rounds:
            break
        r = res[used]
        sigma = 1.4826 * float(np.median(r)) / 1.1774  # median of a 2-D Gaussian's radius = 1.1774 sigma
        cut = max(reject * sigma, floor_px)
        new = used & (np.nan_to_num(res, nan=np.inf) <= cut)
        with np.errstate(invalid="ignore"):
            cnt = new.sum(axis=0)
            prms = np.where(cnt > 0, np.sqrt(np.sum(np.where(new, res, 0.0) ** 2, axis=0) / np.maximum(cnt, 1)), np.nan)
        good = np.isfinite(prms)
        if good.sum() > 2:
            med = float(np.median(prms[good]))
            new &= (np.nan_to_num(prms, nan=np.inf) <= max(reject / 1.5 * med, floor_px))[None, :]
        if weighted:
            wts = 1.0 / (np.nan_to_num(prms, nan=np.inf) ** 2 + (0.25 * floor_px) ** 2)
            wts = wts / max(float(wts.max()), 1e-30)
        if np.array_equal(new, used) and (not weighted or rnd > 0):
            break
        used = new
    used &= (used.sum(axis=0) >= min_obs)[None, :]
    if used.sum() == 0:
        nan = np.full(n, np.nan)
        return PointFit(np.full((m, 3), np.nan), np.zeros((n, 2)), 0.0, np.full((n, m), np.nan), used, nan,
                        float("nan"))
    xyz, e, res = _solve_fixed(obs, used, tilts, d, wts)
    res = np.where(used, res, np.nan)
    xyz[~used.any(axis=0)] = np.nan
    with np.errstate(invalid="ignore"):
        cnt = used.sum(axis=1)
        tr = np.where(cnt > 0, np.sqrt(np.nansum(res**2, axis=1) / np.maximum(cnt, 1)), np.nan)
    return PointFit(xyz, e, float(d), res, used, tr, float(np.sqrt(np.nanmean(res**2))))


def project(xyz: np.ndarray, tilts, d_axis: float = 0.0, e: np.ndarray | None = None) -> np.ndarray:
    """Model positions (n, m, 2) in the working frame of points ``xyz`` (m, 3)."""
    th = np.deg2rad(np.asarray(tilts, float))
    c, s = np.cos(th), np.sin(th)
    q = np.stack([c[:, None] * xyz[None, :, 0] + s[:, None] * xyz[None, :, 2],
                  np.broadcast_to(xyz[None, :, 1], (len(th), len(xyz)))], axis=-1)
    q = np.einsum("ij,nmj->nmi", _rot2(d_axis), q)
    if e is not None:
        q = q + np.asarray(e, float)[:, None, :]
    return q


@dataclass
class PointRefinement:
    """Result of :func:`refine`: the new geometry and the last fit (in the frame of the geometry before it)."""

    rot: np.ndarray  # (n,) tilt-axis angles
    shifts: np.ndarray  # (n, 2) RELION shifts, stack px
    fit: PointFit
    n_picked: int


def refine(lv, tilts, rot, shifts, fit_axis: bool = True, axis_span: float = 3.0,
           min_points: int = 8, rounds: int = 2, n_max: int = 60, prior: PointFit | None = None,
           log=None) -> PointRefinement | None:
    """Pick, track and fit features; returns the refined geometry, or None (logged) when too few track.

    ``lv`` the kept tilts' tracking level (``track.make_level``); ``rot``, ``shifts`` the current alignment
    (prediction).
    Without ``prior``: features picked on the zero tilt, tracked outward from it, fitted; then ``rounds``
    times re-measured at the model's prediction against neighbour templates and fitted again. With
    ``prior`` (a fit whose points are still valid for this alignment): only the re-measuring rounds.
    """
    from tiltflow.align import track, warp

    tilts = np.asarray(tilts, float)
    rot = np.asarray(rot, float).copy()
    shifts = np.asarray(shifts, float).copy()
    zero = int(np.argmin(np.abs(tilts)))
    f = prior
    if prior is None:
        q0 = track.pick(lv, rot, shifts, zero, n_max=n_max)
        n_picked = len(q0)
        if n_picked < min_points:
            if log is not None:
                log.info("point model skipped: only %d distinct features on the zero tilt (need %d)", n_picked,
                         min_points)
            return None
        obs = track.track_progressive(lv, tilts, rot, shifts, q0, max_shift_px=0.2 * lv.box * lv.pix)
    else:
        n_picked = prior.used.shape[1]
    for r in range(rounds + 1):
        if r > 0 or prior is not None:
            if r == rounds and prior is not None:
                break
            pred = project(np.nan_to_num(f.xyz, nan=1e9), tilts)
            pred[:, ~f.used.any(axis=0)] = np.nan
            obs = track.track_model(lv, tilts, rot, shifts, pred, max_shift_px=0.1 * lv.box * lv.pix)
        f = fit(obs, tilts, fit_axis=fit_axis, axis_span=axis_span if (r == 0 and prior is None) else 1.0,
                floor_px=max(1.0, 0.5 * lv.pix))
        if f.n_points < min_points:
            if log is not None:
                log.info("point model skipped: %d of %d features tracked consistently (need %d)", f.n_points,
                         n_picked, min_points)
            return None
        shifts = shifts + warp.to_image_frame(f.e, rot)
        rot = rot + f.d_axis
        if log is not None:
            log.info("point model round %d: %d features, %d observations, axis %+.2f deg, RMS residual %.2f px, "
                     "RMS shift change %.2f px", r + 1, f.n_points, int(f.used.sum()), f.d_axis, f.rms,
                     float(np.sqrt(np.mean(np.sum(f.e**2, axis=1)))))
    return PointRefinement(rot, shifts, f, n_picked)
