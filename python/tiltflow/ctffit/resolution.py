"""Fit resolution: the spacing up to which the Thon rings of the spectrum follow the fitted CTF.

CTFFIND's idea, which users compare against: average the spectrum along lines of equal CTF phase
(an astigmatism-corrected rotational average), remove its background, and correlate it with the fitted
CTF^2 in a sliding window, bin by bin outwards from the minimum resolution. The fit holds as far as that
local correlation stays above 0.5 (CTFFIND's significance threshold) and above twice its noise level.

Stricter than CTFFIND in two ways, because tilt images are noisy enough to fool it: the window spans
about three CTF periods (a one-ring window correlates at 0.5 with noise), and the good stretch must
start at the minimum resolution and be contiguous (one-bin dips allowed) - a stretch of chance
correlation further out does not count. No stretch: no fit (``math.inf``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tiltflow.ctffit.background import Background, bspline_basis, ring_basis_size
from tiltflow.ctffit.model import Optics, ctf_squared, equiphase_k2
from tiltflow.ctffit.search import Profile, rotational_average, widest_ring_period_k2
from tiltflow.ctffit.spectrum import frequency_grid

SIGNIFICANCE_THRESHOLD = 0.5
#: half-width of the correlation window in distances between CTF extrema (6 extrema = 3 periods)
WINDOW_EXTREMA = 3.0


@dataclass
class FitProfile:
    """1-D view of a fit (CTFFIND's ``_avrot.txt`` rows): frequency, equi-phase average, fit, local CC."""

    k: object  # 1/A
    plain: object  # plain rotational average (flattened spectrum)
    average: object  # equi-phase (astigmatism-corrected) average, background removed
    fit: object  # CTF^2 fit, background removed and scaled to the average
    cc: object  # local correlation (window about one ring)
    cc_sigma: object  # 2 / sqrt(window size): the noise level of ``cc``
    resolution: float  # A; math.inf when the rings never fit


def equiphase_radius(box: int, pixel_size: float, defocus: float, ax: float, ay: float, optics: Optics,
                     device=None):
    """|k| (1/A) each pixel would have at defocus ``defocus`` without astigmatism, keeping its CTF phase."""
    import torch

    kx, ky = frequency_grid(box, pixel_size, device)
    k2 = kx * kx + ky * ky
    phi = torch.atan2(ky, kx)
    dz = defocus + ax * torch.cos(2 * phi) + ay * torch.sin(2 * phi)
    return equiphase_k2(k2, dz, defocus, optics).clamp(min=0).sqrt()


def _extrema_distance_bins(k, defocus: float, optics: Optics, dk: float):
    """Distance (bins) between neighbouring CTF^2 extrema at ``k``: a quarter period of chi, pi / 2."""
    lam = optics.wavelength
    cs_a = optics.cs * 1e7
    slope = (2 * math.pi * lam * defocus * k - 2 * math.pi * cs_a * lam**3 * k**3).abs().clamp(min=1e-9)
    return (math.pi / 2) / slope / dk


def fit_profile(flat_spectrum, pixel_size: float, defocus: float, ax: float, ay: float, phase_shift: float,
                optics: Optics, k_lo: float) -> FitProfile:
    """Equi-phase average, fitted CTF^2 and local correlation from ``k_lo`` to Nyquist; the fit resolution."""
    box = flat_spectrum.shape[-1]
    dk = 1.0 / (box * pixel_size)
    k_hi = (box // 2 - 1) * dk
    radius = equiphase_radius(box, pixel_size, defocus, ax, ay, optics, flat_spectrum.device)
    prof = rotational_average(flat_spectrum, pixel_size, k_lo, k_hi, radius=radius)
    plain = rotational_average(flat_spectrum, pixel_size, k_lo, k_hi)
    k = prof.k
    k2 = k.double() ** 2
    lo, hi = float(k2[0]), float(k2[-1])
    n = ring_basis_size(hi - lo, widest_ring_period_k2(defocus, optics))
    bg = Background(bspline_basis(k2, n, lo, hi).float())
    y = bg.residual(prof.value)
    model = bg.residual(ctf_squared(k2.float(), 1.0, 0.0, defocus, 0.0, 0.0, optics, phase_shift))
    scale = float((model * y).sum() / (model * model).sum().clamp(min=1e-30))
    extrema = _extrema_distance_bins(k, defocus, optics, dk)
    half = (WINDOW_EXTREMA * extrema).round().clamp(min=4, max=max(4, len(k) // 4))
    cc, sigma = _windowed_cc(y, model, half.long())
    resolution = _last_good(k, cc, sigma, int(min(float(2 * extrema[0]), len(k) - 1)))
    plain_y = plain.value if len(plain.value) == len(k) else _match(plain, k)
    return FitProfile(k=k, plain=plain_y, average=y, fit=model * max(scale, 0.0), cc=cc, cc_sigma=sigma,
                      resolution=resolution)


def _match(profile: Profile, k):
    import torch

    idx = torch.searchsorted(profile.k.contiguous(), k.contiguous()).clamp(max=len(profile.k) - 1)
    return profile.value[idx]


def _windowed_cc(y, m, half):
    """Correlation of ``y`` and ``m`` in a window of ``2 * half + 1`` bins around every bin (kept inside)."""
    import torch

    n = len(y)
    cy, cm = torch.cumsum(torch.cat([y.new_zeros(1), y.double()]), 0), torch.cumsum(torch.cat([m.new_zeros(1), m.double()]), 0)
    cyy = torch.cumsum(torch.cat([y.new_zeros(1), (y * y).double()]), 0)
    cmm = torch.cumsum(torch.cat([m.new_zeros(1), (m * m).double()]), 0)
    cym = torch.cumsum(torch.cat([m.new_zeros(1), (y * m).double()]), 0)
    i = torch.arange(n, device=y.device)
    width = (2 * half + 1).clamp(max=n)
    first = (i - half).clamp(min=0)
    first = torch.minimum(first, n - width)
    last = first + width  # exclusive
    cnt = width.double()

    def s(c):
        return c[last] - c[first]

    sy, sm = s(cy), s(cm)
    cov = s(cym) - sy * sm / cnt
    vy = s(cyy) - sy * sy / cnt
    vm = s(cmm) - sm * sm / cnt
    cc = torch.where((vy > 0) & (vm > 0), cov / (vy * vm).clamp(min=1e-300).sqrt(), torch.zeros_like(cov))
    # noise level: two sigma of the correlation of noise over the window (its bins are pairwise correlated)
    return cc.float(), (2.0 / (cnt / 2).sqrt()).float()


def _last_good(k, cc, sigma, start_within: int) -> float:
    """Resolution at the end of the good stretch starting in the first ``start_within`` bins; inf if none."""
    good = [(c >= SIGNIFICANCE_THRESHOLD and c >= s) for c, s in zip(cc.tolist(), sigma.tolist(), strict=True)]
    first = next((i for i, g in enumerate(good[:max(start_within, 1) + 1]) if g), None)
    if first is None:
        return math.inf
    last = first
    i = first
    while i + 1 < len(good):
        if good[i + 1]:
            i += 1
        elif i + 2 < len(good) and good[i + 2]:  # a one-bin dip
            i += 2
        else:
            break
        last = i
    if last - first < 2:
        return math.inf
    return 1.0 / float(k[last])
