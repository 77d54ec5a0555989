"""Tilt-axis angle refinement from the geometry of projection-matching residuals.

Why not the matching score: the mean correlation of tilts with their leave-one-out reprojections is
nearly flat in the axis angle (0.1 % over +-3 deg on a 128-px series) and its maximum is biased. The
*geometry* of the residual is specific: with an axis error d, every tilt is distorted against the
consensus of the others by a position-dependent displacement (along the axis, proportional to the
distance from it, with a tilt-dependent factor that changes sign between low and high tilts). So,
per tilt, patch displacements against the reprojection are fitted by an affine map, and the energy
of the linear parts, E(axis) = sum_i ||L_i||^2, is minimised over the axis angle by a parabola
through a few candidates (then once more around the minimum).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tiltflow.align import filters, projmatch, xcorr


@dataclass
class AxisSearch:
    """Candidates tried, their residual energies, and the chosen angle."""

    angles: list[float]
    energies: list[float]
    best: float


def patch_displacements(aligned, ref, grid: int = 4, max_shift: float = 4.0):
    """Per tilt and patch, the displacement (n, p, 2) of ``aligned`` vs ``ref``; patch centres (p, 2) x, y."""
    import torch

    n, h, w = aligned.shape
    ph, pw = h // (grid // 2 + 1) // 2 * 2, w // (grid // 2 + 1) // 2 * 2  # 50 % overlap
    ys = np.linspace(h * 0.1, h * 0.9 - ph, grid).astype(int)
    xs = np.linspace(w * 0.1, w * 0.9 - pw, grid).astype(int)
    win = filters.taper_mask((ph, pw), 0.25, device=aligned.device)
    disp, centres = [], []
    for y0 in ys:
        for x0 in xs:
            a = filters.normalise(aligned[:, y0: y0 + ph, x0: x0 + pw], win)
            b = filters.normalise(ref[:, y0: y0 + ph, x0: x0 + pw], win)
            cc = xcorr.xcorr(a, b) / float(win.sum())
            d, _ = xcorr.find_peaks(cc, max_shift)
            disp.append(d)
            centres.append((x0 + pw / 2 - w // 2, y0 + ph / 2 - h // 2))
    del torch
    return np.stack(disp, axis=1), np.asarray(centres, float)


def distortion_energy(disp: np.ndarray, centres: np.ndarray) -> float:
    """Sum over tilts of the squared linear part of an affine fit of displacement vs patch position."""
    design = np.column_stack([np.ones(len(centres)), centres / np.abs(centres).max()])
    total = 0.0
    for i in range(disp.shape[0]):
        coef, *_ = np.linalg.lstsq(design, disp[i], rcond=None)
        total += float(np.sum(coef[1:] ** 2))
    return total / disp.shape[0]


def energy(frame: xcorr.Frame, tilts, rot: float, shifts, depth: int, grid: int = 4) -> float:
    """E(axis) at one candidate angle (all tilts share it)."""
    n = len(tilts)
    r = np.full(n, float(rot))
    aligned = frame.aligned(r, shifts)
    reproj = projmatch.loo_reprojections(aligned, tilts, depth, cutoff=min(0.5, frame.high * 1.5))
    mask = filters.taper_mask(frame.out_shape, 0.12, device=aligned.device)
    ref = filters.normalise(filters.bandpass(reproj, frame.low, frame.high), mask)
    disp, centres = patch_displacements(aligned, ref, grid)
    return distortion_energy(disp, centres)


def refine_axis(
    frame: xcorr.Frame, tilts, start: float, shifts, depth: int, span: float = 3.0, log=None,
) -> AxisSearch:
    """Minimise E over the axis angle: candidates start +-span, then +-span/3 around the parabola's minimum."""
    angles: list[float] = []
    energies: list[float] = []

    def ev(a: float) -> float:
        e = energy(frame, tilts, a, shifts, depth)
        angles.append(a)
        energies.append(e)
        if log is not None:
            log.info("tilt axis %.2f deg: distortion energy %.5f", a, e)
        return e

    centre = float(start)
    for width in (span, span / 3):
        for a in (centre - width, centre, centre + width):
            if not any(abs(a - b) < 1e-6 for b in angles):
                ev(a)
        centre = _parabola_min(np.array(angles), np.array(energies), centre, width)
    # the answer: vertex of a least-squares parabola through the points within 1.5 span/3 of it
    a, e = np.array(angles), np.array(energies)
    near = np.abs(a - centre) <= span / 2 + 1e-6
    best = centre
    if near.sum() >= 3:
        c2, c1, _ = np.polyfit(a[near] - centre, e[near], 2)
        if c2 > 0:
            best = float(centre + np.clip(-c1 / (2 * c2), -span / 3, span / 3))
    return AxisSearch(angles, energies, float(best))


def _parabola_min(a: np.ndarray, e: np.ndarray, centre: float, width: float) -> float:
    """Vertex of a parabola fitted to the points nearest ``centre``; clamped to +-1.5 width."""
    near = np.argsort(np.abs(a - centre))[: max(3, min(5, len(a)))]
    x, y = a[near], e[near]
    c2, c1, _ = np.polyfit(x - centre, y, 2)
    if c2 <= 0:
        return float(x[np.argmin(y)])
    return float(centre + np.clip(-c1 / (2 * c2), -1.5 * width, 1.5 * width))


def refine_axis_by_score(frame: xcorr.Frame, tilts, start: float, shifts, depth: float, span: float = 3.0,
                         step: float = 1.0, rounds: int = 3, log=None) -> tuple[AxisSearch, np.ndarray]:
    """Axis angle maximising the mean leave-one-out slab matching score, shifts re-refined at each angle.

    Candidates ``start - span .. start + span`` every ``step`` degrees; the answer is the vertex of a
    parabola through the best candidate and its neighbours (kept within one step of it). Returns the
    search and the shifts refined at the best candidate.
    """
    from tiltflow.align import slab

    n = len(tilts)
    cands = np.arange(-span, span + 1e-9, step) + float(start)
    scores, shifts_at = [], []
    for a in cands:
        r = np.full(n, float(a))
        sh, _, sc = slab.refine(frame, tilts, r, shifts, depth, rounds=rounds, max_shift=6.0)
        _, sc = slab.match(frame, tilts, r, sh, depth, 6.0)
        scores.append(float(np.mean(sc)))
        shifts_at.append(sh)
        if log is not None:
            log.info("tilt axis %.2f deg: mean matching score %.4f", a, scores[-1])
    s = np.array(scores)
    k = int(np.argmax(s))
    best = float(cands[k])
    if 0 < k < len(cands) - 1:
        c2, c1, _ = np.polyfit(cands[k - 1:k + 2] - cands[k], s[k - 1:k + 2], 2)
        if c2 < 0:
            best = float(cands[k] + np.clip(-c1 / (2 * c2), -step, step))
    return AxisSearch([float(c) for c in cands], [-v for v in scores], best), shifts_at[k]
