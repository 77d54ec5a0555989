"""Dose weighting (exposure filtering) after Grant & Grigorieff, eLife 2015 (doi:10.7554/eLife.06980).

The signal at spatial frequency ``k`` (1/A) decays with the accumulated exposure ``N`` (e/A^2) as
``exp(-N / (2 Ne(k)))`` with the critical exposure ``Ne(k) = 0.245 k^-1.665 + 2.81`` measured at 300 kV.
Lower voltages damage more per electron: the exposure is divided by 0.8 at 200 kV and 0.64 at 100 kV
(RELION's factors), linearly interpolated in between.

Each frame's filter is the decay *averaged over the frame's own exposure* ``[N0, N1]`` (as cisTEM's unblur
does) instead of its value at the frame's end (RELION): ``2 Ne (exp(-N0/2Ne) - exp(-N1/2Ne)) / (N1 - N0)``.
``N0`` starts at the tilt's pre-exposure and counts every frame of the movie, including frames left out of
the sum (``--throw``/``--trunc``): their electrons still damaged the specimen.

The weighted sum is normalised so that its noise power equals that of a plain sum at every frequency
(``sum_i w_i F_i * sqrt(n / sum_i w_i^2)``): at frequencies no exposure has damaged the result equals the
plain sum, so dose-weighted and unweighted images share one scale.
"""

from __future__ import annotations

import numpy as np

from tiltflow.errors import TiltflowError

_A, _B, _C = 0.245, -1.665, 2.81


def voltage_factor(kv: float) -> float:
    """Relative damage per electron compared with 300 kV (the exposure is divided by this)."""
    kv = float(kv)
    if not 95.0 <= kv <= 305.0:
        raise TiltflowError(f"dose weighting is calibrated for 100-300 kV, got {kv:g} kV")
    return float(np.interp(kv, [100.0, 200.0, 300.0], [0.64, 0.8, 1.0]))


def critical_exposure(k):
    """Grant & Grigorieff's critical exposure (e/A^2) at spatial frequency ``k`` (1/A, tensor or array)."""
    import torch

    if isinstance(k, torch.Tensor):
        return _A * torch.pow(k.clamp_min(1e-6), _B) + _C
    return _A * np.power(np.maximum(np.asarray(k, dtype=float), 1e-6), _B) + _C


def frame_exposures(n_frames: int, dose_per_frame: float, pre_exposure: float) -> np.ndarray:
    """``(n, 2)`` exposure at the start and end of every movie frame (e/A^2, all frames counted)."""
    start = pre_exposure + dose_per_frame * np.arange(n_frames, dtype=float)
    return np.stack([start, start + dose_per_frame], axis=1)


def frame_filter(k, n_start: float, n_end: float, kv: float = 300.0):
    """The exposure filter of one frame at frequencies ``k`` (1/A): decay averaged over ``[n_start, n_end]``.

    ``k`` is a torch tensor or a numpy array; the result is of the same kind.
    """
    import torch

    is_torch = isinstance(k, torch.Tensor)
    exp, expm1 = (torch.exp, torch.expm1) if is_torch else (np.exp, np.expm1)
    f = voltage_factor(kv)
    ne2 = 2.0 * critical_exposure(k)
    a, b = n_start / f, n_end / f
    if b - a <= 1e-9:
        return exp(-a / ne2)
    # exp(-a/ne2) - exp(-b/ne2) written with expm1: no cancellation where ne2 >> b - a (low resolution)
    return exp(-a / ne2) * (-expm1(-(b - a) / ne2)) * ne2 / (b - a)


class RadialFilter:
    """Frame filters on a 2-D frequency grid via a 1-D radial table (one gather instead of two exp per pixel).

    ``k`` is the grid's spatial frequency (1/A); the table samples the filter every ``k_max / n_bins``,
    far finer than the filter changes, and is linearly interpolated.
    """

    def __init__(self, k, n_bins: int = 4096):
        import torch

        self.k_max = float(k.max()) * (1 + 1e-6) + 1e-12
        self.n_bins = n_bins
        pos = k.reshape(-1) / self.k_max * (n_bins - 1)
        self.lo = pos.floor().long().clamp(0, n_bins - 2)
        self.hi = self.lo + 1  # kept: a full-size index tensor per frame was allocation churn on 4k frames
        self.frac = (pos - self.lo).float()
        self.shape = k.shape
        self.table_k = torch.linspace(0.0, self.k_max, n_bins, device=k.device, dtype=torch.float64)

    def __call__(self, n_start: float, n_end: float, kv: float = 300.0):
        """The filter for a frame exposed from ``n_start`` to ``n_end`` e/Å², on the grid's shape."""
        import torch

        table = frame_filter(self.table_k, n_start, n_end, kv).float()
        out = table[self.lo]
        torch.lerp(out, table[self.hi], self.frac, out=out)  # lo (1 - frac) + hi frac, in place
        return out.reshape(self.shape)

