"""Fourier-space helpers shared by estimation and summation (torch, any device).

Arrays are ``torch.fft.rfft2`` half-planes of shape ``(..., h, w // 2 + 1)``. A cropped half-plane keeps
the frequencies of the full image, so frequencies are always given in cycles per *full-size* pixel: shifts
measured on a cropped (binned) copy of a movie are therefore already in movie pixels.

Sign convention: :func:`shift` with ``s = (sx, sy)`` moves the image content by ``+s`` pixels, i.e.
``out(x) = in(x - s)``; this is how MotionCor2 and RELION apply their per-frame shifts.
"""

from __future__ import annotations

import math


def freqs(shape: tuple[int, int], full_shape: tuple[int, int] | None = None, device=None):
    """``(fy, fx)`` in cycles per full-size pixel for an rfft2 array of real size ``shape``.

    ``fy`` has shape ``(h, 1)`` and ``fx`` ``(1, w // 2 + 1)``, ready to broadcast.
    """
    import torch

    h, w = shape
    big_h, big_w = full_shape or shape
    ky = torch.fft.fftfreq(h, d=1.0 / h, device=device)  # signed integer indices
    kx = torch.arange(w // 2 + 1, device=device, dtype=torch.float32)
    return (ky / big_h).reshape(h, 1).float(), (kx / big_w).reshape(1, -1)


def crop(spectrum, in_shape: tuple[int, int], out_shape: tuple[int, int]):
    """Crop an rfft2 half-plane of real size ``in_shape`` to ``out_shape`` (Fourier binning).

    Values are rescaled so that the inverse transform keeps the real-space mean (as a binned average).
    """
    import torch

    h, w = in_shape
    ho, wo = out_shape
    if ho > h or wo > w:
        raise ValueError(f"cannot crop {in_shape} to a larger {out_shape}")
    if (ho, wo) == (h, w):
        return spectrum
    n_pos, n_neg = (ho + 1) // 2, ho // 2
    cols = wo // 2 + 1
    top = spectrum[..., :n_pos, :cols]
    parts = [top] if n_neg == 0 else [top, spectrum[..., h - n_neg:, :cols]]
    return torch.cat(parts, dim=-2) * ((ho * wo) / (h * w))


def shift(spectrum, shifts, full_shape: tuple[int, int], real_shape: tuple[int, int] | None = None, out=None):
    """Move the content of each image by ``shifts`` (``(..., 2)`` as x, y, full-size pixels).

    ``spectrum`` is ``(..., h, w // 2 + 1)``; ``real_shape`` is its real size when it is a cropped copy;
    ``out`` a tensor of the result's shape to write into (per-frame loops: no allocation per frame).
    """
    import torch

    shape = real_shape or full_shape
    fy, fx = freqs(shape, full_shape, device=spectrum.device)
    s = torch.as_tensor(shifts, dtype=torch.float64, device=spectrum.device)
    sx = s[..., 0].reshape(*s.shape[:-1], 1, 1)
    sy = s[..., 1].reshape(*s.shape[:-1], 1, 1)
    # separable ramp: two small exponentials and one multiply per element instead of a full-size exp
    px = torch.exp(-2j * math.pi * (fx.double() * sx)).to(spectrum.dtype)
    py = torch.exp(-2j * math.pi * (fy.double() * sy)).to(spectrum.dtype)
    if out is None:
        return torch.mul(spectrum, py).mul_(px)  # one full-size result, not two
    return torch.mul(spectrum, py, out=out).mul_(px)


def even_crop_shape(shape: tuple[int, int], factor: float) -> tuple[int, int]:
    """The even size of an image of ``shape`` Fourier-binned by ``factor`` (at least 2 pixels)."""
    h, w = shape
    return max(2, int(round(h / factor / 2)) * 2), max(2, int(round(w / factor / 2)) * 2)


def edge_taper(shape: tuple[int, int], width: int, device=None):
    """A separable window: 1 inside, a cosine ramp to 0 over ``width`` pixels at every edge.

    Used before correlating frames: the camera's borders are the same in every frame and would otherwise
    correlate at zero shift (a fixed pattern that pulls the estimate towards no motion).
    """
    import torch

    def ramp(n: int):
        wdt = max(1, min(width, n // 4))
        r = torch.ones(n, device=device)
        t = 0.5 - 0.5 * torch.cos(math.pi * (torch.arange(wdt, device=device) + 0.5) / wdt)
        r[:wdt] = t
        r[n - wdt:] = t.flip(0)
        return r

    h, w = shape
    return ramp(h).reshape(h, 1) * ramp(w).reshape(1, w)
