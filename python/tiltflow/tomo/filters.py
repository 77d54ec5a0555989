"""Weighting filters for weighted back-projection (WBP) and the SIRT-like filter.

Back-projecting the tilts of a single-axis series fills Fourier space with central slices whose
density falls as 1/|k| away from the tilt axis, so each image is weighted by ``|k . n|`` (``n``
perpendicular to the tilt axis in the image) times its share of the angular range (half the gap to
its neighbours, as IMOD's exact weighting). Three refinements as in IMOD/AreTomo:

* the ramp does not go to zero: below ``floor`` (where neighbouring slices of a specimen of the
  reconstructed thickness overlap) it is flat, so the tomogram keeps its low frequencies and mean;
* an apodisation (Hann by default, ``cosine`` edge or none) damps the noisy high frequencies;
* ``sirt_iterations=N`` turns the ramp into the "SIRT-like" filter (Zeng 2012, IMOD ``FakeSIRTiterations``):
  the transfer function that N Landweber/SIRT iterations from zero would reach,
  ``ramp * (1 - (1 - floor/ramp)**N)``: the ramp at low frequency, a plateau above, less noise.

Frequencies are in cycles per pixel of the images; images are zero-padded (after removing their
mean, with a cosine-tapered border) to avoid wrap-around.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from tiltflow.alignment import TiltSeriesAlignment
from tiltflow.fftsize import next_fast_size
from tiltflow.tomo.projector import projection_matrices


@dataclass(frozen=True)
class FilterSettings:
    """How images are weighted before back-projection."""

    kind: str = "ramp"  # ramp | none (plain back-projection)
    apodization: str = "hann"  # hann | cosine | none
    cutoff: float = 0.5  # cycles/px where the apodisation reaches zero (0.5 = Nyquist)
    sirt_iterations: int = 0  # > 0: SIRT-like filter with that many iterations
    pad: float = 2.0  # FFT size / image size
    taper: int = 8  # px of cosine taper at the image border


def angular_weights(tilts_deg: np.ndarray) -> np.ndarray:
    """Each tilt's share of the angular range in radians (half the gap to each neighbour)."""
    t = np.deg2rad(np.asarray(tilts_deg, float))
    n = len(t)
    if n == 1:
        return np.ones(1)
    order = np.argsort(t)
    s = t[order]
    gaps = np.diff(s)
    w = np.empty(n)
    w[0] = gaps[0]
    w[-1] = gaps[-1]
    if n > 2:
        w[1:-1] = 0.5 * (gaps[:-1] + gaps[1:])
    out = np.empty(n)
    out[order] = np.maximum(w, 1e-6)
    return out


def axis_normals(alignment: TiltSeriesAlignment) -> np.ndarray:
    """(n, 2) unit image vectors (x, y) perpendicular to each tilt's projected tilt axis."""
    axis = projection_matrices(alignment)[:, :, 1]  # where the specimen y (tilt) axis lands
    axis = axis / np.linalg.norm(axis, axis=1, keepdims=True)
    return np.stack([axis[:, 1], -axis[:, 0]], axis=1)


def ramp_floor(thickness_px: float, alignment: TiltSeriesAlignment) -> float:
    """Frequency below which the ramp is held flat, in cycles/px.

    A unit-density slab ``thickness_px`` thick projects to ``thickness/cos(tilt)``; with weights
    ``dtheta * floor`` the back-projected sum then returns the density (the DC term is kept).
    """
    cos = np.clip(np.cos(np.deg2rad(alignment.y_tilt)), 0.05, 1.0)
    return float(1.0 / (max(thickness_px, 1.0) * np.sum(angular_weights(alignment.y_tilt) / cos)))


def _fft_size(n: int, pad: float) -> int:
    return next_fast_size(int(np.ceil(n * pad)))


#: elements of the padded spectra filtered in one batch of tilts (about 40 bytes each in temporaries)
BATCH_ELEMENTS = 2**21


def filter_2d(
    shape: tuple[int, int], normal: np.ndarray, floor: float, settings: FilterSettings, device=None
) -> torch.Tensor:
    """The rfft2 weighting (H, W//2+1) of one tilt (angular weight not included)."""
    return filters_2d(shape, np.asarray(normal, float).reshape(1, 2), floor, settings, device)[0]


def filters_2d(
    shape: tuple[int, int], normals: np.ndarray, floor: float, settings: FilterSettings, device=None
) -> torch.Tensor:
    """The rfft2 weightings (b, H, W//2+1) of tilts with ``normals`` (b, 2), computed in float64."""
    return _ramps(shape, normals, floor, settings, _apodization(shape, settings, device), device)


def _frequencies(shape: tuple[int, int], device) -> tuple[torch.Tensor, torch.Tensor]:
    h, w = shape
    ky = torch.fft.fftfreq(h, device=device, dtype=torch.float64)[:, None]
    kx = torch.fft.rfftfreq(w, device=device, dtype=torch.float64)[None, :]
    return ky, kx


