"""Fourier shells of an ``rfftn`` array: one binning rule for the tomogram FSC and the report's power spectrum.

Shells are one voxel of the smallest axis wide and stop at Nyquist, so both measures read on the same axis.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Shells:
    """The shells of one ``rfftn`` shape: each kept coefficient's shell, how many shells, and how wide."""

    index: np.ndarray  # shell of each kept rfftn coefficient (flat)
    keep: np.ndarray  # which flat coefficients lie below Nyquist
    count: int
    width: float  # cycles/voxel

    def centres(self, pixel: float) -> np.ndarray:
        """Shell centres in 1/A for voxels of ``pixel`` A."""
        return (np.arange(self.count) + 0.5) * self.width / pixel

    def sum(self, values: np.ndarray) -> np.ndarray:
        """Per-shell sum of a real array shaped like the rfftn output."""
        return np.bincount(self.index, np.asarray(values).ravel()[self.keep], self.count)


def rfft_shells(shape: tuple[int, ...]) -> Shells:
    """Shells of ``np.fft.rfftn`` of an array of ``shape`` (last axis halved)."""
    freqs = [np.fft.fftfreq(n) for n in shape[:-1]] + [np.fft.rfftfreq(shape[-1])]
    k = np.sqrt(sum(np.meshgrid(*[q ** 2 for q in freqs], indexing="ij", sparse=True)))
    width = 1.0 / min(shape)
    shell = np.floor(k / width).astype(int).ravel()
    count = int(0.5 / width)
    keep = shell < count
    return Shells(shell[keep], keep, count, width)
