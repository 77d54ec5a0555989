"""CTF and exposure (dose) correction of the tilt images before back-projection.

Why: each tilt image carries its CTF, whose sign flips at every zero, and the zeros move with the defocus,
which changes across a tilted image and through the specimen's depth. Uncorrected, every shell beyond the
first zero back-projects with alternating contrast and cancels.

Defocus model (RELION ``Tomogram::getCtf``, src/jaz/tomography/tomogram.cpp, the model the simulator and
the CTF step use): a specimen point ``X`` is imaged with defocus ``D + hand * pixel * (R (X - c))_z`` where
``D`` is the tilt's rlnDefocusU/V (at the tomogram centre), ``R = Rz Ry Rx`` its projection rotation and
``hand`` rlnTomoHand. For points of the plane at depth ``z`` of the tomogram this is an affine function of
the image position: it changes perpendicular to the projected tilt axis (``-hand * tan(tilt)`` per pixel,
as IMOD's ctfphaseflip, ctfplotter/ctfphaseflip.cpp: ``stripDefocus = defocus - (nx/2 - x) * tan(angle) *
pixelSize`` in its axis-vertical frame) and by ``hand * z / cos(tilt)`` with depth.

Modes:

- ``phaseflip``: multiply each strip's spectrum by ``-sign(CTF)`` (IMOD's ``sign = ctf < 0 ? 1 : -1``,
  the same CTF as ``ctfmodel``: low frequencies keep their contrast). As IMOD does, the image is corrected
  at a few defocus values spaced at most ``defocus_step`` apart and the results are blended linearly
  between strip centres, here along the exact (astigmatic) defocus of each pixel;
- ``wiener``: ``-CTF / (CTF^2 + 1 / SNR(k))`` with ``SNR(k) = snr * exp(-falloff * k)`` (k in 1/A,
  falloff in A; the exponential SNR model of Warp's deconvolution filter): phase flipping plus amplitude
  restoration where the SNR allows;
- ``3d``: the volume is reconstructed in z-slabs, each from images phase-flipped with the defocus of its
  own depth (as novaCTF, Turonova et al. 2017, and Warp do);
- exposure weighting, with any mode: each tilt's spectrum times RELION's ``exp(-0.5 N / Ne(k))`` with
  ``N`` = rlnMicrographPreExposure and ``Ne(k) = 0.245 k^-1.665 + 2.81`` (Grant & Grigorieff 2015;
  RELION ``Damage::getWeight``, src/jaz/optics/damage.cpp).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from tiltflow.ctfmodel import ctf_phase, electron_wavelength
from tiltflow.fftsize import next_fast_size
from tiltflow.geometry import projection_rotations
from tiltflow.parallel import map_ordered, workers_for
from tiltflow.tomo.filters import irfft2_corner

MODES = ("none", "phaseflip", "wiener", "3d")

#: Grant & Grigorieff (2015) critical exposure ``Ne(k) = a k^b + c`` (e/A^2, k in 1/A), as RELION uses it
CRITICAL_A, CRITICAL_B, CRITICAL_C = 0.245, -1.665, 2.81


@dataclass(frozen=True)
class CtfCorrection:
    """How the images are corrected; defaults: phase flipping and exposure weighting, as the field does."""

    mode: str = "phaseflip"  # none | phaseflip | wiener | 3d
    dose_weighting: bool = True
    defocus_step: float = 0.0  # A between corrected defocus values; 0 = automatic (phase error <= pi/4)
    wiener_snr: float = 100.0  # SNR at low resolution
    wiener_falloff: float = 100.0  # A: the SNR falls by e per 1/falloff A^-1


@dataclass(frozen=True)
class TiltOptics:
    """What the correction needs per tilt (stack order) and for the series."""

    defocus_u: np.ndarray  # A, at the tomogram centre
    defocus_v: np.ndarray
    defocus_angle: np.ndarray  # deg
    phase_shift: np.ndarray  # deg
    pre_exposure: np.ndarray  # e/A^2
    voltage: float = 300.0
    cs: float = 2.7
    amplitude_contrast: float = 0.1
    hand: float = 1.0


def critical_exposure(k):
    """Grant & Grigorieff's critical exposure (e/A^2) at spatial frequency ``k`` (1/A)."""
    return CRITICAL_A * np.power(np.maximum(np.asarray(k, float), 1e-9), CRITICAL_B) + CRITICAL_C