def _apodization(shape: tuple[int, int], settings: FilterSettings, device) -> torch.Tensor | None:
    """The (H, W//2+1) apodisation in float64, the same for every tilt (None: no apodisation)."""
    ky, kx = _frequencies(shape, device)
    k = torch.sqrt(kx**2 + ky**2) / max(settings.cutoff, 1e-6)
    if settings.apodization == "hann":
        return torch.where(k < 1, 0.5 * (1 + torch.cos(np.pi * k.clamp(max=1))), 0.0)
    if settings.apodization == "cosine":  # flat to 0.8 cutoff, cosine edge to the cutoff
        e = ((k - 0.8) / 0.2).clamp(0, 1)
        return 0.5 * (1 + torch.cos(np.pi * e))
    if settings.apodization == "none":
        return None
    raise ValueError(f"unknown apodisation {settings.apodization!r}")


def _ramps(shape, normals, floor: float, settings: FilterSettings, apod: torch.Tensor | None, device):
    h, w = shape
    normals = np.asarray(normals, float).reshape(-1, 2)
    ky, kx = _frequencies(shape, device)
    if settings.kind == "none":
        f = torch.ones((len(normals), h, w // 2 + 1), dtype=torch.float64, device=device)
    elif settings.kind == "ramp":
        nrm = torch.as_tensor(normals, dtype=torch.float64, device=device)[:, :, None, None]
        f = (kx * nrm[:, 0] + ky * nrm[:, 1]).abs_().clamp_min_(floor)
        if settings.sirt_iterations > 0:
            f = f * (1.0 - (1.0 - floor / f) ** int(settings.sirt_iterations))
    else:
        raise ValueError(f"unknown filter {settings.kind!r}")
    if apod is not None:
        f *= apod
    return f.to(torch.float32)


def _taper(h: int, w: int, n: int, device) -> torch.Tensor:
    def ramp(m: int) -> torch.Tensor:
        t = torch.ones(m, device=device)
        k = min(n, m // 4)
        if k > 0:
            edge = 0.5 * (1 - torch.cos(torch.linspace(0, np.pi, k + 2, device=device)[1:-1]))
            t[:k] = edge
            t[m - k :] = edge.flip(0)
        return t

    return ramp(h)[:, None] * ramp(w)[None, :]


def irfft2_corner(spec: torch.Tensor, padded: tuple[int, int], keep: tuple[int, int]) -> torch.Tensor:
    """``irfft2(spec, s=padded)[..., :h, :w]`` computing only the kept corner.

    Columns first, on a transposed copy (the strided column FFT is slow on the CPU), then rows for the
    h kept rows only: 2.5x faster than irfft2, same values.
    """
    pw, (h, w) = padded[1], keep  # the column transform has the spectrum's own length, padded[0]
    cols = torch.fft.ifft(spec.transpose(-1, -2).contiguous(), dim=-1)[..., :h]
    return torch.fft.irfft(cols.transpose(-1, -2), n=pw, dim=-1)[..., :w]


def weight_images(
    images: torch.Tensor, alignment: TiltSeriesAlignment, thickness_px: float, settings: FilterSettings
) -> torch.Tensor:
    """Filtered copies of ``images`` (n, h, w), including each tilt's angular weight.

    Back-projecting the result (weights 1) is the weighted back-projection.
    """
    n, h, w = images.shape
    dev = images.device
    ph, pw = _fft_size(h, settings.pad), _fft_size(w, settings.pad)
    normals = axis_normals(alignment)
    floor = ramp_floor(thickness_px, alignment)
    dtheta = angular_weights(alignment.y_tilt) if settings.kind == "ramp" else np.ones(n) / n
    taper = _taper(h, w, settings.taper, dev)
    dc = floor if settings.kind == "ramp" else 1.0
    apod = _apodization((ph, pw), settings, dev)  # once: it is the same for every tilt
    out = torch.empty((n, h, w), dtype=torch.float32, device=dev)
    # tilts in batches: a few large operations rather than many small ones (CPU threads stay busy)
    batch = max(1, BATCH_ELEMENTS // (ph * (pw // 2 + 1)))
    for a in range(0, n, batch):
        b = min(n, a + batch)
        img = images[a:b].float()
        mean = img.mean(dim=(1, 2), keepdim=True)
        spec = torch.fft.rfft2((img - mean) * taper, s=(ph, pw))  # zero-mean, tapered: no edge jump
        spec *= _ramps((ph, pw), normals[a:b], floor, settings, apod, dev)
        res = irfft2_corner(spec, (ph, pw), (h, w))
        wt = torch.as_tensor(dtheta[a:b], dtype=torch.float32, device=dev)[:, None, None]
        torch.mul(res + mean * dc, wt, out=out[a:b])  # the mean at the DC weight: density survives
    return out
