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
    shape = binned_shape((h, w), factor)
    out = torch.empty((n, *shape), dtype=torch.float32, device=images.device)
    for i in range(n):  # one tilt at a time: memory bounded by one tilt's spectrum, not the stack's
        out[i] = crop_spectrum(torch.fft.rfft2(images[i].to(torch.float32)), (h, w), shape)
    return out


def binned_shape(shape: tuple[int, int], factor: float) -> tuple[int, int]:
    """The (even) output shape of :func:`fourier_bin` for an image of ``shape``."""
    return _even(shape[0] / factor), _even(shape[1] / factor)


def crop_spectrum(spectrum, shape: tuple[int, int], out_shape: tuple[int, int]):
    """The image binned to ``out_shape`` from the ``rfft2`` of one ``shape`` image (mean kept).

    The same as keeping the central ho x wo block of the centred full spectrum (frequencies
    -ho/2..ho/2-1, -wo/2..wo/2-1) and taking the real part of its inverse, read from the half spectrum
    without a full complex copy: that real part sees the cropped Nyquist row as the mean of the rows
    at -ho/2 and +ho/2 (the Nyquist column likewise, which ``irfft2`` does by itself; the corner is
    the real part of F(+ho/2, +wo/2)).
    """
    import torch

    (h, w), (ho, wo) = shape, out_shape
    f = spectrum[..., :, : wo // 2 + 1]
    f = torch.cat([f[..., : ho // 2, :], f[..., h - ho // 2:, :]], dim=-2)
    f[..., ho // 2, : wo // 2] = 0.5 * (f[..., ho // 2, : wo // 2] + spectrum[..., ho // 2, : wo // 2])
    f[..., ho // 2, wo // 2] = spectrum[..., ho // 2, wo // 2]  # the corner: Re F(-ho/2, -wo/2)
    return torch.fft.irfft2(f, s=(ho, wo)) * (ho * wo) / (h * w)


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
