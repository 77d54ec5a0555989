"""The amplitude-spectrum thumbnail written next to each corrected image (RELION's ``<root>_PS.mrc``).

RELION's own motion correction writes, for CTFFIND's ``--amplitude-spectrum-input``, a square amplitude
spectrum (``|F|``, origin at the centre) resampled to 512 pixels, restricted to 1.4 A Nyquist when the
pixel is finer (CTFFIND 4.1's target pixel), with the spectrum's effective pixel size in the header. Here
the spectrum is the average over overlapping square tiles of the unweighted sum (Welch's method, as
CTFFIND averages boxes), which gives the same kind of image with less noise; tile size is chosen so that
the 1.4 A crop is 512 pixels whenever the image is large enough.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tiltflow.motion import fourier

PS_SIZE = 512
TARGET_PIXEL = 1.4  # A, CTFFIND 4.1's resampling target (RELION's choice for _PS.mrc)


@dataclass
class Spectrum:
    """A centred ``size x size`` amplitude spectrum and the pixel size whose Nyquist is its edge."""

    image: np.ndarray
    pixel_size: float


#: tiles transformed together: bounded memory (16 x 512^2 complex = 32 MiB) with the loop out of Python
TILE_BATCH = 16


def amplitude_spectrum(image, pixel_size: float, size: int = PS_SIZE, target_pixel: float = TARGET_PIXEL) -> Spectrum:
    """Welch-averaged amplitude spectrum of a real ``image`` (``(h, w)`` torch tensor or numpy array)."""
    import torch
    import torch.nn.functional as F

    x = torch.as_tensor(np.asarray(image) if not isinstance(image, torch.Tensor) else image).float()
    h, w = x.shape
    ratio = max(1.0, target_pixel / pixel_size)  # > 1: crop the spectrum to target_pixel Nyquist
    tile = int(round(size * ratio / 2)) * 2
    tile = max(2, min(tile, (min(h, w) // 2) * 2))
    step = max(1, tile // 2)
    win = fourier.edge_taper((tile, tile), max(2, tile // 16), device=x.device)
    corners = [(y0, x0) for y0 in _starts(h, tile, step) for x0 in _starts(w, tile, step)]
    acc = torch.zeros(tile, tile // 2 + 1, device=x.device)
    for c in range(0, len(corners), TILE_BATCH):  # tiles in batches: one batched real FFT, no per-tile loop
        t = torch.stack([x[y0:y0 + tile, x0:x0 + tile] for y0, x0 in corners[c:c + TILE_BATCH]])
        t = (t - t.mean(dim=(-2, -1), keepdim=True)) * win
        acc += torch.fft.rfft2(t).abs().sum(dim=0)
    half = acc / max(len(corners), 1)
    # the full plane from the half plane: |F(-k)| = |F(k)| for a real image
    neg = (-torch.arange(tile, device=x.device)) % tile
    full = torch.cat([half, half[neg, 1:(tile + 1) // 2].flip(-1)], dim=-1)
    ps = torch.fft.fftshift(full)
    keep = max(2, int(round(tile / ratio / 2)) * 2)
    c0 = tile // 2 - keep // 2
    ps = ps[c0:c0 + keep, c0:c0 + keep]
    if keep != size:
        ps = F.interpolate(ps.reshape(1, 1, keep, keep), size=(size, size), mode="bilinear",
                           align_corners=False, antialias=keep > size).reshape(size, size)
    spectrum_pixel = pixel_size * tile / keep
    return Spectrum(ps.cpu().numpy().astype(np.float32), float(spectrum_pixel))


def _starts(n: int, tile: int, step: int) -> list[int]:
    starts = list(range(0, n - tile + 1, step))
    if starts[-1] != n - tile:
        starts.append(n - tile)
    return starts
