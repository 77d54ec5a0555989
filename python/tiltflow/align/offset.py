"""Tilt-angle offset (specimen pretilt) from the cosine stretch between neighbouring tilts.

Why: the projections are equally consistent for every offset (an offset only rotates the tomogram
about the tilt axis), so the offset must come from the specimen itself, as in AreTomo's TiltCor: a
thin specimen tilted by ``a`` at stage tilt t is foreshortened by cos(t + a), so the stretch that
best maps tilt i onto its neighbour j is cos(t_j + a) / cos(t_i + a). The offset maximising the
pairwise stretched correlation (summed over pairs, parabola through a few candidates) is the one that
makes the specimen flat in the tomogram. Honest limits: it assumes a slab-like specimen; with thick
or sparse specimens the curve is flat and the estimate is only logged, not trusted (``confident``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tiltflow.align import xcorr


@dataclass
class OffsetSearch:
    """The offset scan: offsets tried, their stretched correlation, the best one, and whether the curve can be trusted."""

    offsets: list[float]
    scores: list[float]
    best: float
    confident: bool


def stretch_score(frame: xcorr.Frame, tilts, rot, shifts, offset: float, reach: int = 2) -> float:
    """Mean peak correlation of stretched neighbour pairs with the stretch computed at ``offset``."""
    import torch

    t = np.asarray(tilts, float)
    pairs = xcorr.neighbour_pairs(t, reach)
    ii = np.array([p[0] for p in pairs])
    jj = np.array([p[1] for p in pairs])
    cos = np.cos(np.deg2rad(t + offset))
    f = cos[jj] / cos[ii]
    ref = frame.aligned(rot, shifts)
    st = frame.aligned(rot[ii], shifts[ii], stretch=f, index=torch.as_tensor(ii, device=ref.device))
    cc = xcorr.xcorr(st, ref[torch.as_tensor(jj, device=ref.device)]) / float(np.prod(frame.out_shape))
    _, h = xcorr.find_peaks(cc, 3.0)
    hi = np.abs(t[ii]) >= 20  # low tilts hardly depend on the offset
    return float(np.mean(h[hi] if hi.any() else h))


def estimate_offset(frame: xcorr.Frame, tilts, rot, shifts, span: float = 10.0, log=None) -> OffsetSearch:
    """Search offsets in [-span, span] (coarse grid then parabola); return the best one."""
    offsets = list(np.linspace(-span, span, 5))
    scores = [stretch_score(frame, tilts, rot, shifts, o) for o in offsets]
    k = int(np.argmax(scores))
    step = offsets[1] - offsets[0]
    centre = offsets[k]
    for o in (centre - step / 2, centre + step / 2):
        offsets.append(o)
        scores.append(stretch_score(frame, tilts, rot, shifts, o))
    a, s = np.array(offsets), np.array(scores)
    near = np.argsort(np.abs(a - centre))[:3]
    c2, c1, _ = np.polyfit(a[near] - centre, s[near], 2)
    best = float(centre + np.clip(-c1 / (2 * c2), -step / 2, step / 2)) if c2 < 0 else float(centre)
    drop = float(-c2 * (step / 2) ** 2)  # how much the score falls half a grid step from the peak
    confident = bool(c2 < 0 and abs(best) < span and drop > 0.002)
    if log is not None:
        log.info("tilt-angle offset search: %s -> %.2f deg (%s)",
                 ", ".join(f"{o:+.1f}:{v:.4f}" for o, v in sorted(zip(offsets, scores, strict=True))), best,
                 "used" if confident else "flat curve, not used")
    return OffsetSearch([float(x) for x in offsets], [float(x) for x in scores], best, confident)
