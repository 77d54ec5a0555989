"""Reprojections of a slab reconstruction computed view by view, without a volume (tilt-axis frame).

Why: in the tilt-axis frame every image row is an independent (x, z) tomography problem, and for a
slab |z| <= D/2 the projection at tilt ``a`` of the back-projection of view ``t`` has a closed form:
with ``f = cos t / cos a`` and ``s = sin(t - a) / cos a``,

    P_a BP_t(g)(u) = (D / cos a) * (g * box_{D |s|})(f u),

i.e. view ``t`` low-passed along x by a box of width ``D |s|`` (its parallax across the slab) and
stretched by ``f``. A weighted back-projection's reprojection is the sum of these over the views
(ramp-weighted along x), so a leave-one-out reference for every tilt costs one 1-D FFT pass and one
resampling per pair of views (a few seconds for 41 tilts at 256 px on 2 cores) instead of a
reconstruction. The slab is centred on z = 0: the reference encodes the specimen's thickness (the
parallax of every layer), which is what pairwise stretching cannot do for thick specimens, where the
stretch locks onto one layer (gold on one surface) and flips between layers across the series.
"""

from __future__ import annotations

import numpy as np


def _spectra(aligned):
    """Ramp-weighted 1-D spectra along x (n, h, w//2+1) of the aligned images."""
    import torch

    w = aligned.shape[-1]
    k = torch.fft.rfftfreq(w, device=aligned.device)
    return torch.fft.rfft(aligned, dim=-1) * k, k


def reference(spec, k, tilts: np.ndarray, target: float, sources, depth: float, weights=None):
    """Reprojection (h, w) at tilt ``target`` of the slab WBP of the views ``sources`` (indices)."""
    import torch

    sources = np.asarray(sources, int)
    n, h, kw = spec.shape
    w = (kw - 1) * 2
    dev = spec.device
    ts = np.deg2rad(np.asarray(tilts, float)[sources])
    a = np.deg2rad(float(target))
    f = np.cos(ts) / np.cos(a)
    s = np.abs(np.sin(ts - a) / np.cos(a))
    wt = np.ones(len(sources)) if weights is None else np.asarray(weights, float)
    box = torch.sinc(k[None, :] * torch.as_tensor(depth * s, dtype=torch.float32, device=dev)[:, None])
    filt = box * torch.as_tensor(wt, dtype=torch.float32, device=dev)[:, None]
    img = torch.fft.irfft(spec[torch.as_tensor(sources, device=dev)] * filt[:, None, :], n=w, dim=-1)
    # stretch: out(u) = img(f u) about the centre column, linear interpolation along x
    u = torch.arange(w, device=dev, dtype=torch.float32) - w // 2
    x = torch.as_tensor(f, dtype=torch.float32, device=dev)[:, None] * u[None, :] + w // 2
    x0 = torch.floor(x)
    fr = (x - x0)[:, None, :]
    i0 = x0.long()
    ok0 = ((i0 >= 0) & (i0 < w)).to(img.dtype)[:, None, :]
    ok1 = ((i0 + 1 >= 0) & (i0 + 1 < w)).to(img.dtype)[:, None, :]
    g0 = torch.gather(img, 2, i0.clamp(0, w - 1)[:, None, :].expand(-1, h, -1))
    g1 = torch.gather(img, 2, (i0 + 1).clamp(0, w - 1)[:, None, :].expand(-1, h, -1))
    out = (g0 * (1 - fr) * ok0 + g1 * fr * ok1).sum(dim=0)
    return out


def angular_weights(tilts: np.ndarray) -> np.ndarray:
    """Each view's share of the angular range (half the gaps to its neighbours), for the WBP sum."""
    t = np.asarray(tilts, float)
    order = np.argsort(t)
    ts = t[order]
    if len(ts) == 1:
        return np.ones(1)
    gaps = np.diff(ts)
    wsorted = np.empty(len(ts))
    wsorted[0] = gaps[0]
    wsorted[-1] = gaps[-1]
    wsorted[1:-1] = 0.5 * (gaps[:-1] + gaps[1:])
    out = np.empty(len(ts))
    out[order] = wsorted
    return out


