"""Binning tilt images to the tomogram's pixel size by Fourier cropping (no aliasing, any factor).

RELION bins by a possibly non-integer factor ``b = target pixel / tilt-series pixel``. Fourier
cropping an image of N pixels to M keeps sample 0 at position 0 and spaces samples N/M input pixels
apart, so the binned image is sampled at bin-1 positions ``j * N / M``; the projector's
``image_scale`` absorbs the small difference between N/M and the exact factor, so nothing is
rounded away.
"""

from __future__ import annotations

import torch


def fourier_crop(images: torch.Tensor, out_shape: tuple[int, int]) -> torch.Tensor:
    """Resample (n, h, w) images to (n, H, W) with H <= h, W <= w by cropping their spectrum.

    Values keep their scale (a constant image stays the same constant).
    """
    n, h, w = images.shape
    oh, ow = (int(s) for s in out_shape)
    if oh > h or ow > w or oh < 1 or ow < 1:
        raise ValueError(f"cannot Fourier-crop {h}x{w} to {oh}x{ow}")
    if (oh, ow) == (h, w):
        return images.float().clone()
    spec = torch.fft.rfft2(images.float())
    ky = torch.fft.fftfreq(oh, d=1.0 / oh).round().long()  # integer frequencies of the output
    keep_x = ow // 2 + 1
    cropped = spec[:, ky % h, :keep_x]
    if oh % 2 == 0 and oh < h:  # the output's Nyquist row holds both +/- input frequencies
        cropped[:, oh // 2] = 0.5 * (spec[:, oh // 2] + spec[:, h - oh // 2])[:, :keep_x]
    if ow % 2 == 0 and ow < w:
        cropped[..., -1] = cropped[..., -1].real  # Nyquist column must be real-symmetric
    out = torch.fft.irfft2(cropped, s=(oh, ow))
    return out * (oh * ow) / (h * w)


def binned_size(size: int, factor: float) -> int:
    """Pixels of an axis of ``size`` after binning by ``factor`` (>= 1), rounded to an even number."""
    m = int(round(size / factor / 2.0)) * 2
    return max(2, min(m, size if size % 2 == 0 else size - 1)) if factor > 1 else size
