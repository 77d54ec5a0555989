"""Whole-frame (and per-patch) shift estimation by iterative cross-correlation against the other frames.

The scheme is MotionCor2's and RELION's: each frame is correlated with the sum of all *other* frames (so
its own noise cannot correlate with itself), weighted by ``exp(-B f^2 / 2)`` (B in pixel^2, the same
convention as MotionCor's ``-Bft``) which keeps the frequencies that carry motion signal at low dose and
makes the correlation peak smooth. The frames are shifted by the new estimate and correlated again until
the updates fall below ``tol``. Every update is the offset of a peak measured on frames that are already
(nearly) aligned, so it converges to the origin where the 3-point Gaussian fit is unbiased; the final
estimate therefore does not inherit the fit's bias on an off-centre peak (which a one-pass estimate does).

Frames are correlated on a Fourier-cropped copy (only frequencies the B-factor leaves above 1e-4), which
is what makes a 4k movie cheap; shifts stay in full-size pixels (see :mod:`tiltflow.motion.fourier`).
Low-dose frames can be grouped (``group``, like MotionCor's ``-Group``): groups are aligned and the group
shifts interpolated to frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from tiltflow.motion import fourier


@dataclass(frozen=True)
class AlignParams:
    """Settings of one alignment (whole frames or one patch)."""

    bfactor: float = 500.0  # pixel^2 of the full-size frame; MotionCor2's global default
    max_iter: int = 20
    tol: float = 0.005  # px: stop when no frame moved more than this in an iteration
    max_shift: float = 80.0  # px searched around the current estimate
    group: int = 1  # frames summed per group before correlating
    chunk: int = 8  # frames correlated at once (bounds memory)


@dataclass
class AlignResult:
    """Per-frame shifts (``(n, 2)`` x, y in full-size pixels, mean zero) and how the iteration went."""

    shifts: np.ndarray
    iterations: int
    converged: bool
    peak_height: np.ndarray  # final correlation peak per frame (group) relative to the map's std
    history: list[float] = field(default_factory=list)  # largest update per iteration (px)


def working_shape(full_shape: tuple[int, int], bfactor: float, max_size: int = 2048) -> tuple[int, int]:
    """Size of the Fourier-cropped copy: keep frequencies where the B-factor weight exceeds 1e-4.

    Each side is rounded up to an FFT-friendly even length (factors 2, 3, 5), never beyond the frame: the
    copy is transformed in every iteration, and 1024^2 at B 500 gave 394 = 2 x 197, where pocketfft falls
    back to Bluestein's algorithm (400 is 2^4 x 5^2).
    """
    from tiltflow.fftsize import next_fast_size

    f_keep = min(0.5, math.sqrt(2.0 * math.log(1e4) / max(bfactor, 1e-3)))
    h, w = full_shape
    scale = min(1.0, 2.0 * f_keep, max_size / max(h, w))
    if scale >= 1.0:
        return (h, w)
    ch, cw = fourier.even_crop_shape(full_shape, 1.0 / scale)
    return min(next_fast_size(ch, 2), h), min(next_fast_size(cw, 2), w)


def prepare(frames, out_shape: tuple[int, int] | None = None, taper: int | None = None):
    """Mean-subtract, edge-taper and transform real frames ``(n, h, w)``; crop the spectra to ``out_shape``."""
    import torch

    n, h, w = frames.shape
    width = taper if taper is not None else max(4, min(h, w) // 20)
    win = fourier.edge_taper((h, w), width, device=frames.device)
    x = (frames - frames.mean(dim=(-2, -1), keepdim=True)) * win
    spec = torch.fft.rfft2(x)
    if out_shape is not None and tuple(out_shape) != (h, w):
        spec = fourier.crop(spec, (h, w), out_shape)
    return spec


def align(spectra, real_shape: tuple[int, int], full_shape: tuple[int, int], params: AlignParams,
          init: np.ndarray | None = None) -> AlignResult:
    """Align ``spectra`` (``(n, h, w//2+1)`` rfft2 of real size ``real_shape``) to each other.

    ``full_shape`` is the size of the image the spectra were cropped from (units of the returned shifts).
    """
    n = spectra.shape[0]
    if params.group > 1 and n >= 2 * params.group:
        return _align_grouped(spectra, real_shape, full_shape, params, init)
    return _align(spectra, real_shape, full_shape, params, init)


def _align(spectra, real_shape, full_shape, params: AlignParams, init) -> AlignResult:
    import torch

    n = spectra.shape[0]
    dev = spectra.device
    fy, fx = fourier.freqs(real_shape, full_shape, device=dev)
    weight = torch.exp(-params.bfactor * (fx**2 + fy**2) / 2.0)
    weight[0, 0] = 0.0  # the mean carries no shift information
    shifts = torch.zeros(n, 2, dtype=torch.float64, device=dev)
    if init is not None:
        shifts += torch.as_tensor(init, dtype=torch.float64, device=dev)
    scale = (full_shape[0] / real_shape[0], full_shape[1] / real_shape[1])
    history: list[float] = []
    converged = False
    heights = torch.zeros(n, dtype=torch.float64)
    damping = 1.0
    # buffers reused by every iteration: fresh memory is zeroed by the kernel on first touch, which was a
    # third of a K3 movie's time (perf: clear_page) when each iteration allocated its stack again
    shifted = torch.empty_like(spectra)
    chunk = min(params.chunk, n)
    prod_buf = torch.empty((chunk, *spectra.shape[1:]), dtype=spectra.dtype, device=dev)
    cc_buf = torch.empty((chunk, *real_shape), dtype=torch.float32, device=dev)
    for _it in range(params.max_iter):
        fourier.shift(spectra, shifts.float(), full_shape, real_shape, out=shifted)
        total = shifted.sum(dim=0)
        delta = torch.zeros_like(shifts)
        for start in range(0, n, params.chunk):
            part = shifted[start:start + params.chunk]
            m = part.shape[0]
            prod = torch.sub(total, part, out=prod_buf[:m]).mul_(part.conj()).mul_(weight)
            cc = torch.fft.irfft2(prod, s=real_shape, out=cc_buf[:m])
            d, hgt = peak_offsets(cc, scale, params.max_shift)
            delta[start:start + params.chunk] = d
            heights[start:start + params.chunk] = hgt.cpu()
        step = float(delta.abs().max())
        if history and step >= history[-1] and step > params.tol:
            damping = max(0.125, damping * 0.5)  # oscillating (a peak too sharp for its sampling): damp
        shifts += damping * delta
        shifts -= shifts.mean(dim=0, keepdim=True)
        history.append(step)
        if step < params.tol:
            converged = True
            break
    return AlignResult(shifts.cpu().numpy(), len(history), converged, heights.numpy(), history)


def _align_grouped(spectra, real_shape, full_shape, params: AlignParams, init) -> AlignResult:
    """Align sums of ``group`` consecutive frames; interpolate the group shifts to the frames."""
    import torch

    n, g = spectra.shape[0], params.group
    starts = list(range(0, n - n % g, g))
    sizes = [g] * len(starts)
    sizes[-1] += n % g  # the remainder joins the last group
    centers = np.array([s + (sz - 1) / 2.0 for s, sz in zip(starts, sizes, strict=True)])
    if init is not None:
        spectra = fourier.shift(spectra, torch.as_tensor(init, dtype=torch.float32, device=spectra.device),
                                full_shape, real_shape)
    groups = torch.stack([spectra[s:s + sz].sum(dim=0) for s, sz in zip(starts, sizes, strict=True)])
    res = _align(groups, real_shape, full_shape, AlignParams(**{**params.__dict__, "group": 1}), None)
    frames = np.arange(n, dtype=float)
    per_frame = np.stack([_interp_extrap(frames, centers, res.shifts[:, k]) for k in range(2)], axis=1)
    if init is not None:
        per_frame = per_frame + np.asarray(init)
    per_frame -= per_frame.mean(axis=0)
    heights = np.repeat(res.peak_height, sizes)
    return AlignResult(per_frame, res.iterations, res.converged, heights, res.history)


def _interp_extrap(x: np.ndarray, xp: np.ndarray, fp: np.ndarray) -> np.ndarray:
    """Linear interpolation that extrapolates the first and last segment (a drift keeps its velocity)."""
    if len(xp) == 1:
        return np.full_like(x, fp[0])
    out = np.interp(x, xp, fp)
    lo, hi = x < xp[0], x > xp[-1]
    out[lo] = fp[0] + (x[lo] - xp[0]) * (fp[1] - fp[0]) / (xp[1] - xp[0])
    out[hi] = fp[-1] + (x[hi] - xp[-1]) * (fp[-1] - fp[-2]) / (xp[-1] - xp[-2])
    return out


def peak_offsets(cc, scale: tuple[float, float], max_shift: float):
    """Sub-pixel peak of each correlation map ``(n, h, w)`` within ``max_shift`` full-size pixels of 0.

    Returns ``(offsets (n, 2) as x, y in full-size pixels, peak height / map std)``. The peak is refined
    per axis by a 3-point Gaussian fit (a parabola through the logarithms), exact for the Gaussian-like
    peak the B-factor produces; a parabola is used where the neighbours are not positive.
    """
    import torch

    n, h, w = cc.shape
    ry = int(min(h // 2 - 2, max(1, math.ceil(max_shift / scale[0]))))
    rx = int(min(w // 2 - 2, max(1, math.ceil(max_shift / scale[1]))))
    ys = torch.arange(-ry, ry + 1, device=cc.device)
    xs = torch.arange(-rx, rx + 1, device=cc.device)
    win = cc[:, ys % h][:, :, xs % w]  # (n, 2ry+1, 2rx+1) centred on zero shift
    flat = win.reshape(n, -1).argmax(dim=1)
    py = flat // win.shape[2] - ry
    px = flat % win.shape[2] - rx
    idx = torch.arange(n, device=cc.device)

    def val(dy, dx):
        return cc[idx, (py + dy) % h, (px + dx) % w].double()

    c0 = val(0, 0)
    sub_y = _fit3(val(-1, 0), c0, val(1, 0))
    sub_x = _fit3(val(0, -1), c0, val(0, 1))
    off = torch.stack([(px.double() + sub_x) * scale[1], (py.double() + sub_y) * scale[0]], dim=1)
    std = cc.reshape(n, -1).std(dim=1).double()  # torch accumulates a float32 std in double: no float64 copy
    informative = (std > 1e-12 * c0.abs().clamp_min(1e-30)) & (std > 0)
    off = torch.where(informative[:, None], off, torch.zeros_like(off))  # a flat map (blank frame): no move
    return off, c0 / std.clamp_min(1e-30)


def _fit3(cm, c0, cp):
    """Vertex offset in (-0.5, 0.5) of a peak sampled at -1, 0, +1 (Gaussian where possible)."""
    import torch

    pos = (cm > 0) & (c0 > 0) & (cp > 0)
    lm = torch.log(torch.where(pos, cm, torch.ones_like(cm)))
    l0 = torch.log(torch.where(pos, c0, torch.ones_like(c0)))
    lp = torch.log(torch.where(pos, cp, torch.ones_like(cp)))
    den_g = lm - 2 * l0 + lp
    den_p = cm - 2 * c0 + cp
    gauss = torch.where(den_g < 0, 0.5 * (lm - lp) / torch.where(den_g < 0, den_g, -torch.ones_like(den_g)),
                        torch.zeros_like(den_g))
    para = torch.where(den_p < 0, 0.5 * (cm - cp) / torch.where(den_p < 0, den_p, -torch.ones_like(den_p)),
                       torch.zeros_like(den_p))
    return torch.where(pos & (den_g < 0), gauss, para).clamp(-0.5, 0.5)
