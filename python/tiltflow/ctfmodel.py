"""The contrast transfer function with RELION's conventions, shared by the simulator and CTF fitting.

Defocus is positive for underfocus, in Angstrom; ``defocus_angle`` is the azimuth of the
``defocus_u`` direction from the x axis in degrees (rlnDefocusU/V/Angle); ``phase_shift`` in degrees.
"""

from __future__ import annotations

import math


def electron_wavelength(voltage_kv: float) -> float:
    """Relativistic electron wavelength in Angstrom."""
    v = voltage_kv * 1e3
    return 12.2643247 / math.sqrt(v * (1 + 0.978466e-6 * v))


def ctf_2d(
    shape: tuple[int, int],
    pixel_size: float,
    defocus_u: float,
    defocus_v: float,
    defocus_angle: float,
    voltage: float = 300.0,
    cs: float = 2.7,
    amplitude_contrast: float = 0.07,
    phase_shift: float = 0.0,
    bfactor: float = 0.0,
    rfft: bool = False,
    device=None,
):
    """CTF on the FFT grid of an image of ``shape`` (h, w), unshifted (DC at [0, 0]).

    Returns a float32 torch tensor, (h, w) or (h, w // 2 + 1) with ``rfft``.
    """
    import torch

    h, w = shape
    fy = torch.fft.fftfreq(h, d=pixel_size, device=device, dtype=torch.float64)
    fx = (torch.fft.rfftfreq if rfft else torch.fft.fftfreq)(w, d=pixel_size, device=device, dtype=torch.float64)
    ky, kx = torch.meshgrid(fy, fx, indexing="ij")
    return ctf_from_frequencies(kx, ky, defocus_u, defocus_v, defocus_angle, voltage, cs,
                                amplitude_contrast, phase_shift, bfactor).float()


def ctf_from_frequencies(kx, ky, defocus_u, defocus_v, defocus_angle, voltage=300.0, cs=2.7,
                         amplitude_contrast=0.07, phase_shift=0.0, bfactor=0.0):
    """CTF at spatial frequencies ``kx, ky`` (1/A, torch tensors); see :func:`ctf_2d`."""
    import torch

    phase, _ = ctf_phase(kx, ky, defocus_u, defocus_v, defocus_angle, voltage, cs, amplitude_contrast, phase_shift)
    ctf = -torch.sin(phase)
    if bfactor:
        ctf = ctf * torch.exp(-bfactor * (kx * kx + ky * ky) / 4)
    return ctf


def ctf_phase(kx, ky, defocus_u, defocus_v, defocus_angle, voltage=300.0, cs=2.7, amplitude_contrast=0.07,
              phase_shift=0.0):
    """``(phase, slope)``: CTF = ``-sin(phase + offset * slope)`` for a defocus ``offset`` (A) added to U and V.

    ``phase`` is the wave aberration plus the amplitude-contrast and phase-plate terms; ``slope`` =
    ``pi * lambda * k^2`` is its derivative with respect to defocus, so many defocus values (strips of a
    tilted image, depths of a specimen) cost one multiply-add each.
    """
    import torch

    lam = electron_wavelength(voltage)
    k2 = kx * kx + ky * ky
    mean = 0.5 * (defocus_u + defocus_v)
    half = 0.5 * (defocus_u - defocus_v)
    dz = mean
    if isinstance(half, torch.Tensor) or half:  # astigmatism: the defocus depends on the azimuth
        dz = mean + half * torch.cos(2 * (torch.atan2(ky, kx) - math.radians(defocus_angle)))
    cs_a = cs * 1e7
    slope = math.pi * lam * k2
    chi = slope * dz - 0.5 * math.pi * cs_a * lam**3 * k2 * k2 + math.radians(phase_shift)
    w = math.atan2(amplitude_contrast, math.sqrt(max(1e-12, 1 - amplitude_contrast**2)))
    return chi + w, slope