def exposure_weight(k, pre_exposure: float):
    """RELION's exposure weight ``exp(-0.5 N / Ne(k))`` (1 at k = 0)."""
    return np.exp(-0.5 * float(pre_exposure) / critical_exposure(k))


def half_weight_resolution(pre_exposure: float) -> float:
    """Resolution (A) where the exposure weight is 0.5; 0 when it stays above 0.5 at every frequency."""
    ne = float(pre_exposure) / (2.0 * math.log(2.0))  # exp(-0.5 N / Ne) = 0.5
    if ne <= CRITICAL_C:
        return 0.0
    return float(((ne - CRITICAL_C) / CRITICAL_A) ** (-1.0 / CRITICAL_B))


def automatic_step(pixel_size: float, voltage: float) -> float:
    """Defocus spacing (A) whose phase error at Nyquist is at most pi/4: ``pi lambda dz k^2 <= pi/4``."""
    k = 0.5 / pixel_size
    return 1.0 / (4.0 * electron_wavelength(voltage) * k * k)


def defocus_planes(setup, pixel_size: float, hand: float):
    """Per tilt the affine defocus offset (A) of tomogram depth ``z`` seen at image index ``j = (x, y)``.

    Returns ``(grad, per_z, origin)``: offset = ``grad[i] . (j - origin[i]) + per_z[i] * z`` with ``z`` in
    voxels from the tomogram centre, ``grad`` (n, 2) in A per image pixel, ``origin`` (n, 2) where the
    tomogram centre lands. From ``p = M (X - c) + o`` (the projector's mapping) and depth ``R[2] . (X - c)``.
    """
    mats, offsets, _ = setup.mapping()
    a = setup.alignment
    third = projection_rotations(a.x_tilt, a.y_tilt, a.z_rot).reshape(-1, 3, 3)[:, 2, :]
    inv = np.linalg.inv(mats[:, :, :2])  # (n, 2, 2): image index -> specimen (x, y) at z = 0
    g = np.einsum("ni,nij->nj", third[:, :2], inv)
    per_z = third[:, 2] - np.einsum("ni,ni->n", g, mats[:, :, 2])
    s = hand * pixel_size
    return s * g, s * per_z, offsets


def _offset_map(grad: np.ndarray, origin: np.ndarray, shape, device) -> torch.Tensor:
    h, w = shape
    x = torch.arange(w, dtype=torch.float64, device=device) - float(origin[0])
    y = torch.arange(h, dtype=torch.float64, device=device) - float(origin[1])
    return float(grad[1]) * y[:, None] + float(grad[0]) * x[None, :]


