"""Image formation: projected phase -> CTF with a depth-dependent defocus -> intensity -> drifting frames.

Defocus model (RELION ``Tomogram::getCtf``, with ``defocusSlope = 1``): an object at specimen position
``X`` (pixels from the tomogram centre) is imaged with

    defocus(X) = defocus_tilt + hand * pixel_size * (R (X - c_tomo))_z          [Angstrom]

where ``R = Rz(tilt_axis) Ry(tilt)`` is the tilt's projection rotation and ``defocus_tilt`` (U and V, the
ground truth's ``defocus_u``/``defocus_v``) is the defocus at the tomogram centre. For the slab mid-plane
this makes the defocus change across the tilted image perpendicular to the tilt axis: with ``q`` the image
position relative to where the tomogram centre lands, rotated by ``-tilt_axis``,
``defocus = defocus_tilt - hand * tan(tilt) * q_x * pixel_size``.

Intensity (weak-phase approximation): ``I = T * exp(-a) * (1 + 2 * ifft(sum_planes CTF(z) * F(phase_z) * E))``
with ``T`` the energy-filter transmission ``exp(-thickness / (mean free path * cos tilt))``, ``a`` the
absorption of gold, ``E`` the B-factor envelope times the Grant & Grigorieff (2015) exposure filter at the
tilt's pre-exposure plus half its own dose (damage within one movie is not modelled). CTF from
:mod:`tiltflow.ctfmodel` (defocus positive = underfocus, angle from the x axis).

Frames: frame ``i`` is the tilt image translated by ``+drift_i`` (pixels, x y): ``frame_i(p) = I(p - drift_i)``,
done exactly with a Fourier phase ramp on the padded canvas, then cropped to the movie.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from tiltflow.simulate.project import Grid, TiltProjection

#: Grant & Grigorieff (2015) critical exposure N_e(k) = a k^b + c (e/A^2, k in 1/A)
GG_A, GG_B, GG_C = 0.245, -1.665, 2.81


@dataclass(frozen=True)
class Optics:
    """Microscope constants shared by all tilts."""

    pixel_size: float  # A
    voltage: float = 300.0  # kV
    cs: float = 2.7  # mm
    amplitude_contrast: float = 0.1
    bfactor: float = 0.0  # A^2


@dataclass(frozen=True)
class TiltCtf:
    """CTF of one tilt at the tomogram centre, the hand of its depth gradient and the dose history."""

    defocus_u: float  # A
    defocus_v: float  # A
    defocus_angle: float  # degrees
    hand: int = 1
    exposure: float | None = None  # e/A^2 for the damage filter; None = no damage


class FourierGrid:
    """Spatial frequencies of the padded canvas in the rfft layout, computed once per grid."""

    def __init__(self, grid: Grid, pixel_size: float):
        import torch

        self.grid = grid
        fy = torch.fft.fftfreq(grid.hp, dtype=torch.float64)
        fx = torch.fft.rfftfreq(grid.wp, dtype=torch.float64)
        ky, kx = torch.meshgrid(fy, fx, indexing="ij")
        self.fx_px, self.fy_px = fx, fy  # cycles per pixel (1-D)
        self.kx = (kx / pixel_size).float()  # 1/A
        self.ky = (ky / pixel_size).float()
        self.k2 = self.kx * self.kx + self.ky * self.ky

    def envelope(self, bfactor: float, exposure: float | None):
        """B-factor envelope times the exposure (damage) filter, torch (hp, wp//2+1)."""
        import torch

        env = torch.exp(-bfactor * self.k2 / 4) if bfactor else torch.ones_like(self.k2)
        if exposure:
            k = torch.sqrt(self.k2.double())
            ne = GG_A * torch.pow(k.clamp_min(1e-9), GG_B) + GG_C
            env = env * torch.exp(-exposure / (2 * ne)).float()
        return env

    def shift_ramp(self, dx: float, dy: float):
        """Fourier factor that translates an image by (+dx, +dy) pixels."""
        import torch

        ramp_x = torch.exp(-2j * math.pi * self.fx_px * dx).to(torch.complex64)
        ramp_y = torch.exp(-2j * math.pi * self.fy_px * dy).to(torch.complex64)
        return ramp_y[:, None] * ramp_x[None, :]


class PlaneCtf:
    """The CTF of :func:`tiltflow.ctfmodel.ctf_from_frequencies` for many defocus offsets, fast.

    ``chi(k, dz) = chi(k, 0) + pi * lambda * dz * k^2``: the astigmatic, Cs and amplitude-contrast terms are
    computed once per tilt, each plane then costs one multiply-add and a sine. Equal to ctfmodel's values
    (tested), which stay the definition.
    """

    def __init__(self, fgrid: FourierGrid, optics: Optics, ctf: TiltCtf):
        import torch

        from tiltflow.ctfmodel import electron_wavelength

        lam = electron_wavelength(optics.voltage)
        kx, ky = fgrid.kx.double(), fgrid.ky.double()
        k2 = kx * kx + ky * ky
        azimuth = torch.atan2(ky, kx)
        mean = 0.5 * (ctf.defocus_u + ctf.defocus_v)
        half = 0.5 * (ctf.defocus_u - ctf.defocus_v)
        dz = mean + half * torch.cos(2 * (azimuth - math.radians(ctf.defocus_angle)))
        cs_a = optics.cs * 1e7
        a = optics.amplitude_contrast
        w = math.atan2(a, math.sqrt(max(1e-12, 1 - a * a)))
        self.chi0 = (math.pi * lam * dz * k2 - 0.5 * math.pi * cs_a * lam**3 * k2 * k2 + w).float()
        self.slope = (math.pi * lam * k2).float()

    def __call__(self, offsets_a):
        """CTF stack (n, h, w//2+1) for defocus offsets ``offsets_a`` (A, added to U and V)."""
        import torch

        off = torch.as_tensor(np.asarray(offsets_a, dtype=np.float32)).view(-1, 1, 1)
        return -torch.sin(torch.addcmul(self.chi0, off, self.slope))


def tilt_intensity(proj: TiltProjection, fgrid: FourierGrid, optics: Optics, ctf: TiltCtf,
                   transmission: float = 1.0, buffer=None):
    """Relative intensity on the padded canvas (1 = the unscattered beam), torch (hp, wp) float32.

    ``buffer``: an optional flat float32 tensor reused for the depth planes (saves page faults).
    """
    import torch

    grid = fgrid.grid
    planes_ctf = PlaneCtf(fgrid, optics, ctf)
    spectrum = torch.zeros(fgrid.kx.shape, dtype=torch.complex64)
    acc = torch.view_as_real(spectrum)
    for depths, imgs in proj.plane_chunks(buffer=buffer):
        f = torch.view_as_real(torch.fft.rfft2(imgs))
        c = planes_ctf(ctf.hand * optics.pixel_size * depths)
        for j in range(len(depths)):  # plane by plane: no (planes x h x w) complex temporary
            acc.addcmul_(f[j], c[j].unsqueeze(-1))
    spectrum *= fgrid.envelope(optics.bfactor, ctf.exposure)
    image = 1.0 + 2.0 * torch.fft.irfft2(spectrum, s=(grid.hp, grid.wp))
    absorb = proj.absorption()
    if absorb is not None:
        image = image * torch.exp(-absorb)
    return (image * transmission).float()


def frames_of(intensity, fgrid: FourierGrid, drifts: np.ndarray) -> Iterator[object]:
    """Each frame: the intensity translated by ``+drifts[i]`` (x, y pixels), cropped to the movie, >= 0."""
    import torch

    grid = fgrid.grid
    spec = torch.fft.rfft2(intensity)
    p = grid.pad
    for dx, dy in np.asarray(drifts, dtype=np.float64).reshape(-1, 2):
        img = torch.fft.irfft2(spec * fgrid.shift_ramp(dx, dy), s=(grid.hp, grid.wp))
        yield img[p:p + grid.height, p:p + grid.width].clamp_min(0.0)


def transmission(thickness_nm: float, tilt_deg: float, mean_free_path_nm: float) -> float:
    """Fraction of electrons passing the energy filter through a slab tilted by ``tilt_deg``."""
    if mean_free_path_nm <= 0:
        return 1.0
    return float(math.exp(-thickness_nm / (mean_free_path_nm * math.cos(math.radians(tilt_deg)))))


def delocalisation_px(defocus_a: float, optics: Optics) -> float:
    """How far (pixels) the CTF spreads a point at Nyquist: lambda * defocus * k_max / pixel."""
    from tiltflow.ctfmodel import electron_wavelength

    lam = electron_wavelength(optics.voltage)
    return lam * defocus_a * (0.5 / optics.pixel_size) / optics.pixel_size
