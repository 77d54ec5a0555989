"""1-D defocus search: the rotational average of the spectrum against CTF^2 on a grid of defoci.

Why 1-D first: averaging around rings multiplies the signal by the number of pixels on each ring, so a
plain grid over the whole search range (centred on the nominal defocus) is cheap and finds the right
basin; the 2-D refinement then only has to polish. This is CTFFIND4's default strategy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tiltflow.ctffit.background import Background, bspline_basis, ring_basis_size
from tiltflow.ctffit.model import Optics, ctf_squared


@dataclass
class Profile:
    """A rotational average: ``k`` (1/A) bin centres, ``value`` the mean of each bin, ``count`` pixels."""

    k: object  # torch.Tensor
    value: object
    count: object


def rotational_average(spectrum, pixel_size: float, k_lo: float, k_hi: float, radius=None) -> Profile:
    """Average ``spectrum`` (centred, box x box) in rings one Fourier pixel wide between ``k_lo`` and ``k_hi``.

    ``radius`` (1/A per pixel) replaces |k| when given: an astigmatism- or tilt-corrected radius turns the
    plain rotational average into CTFFIND's equi-phase average.
    """
    import torch

    from tiltflow.ctffit.spectrum import radius_grid

    box = spectrum.shape[-1]
    dk = 1.0 / (box * pixel_size)
    r = radius_grid(box, pixel_size, spectrum.device) if radius is None else radius
    b = torch.round(r / dk).long()
    lo, hi = int(math.ceil(k_lo / dk)), int(math.floor(k_hi / dk))
    hi = min(hi, box // 2 - 1)
    keep = (b >= lo) & (b <= hi)
    n = hi - lo + 1
    idx = (b[keep] - lo).flatten()
    total = torch.zeros(n, dtype=torch.float64, device=spectrum.device).index_add_(0, idx, spectrum[keep].double())
    count = torch.zeros(n, dtype=torch.float64, device=spectrum.device).index_add_(
        0, idx, torch.ones_like(idx, dtype=torch.float64)
    )
    ok = count > 0
    k = (torch.arange(n, dtype=torch.float64, device=spectrum.device) + lo) * dk
    return Profile(k=k[ok].float(), value=(total[ok] / count[ok]).float(), count=count[ok].float())


def smooth_log_background(profile: Profile, n_basis: int = 8):
    """A smooth fit to log(profile): the radial fall-off of the spectrum, used to flatten it."""
    import torch

    basis = bspline_basis(profile.k, n_basis, float(profile.k[0]), float(profile.k[-1]))
    logv = torch.log(profile.value.clamp(min=1e-30))
    return torch.exp(Background(basis).fit(logv))


@dataclass
class SearchResult:
    """Best defocus (A) and phase shift (rad) of the 1-D search, its score and the scanned grid."""

    defocus: float
    phase_shift: float
    score: float
    defoci: object  # torch.Tensor (n,)
    scores: object  # torch.Tensor (n_phase, n)


def widest_ring_period_k2(defocus_min: float, optics: Optics) -> float:
    """Thon-ring period in k^2 (1/A^2) at the smallest defocus searched: 1 / (lambda * defocus)."""
    return 1.0 / (optics.wavelength * max(defocus_min, 1000.0))


def profile_background(profile: Profile, defocus_min: float, optics: Optics) -> Background:
    """The smooth basis (in k^2, where rings are evenly spaced) projected out of profiles and models."""
    k2 = profile.k.double() ** 2
    lo, hi = float(k2[0]), float(k2[-1])
    n = ring_basis_size(hi - lo, widest_ring_period_k2(defocus_min, optics))
    return Background(bspline_basis(k2, n, lo, hi).float())


def score_defoci(profile: Profile, defoci, optics: Optics, phase_shift: float = 0.0, background=None,
                 envelope=None):
    """Normalised correlation of the background-free profile with background-free CTF^2 for each defocus.

    ``envelope`` (per bin) is the expected relative strength of the rings (e.g. :func:`dose_envelope`):
    the model is envelope x CTF^2, a matched filter that ignores bins where no signal is expected.
    """
    bg = background or profile_background(profile, float(defoci.min()), optics)
    k2 = (profile.k.double() ** 2).float()
    w = profile.count.sqrt()  # noise of a ring mean falls as 1/sqrt(pixels)
    y = bg.residual(profile.value)
    models = ctf_squared(k2[None, :], 1.0, 0.0, defoci[:, None], 0.0, 0.0, optics, phase_shift)
    if envelope is not None:
        models = models * envelope[None, :]
    m = bg.residual(models)
    yw, mw = y * w, m * w
    num = (mw * yw[None, :]).sum(dim=1)
    den = mw.norm(dim=1) * yw.norm() + 1e-30
    return num / den


def search_defocus(
    profile: Profile,
    optics: Optics,
    centre: float,
    half_range: float,
    step: float = 100.0,
    phase_shifts=(0.0,),
    minimum: float = 1000.0,
    envelope=None,
) -> SearchResult:
    """Grid search of defocus in ``centre +- half_range`` (A) and over ``phase_shifts`` (rad), then a local
    golden-section polish of the defocus around the best grid point.
    """
    import torch

    lo = max(minimum, centre - half_range)
    hi = max(lo + step, centre + half_range)
    defoci = torch.arange(lo, hi + 0.5 * step, step, dtype=torch.float32, device=profile.k.device)
    bg = profile_background(profile, lo, optics)
    scores = torch.stack([score_defoci(profile, defoci, optics, float(p), bg, envelope) for p in phase_shifts])
    flat = int(torch.argmax(scores))
    ip, idf = divmod(flat, len(defoci))
    best_p = float(phase_shifts[ip])

    def f(d: float) -> float:
        dd = torch.tensor([d], dtype=torch.float32, device=profile.k.device)
        return float(score_defoci(profile, dd, optics, best_p, bg, envelope)[0])

    d_best = _golden_max(f, float(defoci[idf]) - step, float(defoci[idf]) + step, tol=1.0)
    s_best = f(d_best)
    if s_best < float(scores[ip, idf]):
        d_best, s_best = float(defoci[idf]), float(scores[ip, idf])
    return SearchResult(defocus=d_best, phase_shift=best_p, score=s_best, defoci=defoci, scores=scores)


def _golden_max(f, a: float, b: float, tol: float = 1.0, max_iter: int = 60) -> float:
    """Maximum of a unimodal ``f`` on [a, b] by golden-section search."""
    g = (math.sqrt(5) - 1) / 2
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = f(c), f(d)
    for _ in range(max_iter):
        if b - a < tol:
            break
        if fc > fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = f(d)
    return 0.5 * (a + b)
