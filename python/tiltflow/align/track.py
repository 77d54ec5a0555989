"""Feature picking and tracking through a tilt series, for the 3-D point model (``points``).

Features are the strongest local extrema of the bandpassed zero tilt (gold beads: dark, high-contrast
blobs; on featureless data few pass the threshold and the caller falls back). Boxes are sampled
straight from the binned stack at the *predicted* position in the tilt-axis frame of the current
alignment (sub-pixel, one bilinear resampling), so the measured peak is a small correction to the
prediction. Two modes:

- :func:`track_progressive`: outward from the zero tilt, each box against the mean of the feature's
  last tracked boxes; the prediction uses the feature's (x, z) fitted to its track so far (depth makes
  features drift across the axis as sin t);
- :func:`track_model`: every box at the model's prediction against the leave-one-out mean of the
  feature's boxes in neighbouring tilts (stretched by the cosine ratio), for the final observations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tiltflow.align import filters, warp, xcorr


@dataclass
class Level:
    """The binned, bandpassed stack the boxes are sampled from, and how it maps to stack pixels."""

    images: object  # (n, hb, wb) torch
    scale: tuple[float, float]  # stack px per binned px (y, x)
    centre_xy: tuple[float, float]  # RELION image centre, stack px
    size_xy: tuple[float, float]  # stack width, height (px)
    pix: float  # stack px per box px
    box: int  # box size in box px


def level_factor(shape: tuple[int, int], max_size: int = 512) -> float:
    """The binning of the tracking level: the stack binned to at most ``max_size`` px."""
    return max(1.0, max(shape) / float(max_size))


def make_level(images, centre_xy, max_size: int = 512, box: int = 40, low: float | None = None,
               high: float = 0.22) -> Level:
    """Bin ``images`` (n, h, w torch) to at most ``max_size`` px and bandpass them for tracking."""
    n, h, w = images.shape
    b = filters.fourier_bin(images, level_factor((h, w), max_size))
    return binned_level(b, (h, w), centre_xy, box, low, high)


def binned_level(b, shape: tuple[int, int], centre_xy, box: int = 40, low: float | None = None,
                 high: float = 0.22) -> Level:
    """The tracking level from the already binned images ``b`` (n, hb, wb torch) of a ``shape`` stack."""
    h, w = shape
    scale = filters.bin_scale((h, w), tuple(b.shape[-2:]))
    pix = float(np.mean(scale))
    box = int(min(box, max(8, (min(b.shape[-2:]) // 5) // 2 * 2)))
    low = 1.0 / box if low is None else low
    b = filters.normalise(filters.bandpass(b - b.mean(dim=(-2, -1), keepdim=True), low, high))
    return Level(b, scale, centre_xy, (float(w), float(h)), pix, box)


def sample_boxes(lv: Level, rot, shifts, tilt_idx, q, stretch=None):
    """Boxes (K, box, box) of tilts ``tilt_idx`` (K,) centred at working-frame positions ``q`` (K, 2).

    Same sampling as :func:`warp.sample_aligned` with the box centre added to the shift (the stretch
    acts about the box centre), but every box of one tilt is drawn from that image in one call
    instead of copying the image per box.
    """
    import torch

    tilt_idx = np.asarray(tilt_idx, int)
    q = np.asarray(q, float).reshape(-1, 2)
    k = len(tilt_idx)
    b = lv.box
    dev = lv.images.device
    out = torch.zeros((k, b, b), device=dev, dtype=lv.images.dtype)
    if k == 0:
        return out
    st = np.ones(k) if stretch is None else np.broadcast_to(np.asarray(stretch, float), (k,))
    off = (np.arange(b) - b // 2) * lv.pix
    ly = np.broadcast_to(off[None, :, None], (k, b, b))
    lx = off[None, None, :] / st[:, None, None]
    hb, wb = lv.images.shape[-2:]
    for i in np.unique(tilt_idx):
        sel = np.flatnonzero(tilt_idx == i)
        a = np.deg2rad(float(np.asarray(rot, float)[i]))
        c, s = np.cos(a), np.sin(a)
        x = q[sel, 0, None, None] + lx[sel]
        y = q[sel, 1, None, None] + ly[sel]
        sh = np.asarray(shifts, float)[i]
        px = c * x - s * y + lv.centre_xy[0] + sh[0]
        py = s * x + c * y + lv.centre_xy[1] + sh[1]
        gx = px / lv.scale[1] / (wb - 1) * 2 - 1
        gy = py / lv.scale[0] / (hb - 1) * 2 - 1
        grid = torch.as_tensor(np.stack([gx, gy], axis=-1).reshape(1, len(sel) * b, b, 2), dtype=lv.images.dtype,
                               device=dev)
        smp = torch.nn.functional.grid_sample(lv.images[int(i)][None, None], grid, mode="bilinear",
                                              padding_mode="zeros", align_corners=True)
        out[torch.as_tensor(sel, device=dev)] = smp[0, 0].reshape(len(sel), b, b)
    return out


def in_view(lv: Level, rot, shifts, tilt_idx, q) -> np.ndarray:
    """Whether a box centred at ``q`` lies inside the image (K,) bool."""
    tilt_idx = np.asarray(tilt_idx, int)
    r = np.asarray(rot, float)[tilt_idx]
    p = warp.to_image_frame(np.asarray(q, float).reshape(-1, 2), r) + np.asarray(shifts, float)[tilt_idx]
    p = p + np.asarray(lv.centre_xy)
    m = 0.75 * lv.box * lv.pix
    w, h = lv.size_xy
    return (p[:, 0] > m) & (p[:, 0] < w - m) & (p[:, 1] > m) & (p[:, 1] < h - m) & np.all(np.isfinite(q), axis=1)


def _window(lv: Level):
    return filters.taper_mask((lv.box, lv.box), 0.3, device=lv.images.device)


def measure(lv: Level, boxes, refs, max_shift: float) -> tuple[np.ndarray, np.ndarray]:
    """Displacement (K, 2) in stack px of ``boxes`` vs ``refs`` and the normalised peak heights."""
    if len(boxes) == 0:
        return np.zeros((0, 2)), np.zeros(0)
    win = _window(lv)
    a = filters.normalise(boxes, win)
    b = filters.normalise(refs, win)
    cc = xcorr.xcorr(a, b) / float(win.sum())
    d, hgt = xcorr.find_peaks(cc, max_shift)
    return d * lv.pix, hgt


def pick(lv: Level, rot, shifts, zero: int, n_max: int = 60, min_snr: float = 3.0) -> np.ndarray:
    """Working-frame positions (m, 2) of the strongest local extrema of the zero tilt, well separated."""
    import torch

    w, h = lv.size_xy
    shape = (int(h / lv.pix) // 2 * 2, int(w / lv.pix) // 2 * 2)
    img = warp.sample_aligned(lv.images[zero:zero + 1], lv.scale, lv.centre_xy, np.asarray(rot, float)[zero:zero + 1],
                              np.asarray(shifts, float)[zero:zero + 1], shape, lv.pix)[0]
    # blob detector: smooth a little (the bandpass leaves ringing), then |value| against a robust noise level
    k = max(1, lv.box // 16)
    sm = torch.nn.functional.avg_pool2d(img[None, None], 2 * k + 1, stride=1, padding=k, count_include_pad=False)[0, 0]
    v = sm.abs()
    sep = lv.box // 2 + 1 - (lv.box // 2 + 1) % 2 + 1
    peak = torch.nn.functional.max_pool2d(v[None, None], sep, stride=1, padding=sep // 2)[0, 0]
    is_max = (v == peak)
    marg = int(0.75 * lv.box)
    is_max[:marg] = False
    is_max[-marg:] = False
    is_max[:, :marg] = False
    is_max[:, -marg:] = False
    vv = v.detach().cpu().numpy()
    noise = 1.4826 * float(np.median(np.abs(sm.detach().cpu().numpy() - np.median(sm.detach().cpu().numpy()))))
    ys, xs = np.nonzero(is_max.cpu().numpy())
    val = vv[ys, xs]
    keep = val > min_snr * max(noise, 1e-12)
    ys, xs, val = ys[keep], xs[keep], val[keep]
    order = np.argsort(-val)[:n_max]
    q = np.column_stack([(xs[order] - shape[1] // 2) * lv.pix, (ys[order] - shape[0] // 2) * lv.pix]).astype(float)
    return q


def _fit_xz(tilts, qx):
    """Per feature (x, z) from its across-axis track: qx_i = cos t_i x + sin t_i z (z = 0 if unresolved)."""
    ok = np.isfinite(qx)
    th = np.deg2rad(tilts[ok])
    if ok.sum() >= 2 and np.ptp(th) > np.deg2rad(4.0):
        a = np.column_stack([np.cos(th), np.sin(th)])
        return np.linalg.lstsq(a, qx[ok], rcond=None)[0]
    return np.array([np.mean(qx[ok] / np.cos(th)), 0.0]) if ok.any() else np.array([np.nan, 0.0])


def track_progressive(lv: Level, tilts, rot, shifts, q0, max_shift_px: float, min_height: float = 0.2,
                      memory: int = 3) -> np.ndarray:
    """Observations (n, m, 2) of features ``q0`` (picked on the zero tilt) tracked outward from it."""
    import torch

    tilts = np.asarray(tilts, float)
    n, m = len(tilts), len(q0)
    zero = int(np.argmin(np.abs(tilts)))
    obs = np.full((n, m, 2), np.nan)
    obs[zero] = q0
    ms = max_shift_px / lv.pix
    box0 = sample_boxes(lv, rot, shifts, np.full(m, zero), q0)
    for direction in (1, -1):
        hist = [box0]  # recent boxes per feature (list of (m, box, box), nan-free: zeros when lost)
        cnt = [torch.ones(m, device=box0.device)]
        order = np.argsort(tilts, kind="stable")
        side = tilts[order] > tilts[zero] if direction > 0 else tilts[order] < tilts[zero]
        seq = [int(i) for i in (order[side] if direction > 0 else order[side][::-1])]
        for i in seq:
            xz = np.array([_fit_xz(tilts, obs[:, k, 0]) for k in range(m)])
            yk = np.nanmean(obs[:, :, 1], axis=0)
            th = np.deg2rad(tilts[i])
            pred = np.column_stack([np.cos(th) * xz[:, 0] + np.sin(th) * xz[:, 1], yk])
            vis = in_view(lv, rot, shifts, np.full(m, i), pred)
            if not vis.any():
                continue
            idx = np.flatnonzero(vis)
            boxes = sample_boxes(lv, rot, shifts, np.full(len(idx), i), pred[idx])
            ref = sum(h[idx] for h in hist[-memory:]) / torch.clamp(sum(c[idx] for c in cnt[-memory:]), min=1)[:, None, None]
            d, hgt = measure(lv, boxes, ref, ms)
            good = hgt > min_height
            meas = pred[idx] + d
            obs[i, idx[good]] = meas[good]
            nb = torch.zeros_like(box0)
            nc = torch.zeros(m, device=box0.device)
            gi = idx[good]
            if len(gi):
                nb[torch.as_tensor(gi, device=nb.device)] = sample_boxes(lv, rot, shifts, np.full(len(gi), i), meas[good])
                nc[torch.as_tensor(gi, device=nb.device)] = 1.0
            hist.append(nb)
            cnt.append(nc)
    return obs


def track_model(lv: Level, tilts, rot, shifts, pred, max_shift_px: float, min_height: float = 0.2) -> np.ndarray:
    """Observations (n, m, 2): boxes at ``pred`` (n, m, 2) against each feature's leave-one-out mean box.

    The template of a feature is the mean of its boxes in *all* other tilts (unstretched: a gold bead
    looks the same at every tilt, and a compressed or blurred average stays centred on the feature).
    Why not neighbouring tilts: they share any smooth error of the prediction, so matching against
    them cannot see it (the leave-one-out projection matching's blind spot) and rounds drift.
    """
    import torch

    tilts = np.asarray(tilts, float)
    n, m, _ = pred.shape
    obs = np.full((n, m, 2), np.nan)
    vis = np.stack([in_view(lv, rot, shifts, np.full(m, i), pred[i]) for i in range(n)])
    ii, kk = np.nonzero(vis)
    if len(ii) == 0:
        return obs
    boxes = sample_boxes(lv, rot, shifts, ii, pred[ii, kk])
    win = _window(lv)
    boxes = filters.normalise(boxes, win)
    dev = boxes.device
    total = torch.zeros((m, lv.box, lv.box), device=dev, dtype=boxes.dtype)
    total.index_add_(0, torch.as_tensor(kk, device=dev), boxes)
    cnt = np.bincount(kk, minlength=m)
    ok = cnt[kk] >= 3
    sel = torch.as_tensor(np.flatnonzero(ok), device=dev)
    if len(sel) == 0:
        return obs
    kt = torch.as_tensor(kk[ok], device=dev)
    ref = (total[kt] - boxes[sel]) / torch.as_tensor(cnt[kk[ok]] - 1, device=dev, dtype=boxes.dtype)[:, None, None]
    d, hgt = measure(lv, boxes[sel], ref, max_shift_px / lv.pix)
    i2, k2 = ii[ok], kk[ok]
    good = hgt > min_height
    obs[i2[good], k2[good]] = pred[i2[good], k2[good]] + d[good]
    return obs
