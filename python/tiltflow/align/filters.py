"""Image conditioning for alignment: Fourier binning, bandpass, edge taper, normalisation (torch).

Why: cross-correlation of raw tilt images is dominated by the lowest frequencies (ice gradients) and by
shot noise; a bandpass keeps the specimen's mid frequencies, and a smooth taper stops the image borders
(which move with the shifts and the cosine stretch) from correlating with themselves.
"""

from __future__ import annotations

import math


def fourier_bin(images, factor: float):
    """Bin (n, h, w) by Fourier cropping to (round(h/factor), round(w/factor)), even sizes.

    The output pixel k sits at input coordinate ``k * (h / h_out)`` (index 0 stays at 0): callers that
    need exact coordinates use :func:`bin_scale`.
    """
    import torch

    n, h, w = images.shape
    if factor <= 1.0:
        return images.clone()
    ho, wo = _even(h / factor), _even(w / factor)
    cy, cx = h // 2, w // 2
    out = torch.empty((n, ho, wo), dtype=torch.float32, device=images.device)
    # one tilt at a time: the complex FFT of a whole 4k stack and its fftshift copy are 4x the stack
    for i in range(n):
        f = torch.fft.fftshift(torch.fft.fft2(images[i].to(torch.float32)), dim=(-2, -1))
        f = f[cy - ho // 2: cy + ho // 2, cx - wo // 2: cx + wo // 2]
        out[i] = torch.fft.ifft2(torch.fft.ifftshift(f, dim=(-2, -1))).real * (ho * wo) / (h * w)
    return out


def bin_scale(in_shape: tuple[int, int], out_shape: tuple[int, int]) -> tuple[float, float]:
    """Input pixels per output pixel along (y, x) for :func:`fourier_bin`."""
    return in_shape[0] / out_shape[0], in_shape[1] / out_shape[1]


def _even(x: float) -> int:
    return max(8, 2 * int(round(x / 2)))


def bandpass(images, low: float, high: float, soft: float = 0.05):
    """Keep spatial frequencies between ``low`` and ``high`` cycles/pixel (Gaussian-edged)."""
    import torch

    n, h, w = images.shape
    fy = torch.fft.fftfreq(h, device=images.device)[:, None]
    fx = torch.fft.rfftfreq(w, device=images.device)[None, :]
    r = torch.sqrt(fy**2 + fx**2)
    filt = torch.ones_like(r)
    if high < 0.5:
        filt = filt * torch.where(r > high, torch.exp(-((r - high) ** 2) / (2 * soft**2)), torch.ones_like(r))
    if low > 0:
        filt = filt * (1 - torch.exp(-(r**2) / (2 * low**2)))
    out = torch.fft.irfft2(torch.fft.rfft2(images) * filt, s=(h, w))
    return out


def taper_mask(shape: tuple[int, int], edge: float = 0.1, device=None):
    """A rectangle with cosine-tapered borders (``edge`` = taper width as a fraction of each size)."""
    import torch

    h, w = shape

    def ramp(n: int):
        e = max(2, int(round(edge * n)))
        t = torch.ones(n, device=device)
        k = torch.arange(e, device=device, dtype=torch.float32)
        r = 0.5 - 0.5 * torch.cos(math.pi * (k + 0.5) / e)
        t[:e] = r
        t[n - e:] = r.flip(0)
        return t

    return ramp(h)[:, None] * ramp(w)[None, :]


def normalise(images, mask=None):
    """Zero mean, unit standard deviation per image (inside ``mask`` when given), then masked."""
    import torch

    if mask is None:
        m = images.mean(dim=(-2, -1), keepdim=True)
        s = images.std(dim=(-2, -1), keepdim=True)
        return (images - m) / torch.clamp(s, min=1e-12)
    wsum = mask.sum()
    m = (images * mask).sum(dim=(-2, -1), keepdim=True) / wsum
    v = (((images - m) ** 2) * mask).sum(dim=(-2, -1), keepdim=True) / wsum
    return (images - m) / torch.sqrt(torch.clamp(v, min=1e-24)) * mask