class TiltCorrector:
    """Corrects the images of one series; built once (frequencies, padding), used per tilt and depth."""

    def __init__(self, images_shape, setup, optics: TiltOptics, corr: CtfCorrection, pixel_size: float, device):
        n, h, w = images_shape
        self.optics, self.corr, self.pixel_size, self.device = optics, corr, float(pixel_size), device
        self.shape = (h, w)
        self.step = corr.defocus_step or automatic_step(pixel_size, optics.voltage)
        self.grad, self.per_z, self.origin = defocus_planes(setup, pixel_size, optics.hand)
        # zero padding against wrap-around: the delocalisation at Nyquist of the largest defocus, 8 px more
        dmax = float(np.max(np.maximum(optics.defocus_u, optics.defocus_v))) if n else 0.0
        dmax += float(np.abs(self.grad).sum(axis=1).max(initial=0.0)) * max(h, w)
        deloc = electron_wavelength(optics.voltage) * dmax * (0.5 / pixel_size) / pixel_size
        margin = int(min(max(h, w), math.ceil(deloc) + 8))
        self.padded = (next_fast_size(h + 2 * margin), next_fast_size(w + 2 * margin))
        ph, pw = self.padded
        t = {"dtype": torch.float32, "device": device}
        ky = torch.fft.fftfreq(ph, d=pixel_size, **t)[:, None]
        kx = torch.fft.rfftfreq(pw, d=pixel_size, **t)[None, :]
        self.kx, self.ky = kx.expand(ph, -1), ky.expand(-1, pw // 2 + 1)
        self.k = torch.sqrt(self.kx**2 + self.ky**2)
        self.critical = CRITICAL_A * self.k.clamp_min(1e-9) ** CRITICAL_B + CRITICAL_C
        if corr.mode == "wiener":
            self.inv_snr = 1.0 / (corr.wiener_snr * torch.exp(-corr.wiener_falloff * self.k)).clamp_min(1e-12)

    def _filters(self, i: int, offsets) -> torch.Tensor:
        """The correction (len(offsets), H, W//2+1) of tilt ``i`` at defocus ``offsets`` (A, added to U and V)."""
        o = self.optics
        phase, slope = ctf_phase(self.kx, self.ky, float(o.defocus_u[i]), float(o.defocus_v[i]),
                                 float(o.defocus_angle[i]), o.voltage, o.cs, o.amplitude_contrast,
                                 float(o.phase_shift[i]))
        off = torch.as_tensor(np.asarray(offsets, np.float32), device=self.device)[:, None, None]
        sin = torch.addcmul(phase, off, slope).sin_()  # = -CTF, one pass per operation
        if self.corr.mode == "wiener":
            return sin / (sin * sin + self.inv_snr)  # -CTF / (CTF^2 + 1/SNR)
        return torch.where(sin > 0, 1.0, -1.0)  # IMOD: sign = ctf < 0 ? 1 : -1

    def _dose(self, i: int) -> torch.Tensor | None:
        if not self.corr.dose_weighting or self.optics.pre_exposure[i] <= 0:
            return None
        return torch.exp(-0.5 * float(self.optics.pre_exposure[i]) / self.critical)

    def correct(self, images: torch.Tensor, z: float = 0.0) -> torch.Tensor:
        """Corrected copies of ``images`` (n, h, w) for the tomogram plane at depth ``z`` (voxels)."""
        n, h, w = images.shape
        ph, pw = self.padded
        out = torch.empty((n, h, w), dtype=torch.float32, device=images.device)

        def one(i: int) -> None:  # tilts side by side on the CPU (tiltflow.parallel), each into its own out[i]
            spec = torch.fft.rfft2(images[i].float(), s=(ph, pw))
            dose = self._dose(i)
            if dose is not None:
                spec *= dose
            if self.corr.mode == "none":
                out[i] = irfft2_corner(spec, (ph, pw), (h, w))
                return
            offsets = _offset_map(self.grad[i], self.origin[i], (h, w), images.device) + float(self.per_z[i]) * z
            out[i] = self._blend(i, spec, offsets.float())

        map_ordered(one, range(n), workers_for(n, images.device))
        return out

    def _blend(self, i: int, spec: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """Each pixel from the corrections at the two defocus values around its own (linear blend)."""
        ph, pw = self.padded
        h, w = self.shape
        lo, hi = float(offsets.min()), float(offsets.max())
        count = max(1, int(math.ceil((hi - lo) / self.step)) + 1)
        if count == 1:
            return irfft2_corner(spec * self._filters(i, [0.5 * (lo + hi)])[0], (ph, pw), (h, w))
        values = np.linspace(lo, hi, count)
        strips = irfft2_corner(spec[None] * self._filters(i, values), (ph, pw), (h, w))
        pos = ((offsets - lo) / float(values[1] - values[0])).clamp_(0, count - 1)
        j = torch.arange(count, device=spec.device, dtype=torch.float32)[:, None, None]
        weight = (1.0 - (pos[None] - j).abs()).clamp_(min=0.0)  # hat functions around the strips' defocus
        return (weight * strips).sum(dim=0)


def depth_slabs(corrector: TiltCorrector, depth: int, center_z: float) -> Iterator[tuple[int, int, float]]:
    """``(z0, z1, z)`` slabs of the volume whose defocus changes by at most one step in each tilt."""
    per_voxel = float(np.abs(corrector.per_z).max(initial=0.0))
    size = depth if per_voxel == 0 else max(1, int(corrector.step / per_voxel))
    count = max(1, math.ceil(depth / size))
    bounds = np.linspace(0, depth, count + 1).round().astype(int)
    for z0, z1 in zip(bounds[:-1], bounds[1:], strict=True):
        if z1 > z0:
            yield int(z0), int(z1), 0.5 * (z0 + z1 - 1) - center_z
