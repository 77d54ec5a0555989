"""Summing the aligned frames: exact Fourier shifts, optional local field, dose weighting, binning, halves.

Frames are added one at a time as full-size rfft2 spectra (:meth:`FrameSummer.add`), so memory holds a few
accumulators, never the movie. The global shift is a phase ramp (exact at any sub-pixel shift, no
interpolation blur); the local field, when there is one, is applied by bicubic resampling of the globally
shifted frame (a varying shift has no phase-ramp form). Odd and even frames (1st, 3rd, ... and 2nd, 4th,
... of the frames used) are accumulated separately, so the half sums for denoising come for free and the
full sum is their total. Fourier binning crops the accumulated spectra once, at the end.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tiltflow.motion import doseweight, fourier, local


@dataclass
class Sums:
    """The corrected images (float32, binned) and the plain full-size sum's spectrum for the thumbnail."""

    image: np.ndarray
    even: np.ndarray | None
    odd: np.ndarray | None
    plain_spectrum: object  # torch rfft2 of the unweighted, unbinned sum (for the power spectrum)


class FrameSummer:
    """Accumulate shifted (and dose-weighted) frames of one movie; :meth:`result` gives the images.

    ``exposures`` is ``(n_movie_frames, 2)`` start/end exposure per frame (e/A^2) when dose weighting,
    else None. ``out_shape`` is the binned output size.
    """

    def __init__(self, full_shape: tuple[int, int], out_shape: tuple[int, int], pixel_size: float, *,
                 exposures: np.ndarray | None = None, kv: float = 300.0, halves: bool = True,
                 local_coeffs: np.ndarray | None = None, device=None):
        import torch

        self.full_shape = tuple(full_shape)
        self.out_shape = tuple(out_shape)
        self.exposures = exposures
        self.kv = kv
        self.halves = halves
        self.local_coeffs = local_coeffs
        self.device = device
        h, w = self.full_shape
        cshape = (h, w // 2 + 1)
        zeros = lambda: torch.zeros(cshape, dtype=torch.complex64, device=device)  # noqa: E731
        self.acc = [zeros(), zeros()]  # odd, even (1-based frame numbers among the frames used)
        self.work = zeros()  # the shifted frame, reused: no full-size allocation per frame
        self.count = [0, 0]
        if exposures is not None:
            fy, fx = fourier.freqs(self.full_shape, device=device)
            self.filter = doseweight.RadialFilter(torch.sqrt(fx**2 + fy**2) / pixel_size)  # k in 1/A
            self.wsq = [torch.zeros(cshape, device=device), torch.zeros(cshape, device=device)]
            self.plain = zeros()
        self.n_added = 0

    def add(self, spectrum, movie_index: int, shift, z: float) -> None:
        """Add one frame: its full-size rfft2 ``spectrum``, 0-based index in the movie, global ``shift``
        (x, y px), and ``z`` (frames since the first frame used, for the local model).
        """
        import torch

        spec = fourier.shift(spectrum, np.asarray(shift, dtype=np.float32), self.full_shape, out=self.work)
        if self.local_coeffs is not None and z > 0:
            img = torch.fft.irfft2(spec, s=self.full_shape)
            img = local.resample(img, local.field(self.local_coeffs, z, self.full_shape, device=img.device))
            spec = torch.fft.rfft2(img)
        half = self.n_added % 2  # 0 = odd (1st, 3rd, ...), 1 = even
        if self.exposures is not None:
            n0, n1 = self.exposures[movie_index]
            wgt = self.filter(float(n0), float(n1), self.kv)
            self.plain += spec
            self.acc[half] += spec.mul_(wgt)
            self.wsq[half].addcmul_(wgt, wgt)
        else:
            self.acc[half] += spec
        self.count[half] += 1
        self.n_added += 1

    def _finish(self, acc, wsq, n: int):
        import torch

        if self.exposures is not None:
            acc = acc * torch.sqrt(n / wsq.clamp_min(1e-12))
        binned = fourier.crop(acc, self.full_shape, self.out_shape)
        return torch.fft.irfft2(binned, s=self.out_shape).float().cpu().numpy()

    def result(self) -> Sums:
        """The full, even and odd sums (binned, float32) and the unweighted full-size spectrum."""
        if self.n_added == 0:
            raise ValueError("no frames were added")
        total = self.acc[0] + self.acc[1]
        dw = self.exposures is not None
        wsq_total = (self.wsq[0] + self.wsq[1]) if dw else None
        image = self._finish(total, wsq_total, self.n_added)
        even = odd = None
        if self.halves and min(self.count) > 0:
            odd = self._finish(self.acc[0], self.wsq[0] if dw else None, self.count[0])
            even = self._finish(self.acc[1], self.wsq[1] if dw else None, self.count[1])
        plain = self.plain if dw else total
        return Sums(image, even, odd, plain)


def binned_shape(shape: tuple[int, int], factor: float) -> tuple[int, int]:
    """Output size for Fourier binning by ``factor`` (1 = unchanged), even in both axes."""
    if factor <= 1.0 + 1e-9:
        return tuple(shape)
    return fourier.even_crop_shape(shape, factor)