def loo_references(aligned, tilts: np.ndarray, depth: float, index=None, exclude_deg: float = 0.0):
    """Leave-one-out slab reprojections (m, h, w) for the tilts ``index`` (default: all).

    ``exclude_deg``: also leave out the views within that many degrees of the target (a "far" reference,
    sensitive to smooth shift errors that neighbours share).
    """
    import torch

    tilts = np.asarray(tilts, float)
    n = len(tilts)
    spec, k = _spectra(aligned)
    idx = range(n) if index is None else index
    outs = []
    for i in idx:
        src = np.array([j for j in range(n) if j != i and abs(tilts[j] - tilts[i]) >= exclude_deg])
        outs.append(reference(spec, k, tilts, tilts[i], src, depth, angular_weights(tilts[src])))
    return torch.stack(outs)


def _measure(frame, aligned_i, ref, max_shift: float):
    """Displacement (1, 2) working px and peak height of ``aligned_i`` (1, h, w) vs ``ref`` (1, h, w)."""
    from tiltflow.align import filters, xcorr

    mask = filters.taper_mask(frame.out_shape, 0.12, device=ref.device)
    r = filters.normalise(filters.bandpass(ref, frame.low, frame.high), mask)
    cc = xcorr.xcorr(aligned_i, r) / float(mask.sum())
    return xcorr.find_peaks(cc, max_shift)


def progressive_align(frame, tilts, rot, shifts, depth: float, max_shift: float, log=None) -> np.ndarray:
    """Align tilts outward from the lowest one, each against the slab reprojection of those already done.

    The first reference is the zero tilt's own back-projection (blurred by the slab's parallax), so a
    thick specimen is matched by its mass across the slab rather than by one layer.
    """
    from tiltflow.align import warp

    tilts = np.asarray(tilts, float)
    rot = np.asarray(rot, float)
    shifts = np.asarray(shifts, float).copy()
    order = np.argsort(np.abs(tilts), kind="stable")
    done = [int(order[0])]
    aligned = frame.aligned(rot, shifts)
    spec, k = _spectra(aligned)
    for i in order[1:]:
        i = int(i)
        src = np.array(done)
        ref = reference(spec, k, tilts, tilts[i], src, depth, angular_weights(tilts[src]))[None]
        a_i = frame.aligned(rot[i:i + 1], shifts[i:i + 1], index=[i])
        d, _ = _measure(frame, a_i, ref, max_shift)
        shifts[i] = shifts[i] + warp.to_image_frame(d * frame.out_pixel, rot[i:i + 1])[0]
        a_i = frame.aligned(rot[i:i + 1], shifts[i:i + 1], index=[i])
        spec[i] = _spectra(a_i)[0][0]
        done.append(i)
    return shifts


def match(frame, tilts, rot, shifts, depth: float, max_shift: float = 6.0, exclude_deg: float = 0.0):
    """Every tilt against its leave-one-out slab reprojection: (displacement (n, 2) working px, NCC)."""
    from tiltflow.align import filters, xcorr

    aligned = frame.aligned(rot, shifts)
    ref = loo_references(aligned, tilts, depth, exclude_deg=exclude_deg)
    mask = filters.taper_mask(frame.out_shape, 0.12, device=aligned.device)
    ref = filters.normalise(filters.bandpass(ref, frame.low, frame.high), mask)
    cc = xcorr.xcorr(aligned, ref) / float(mask.sum())
    return xcorr.find_peaks(cc, max_shift)


def refine(frame, tilts, rot, shifts, depth: float, rounds: int = 4, tol: float = 0.05, max_shift: float = 6.0,
           damping: float = 1.0, exclude_deg: float = 0.0, log=None):
    """Projection-matching rounds against slab reprojections; returns (shifts, displacement, score).

    Updates are kept free of the gauge (the x-centring term a*cos(tilt) across the axis and a common
    shift along it), so the reconstruction does not drift; ``tol`` in working pixels (RMS update).
    """
    from tiltflow.align import projmatch, warp

    shifts = np.asarray(shifts, float).copy()
    d, score = match(frame, tilts, rot, shifts, depth, max_shift, exclude_deg)
    for r in range(rounds):
        u = projmatch.remove_drift(d, tilts) * damping
        shifts = shifts + warp.to_image_frame(u * frame.out_pixel, rot)
        step = float(np.sqrt(np.mean(np.sum(u**2, axis=1))))
        d, score = match(frame, tilts, rot, shifts, depth, max_shift, exclude_deg)
        if log is not None:
            log.info("projection matching round %d (%d px): update %.3f px (working), mean score %.3f", r + 1,
                     frame.out_shape[1], step, float(np.mean(score)))
        if step < tol:
            break
    return shifts, d, score
