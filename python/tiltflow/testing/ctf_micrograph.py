"""Synthetic micrographs with a known CTF, for tests and benchmarks of the CTF fit.

Why here and not only in the session simulator: the fit needs controlled cases (one defocus, one
astigmatism, a tilt of the specimen, a dose) that are fast to make; the simulator makes whole sessions.
Both use :mod:`tiltflow.ctfmodel`, so they agree on conventions.

Model: a white random-phase specimen, multiplied by the CTF and a B-factor envelope, plus white shot noise
and a smooth low-frequency background (uneven ice). On a tilted specimen the defocus changes linearly
across the tilt axis (:func:`tiltflow.ctffit.spectrum.defocus_gradient`: ``gradient_sign = -rlnTomoHand``);
the image is blended from a stack of constant-defocus images (linear in defocus).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def synthetic_micrograph(
    shape: tuple[int, int],
    pixel_size: float,
    defocus_u: float,
    defocus_v: float,
    defocus_angle: float = 0.0,
    *,
    voltage: float = 300.0,
    cs: float = 2.7,
    amplitude_contrast: float = 0.07,
    phase_shift: float = 0.0,
    bfactor: float = 100.0,
    snr: float = 0.1,
    background: float = 0.5,
    tilt_angle: float = 0.0,
    tilt_axis: float = 85.0,
    gradient_sign: int = 1,
    seed: int = 0,
) -> np.ndarray:
    """A float32 image (h, w) whose Thon rings follow the given CTF (defoci in A, angles in degrees).

    ``snr`` is the variance of the CTF-modulated signal over the variance of the white noise;
    ``background`` the standard deviation of the smooth background relative to the noise.
    """
    import torch

    from tiltflow.ctffit.spectrum import defocus_gradient
    from tiltflow.ctfmodel import ctf_2d

    h, w = shape
    gen = torch.Generator().manual_seed(seed)
    specimen = torch.fft.rfft2(torch.randn(h, w, generator=gen, dtype=torch.float32))
    fy = torch.fft.fftfreq(h, d=pixel_size)
    fx = torch.fft.rfftfreq(w, d=pixel_size)
    k2 = fy[:, None] ** 2 + fx[None, :] ** 2
    envelope = torch.exp(-bfactor * k2 / 4)
    args: dict[str, Any] = dict(voltage=voltage, cs=cs, amplitude_contrast=amplitude_contrast, phase_shift=phase_shift, rfft=True)

    # defocus offset of every pixel (A): constant along the tilt axis, tan(tilt) across it
    yy, xx = torch.meshgrid((torch.arange(h) - h / 2) * pixel_size, (torch.arange(w) - w / 2) * pixel_size,
                            indexing="ij")
    gx, gy = defocus_gradient(tilt_angle, tilt_axis, gradient_sign)
    offset = gx * xx + gy * yy
    lo, hi = float(offset.min()), float(offset.max())
    n_planes = 1 if hi - lo < 20 else int(math.ceil((hi - lo) / 100.0)) + 1
    planes = torch.linspace(lo, hi, n_planes) if n_planes > 1 else torch.tensor([0.0])
    signal = torch.zeros(h, w)
    for d in planes:
        ctf = ctf_2d((h, w), pixel_size, defocus_u + float(d), defocus_v + float(d), defocus_angle, **args)
        img = torch.fft.irfft2(specimen * ctf * envelope, s=(h, w))
        if n_planes == 1:
            signal = img
            break
        step = float(planes[1] - planes[0])
        weight = (1 - ((offset - float(d)).abs() / step)).clamp(min=0)
        signal += weight * img
    signal = signal / signal.std()
    noise = torch.randn(h, w, generator=gen) / math.sqrt(snr)
    scale = 0.25 * min(h, w) * pixel_size  # smooth background: features a quarter of the image wide
    smooth = torch.fft.irfft2(torch.fft.rfft2(torch.randn(h, w, generator=gen)) * torch.exp(-k2 * scale**2), s=(h, w))
    if smooth.std() > 0:
        smooth = smooth / smooth.std() * background / math.sqrt(snr)
    return (signal + noise + smooth + 10.0).numpy().astype(np.float32)
