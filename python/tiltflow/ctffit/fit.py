"""Fit the CTF of one image (or of a region of it): the library entry point of the built-in estimator.

Pipeline, as CTFFIND4 but in torch (CPU or GPU):

1. Welch spectrum of the image at a fitting pixel (:mod:`~tiltflow.ctffit.spectrum`).
2. On a tilted specimen, tile spectra are stretched onto the defocus at the image centre, once for each
   sign of the defocus gradient (the handedness is not known here); the better-scoring sign is kept.
3. 1-D grid search of the mean defocus around ``search_centre`` (:mod:`~tiltflow.ctffit.search`).
4. 2-D refinement of defocus, astigmatism and optionally phase shift (:mod:`~tiltflow.ctffit.refine`),
   with a guard: if it wanders far from the 1-D answer, the 1-D answer is kept.
5. Fit resolution from the equi-phase average (:mod:`~tiltflow.ctffit.resolution`).

The fit keeps each sign's 1-D search and the spectrum it was made on (:class:`SignSearch`, one ``box x box``
image per sign), so that :func:`refit` can redo steps 4-5 with a series-level decision (one gradient sign, one
astigmatism, a defocus from the series' path) without the image.

Example (a sub-region, as the defocus-handedness check does)::

    fit = fit_defocus(image[:, :512], pixel_size=1.35, search_centre=30000, search_range=10000,
                      res_min=30, res_max=8, fit_astigmatism=False)
    fit.defocus  # mean defocus in A (underfocus positive)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from tiltflow.ctffit.background import Background, bspline_basis, ring_basis_size
from tiltflow.ctffit.model import Optics, dose_envelope, from_relion, to_relion
from tiltflow.ctffit.refine import Refined, annulus_pixels, refine_2d, score_2d
from tiltflow.ctffit.resolution import FitProfile, fit_profile
from tiltflow.ctffit.search import (
    rotational_average,
    search_defocus,
    smooth_log_background,
    widest_ring_period_k2,
)
from tiltflow.ctffit.spectrum import (
    TileSpectra,
    defocus_gradient,
    fitting_pixel_size,
    radius_grid,
    tile_defocus_offsets,
    tile_spectra,
    tilt_corrected_average,
)
from tiltflow.errors import TiltflowError

#: below this spread of defocus across the tiles (A) the tilt correction is skipped
MIN_GRADIENT_SPREAD = 150.0

#: the 2-D result is rejected if its mean defocus moved further than this from the 1-D result (A)
MAX_2D_SHIFT = 2000.0


@dataclass
class SignSearch:
    """The 1-D search for one sign of the defocus gradient, and the spectrum it was made on.

    Kept in :class:`CtfFit` so that a series-level refit (:func:`refit`) starts from it instead of reading the
    micrograph and computing its tile spectra again: ``flat`` is the tilt-corrected, flattened average at the
    fitting box (one ``box x box`` image per sign).
    """

    sign: int  # 0: no tilt correction
    result: object = field(repr=False)  # search.SearchResult of the final (finer) round
    flat: object = field(repr=False)  # torch (box, box), the spectrum the search and the 2-D stage see
    curve: tuple = field(repr=False)  # (defoci A, NCC per defocus, profile bins) of the whole window


@dataclass(frozen=True)
class FitSettings:
    """What the 2-D stage needs besides a :class:`SignSearch` (the same for a refit)."""

    optics: Optics
    pixel_size: float  # fitting pixel (A)
    k_lo: float  # 1/A
    k_hi: float
    defocus_min: float  # A, smallest defocus searched (annulus and background)
    res_min: float
    res_max: float
    pre_exposure: float
    fit_phase_shift: bool
    phase_shift: float  # degrees (fixed, or the start)
    astigmatism_restraint: float | None
    max_astigmatism: float
    iciness: float | None


@dataclass
class CtfFit:
    """Result of :func:`fit_defocus`. Defoci in A (underfocus positive), angles in degrees (RELION's)."""

    defocus_u: float
    defocus_v: float
    defocus_angle: float  # (-90, 90]; U >= V
    phase_shift: float  # degrees
    score: float  # normalised cross-correlation of spectrum and CTF^2 in the fitted band (as CTFFIND)
    resolution: float  # A up to which the rings fit; math.inf if they never did
    defocus_1d: float  # mean defocus of the 1-D search
    score_1d: float
    refined_2d: bool  # False if the 2-D refinement was rejected (the 1-D answer is reported)
    gradient_sign: int  # sign of the defocus gradient whose tilt correction fitted better (0: not used)
    gradient_scores: dict[int, float]  # 1-D score for each sign tried
    pixel_size: float  # pixel of the spectrum that was fitted
    res_min: float
    res_max: float
    iciness: float | None
    spectrum: object = field(repr=False)  # flattened 2-D spectrum that was fitted (torch, centred)
    profile: FitProfile | None = field(default=None, repr=False)
    #: the 1-D search over the whole window: (defoci A, NCC per defocus, number of profile bins)
    curve: tuple | None = field(default=None, repr=False)
    #: the same for every gradient sign tried (a series picks one sign for all its tilts afterwards)
    curves: dict = field(default_factory=dict, repr=False)
    #: every sign's 1-D search and the settings, for :func:`refit` (None for a fit made otherwise)
    searches: dict = field(default_factory=dict, repr=False)
    settings: FitSettings | None = field(default=None, repr=False)

    @property
    def defocus(self) -> float:
        """Mean defocus (A)."""
        return 0.5 * (self.defocus_u + self.defocus_v)

    @property
    def astigmatism(self) -> float:
        """|U - V| (A), rlnCtfAstigmatism."""
        return abs(self.defocus_u - self.defocus_v)


def flatten_spectrum(spectrum, pixel_size: float, k_lo: float, defocus_min: float | None = None,
                     optics: Optics | None = None):
    """Divide the spectrum by a smooth radial fall-off so that every band has comparable weight.

    With ``defocus_min`` (A, the smallest defocus searched) the fall-off is a spline in k^2 whose knots
    are twice the widest Thon-ring period there, as the search's background (so it cannot follow a ring:
    on damaged, late tilts the only rings left are the first, wide ones, and a fall-off with knots closer
    than their period divides part of each ring away and shifts the fitted defocus, by 50-300 nm on the
    simulated demo session); without it, a spline in k (10 knots), the older behaviour.
    """
    import torch

    box = spectrum.shape[-1]
    k_nyq = (box // 2 - 1) / (box * pixel_size)
    prof = rotational_average(spectrum, pixel_size, 0.7 * k_lo, k_nyq)
    if defocus_min is None:
        smooth = smooth_log_background(prof, n_basis=10)
    else:
        smooth = ring_free_log_background(prof, defocus_min, optics or Optics())
    r = radius_grid(box, pixel_size, spectrum.device).flatten()
    idx = torch.searchsorted(prof.k.contiguous(), r.contiguous()).clamp(1, len(prof.k) - 1)
    k0, k1 = prof.k[idx - 1], prof.k[idx]
    t = ((r - k0) / (k1 - k0)).clamp(0, 1)
    logb = torch.log(smooth[idx - 1]) * (1 - t) + torch.log(smooth[idx]) * t
    return (spectrum.flatten() / torch.exp(logb)).reshape(spectrum.shape)


def ring_free_log_background(profile, defocus_min: float, optics: Optics):
    """A smooth fit to log(profile) on a k^2 spline basis too coarse to follow Thon rings at any defocus
    from ``defocus_min`` up (knots about twice the widest ring period, :func:`ring_basis_size`).
    """
    import torch

    k2 = profile.k.double() ** 2
    lo, hi = float(k2[0]), float(k2[-1])
    n = ring_basis_size(hi - lo, widest_ring_period_k2(defocus_min, optics), lo=4, hi=10)
    basis = bspline_basis(k2, n, lo, hi)
    logv = torch.log(profile.value.double().clamp(min=1e-30))
    return torch.exp(Background(basis).fit(logv)).float()


def fit_defocus(
    image,
    pixel_size: float | None = None,
    *,
    search_centre: float,
    search_range: float = 20000.0,
    optics: Optics | None = None,
    res_min: float = 30.0,
    res_max: float = 5.0,
    box: int = 512,
    step: float = 100.0,
    fit_astigmatism: bool = True,
    fixed_astigmatism: tuple[float, float] | None = None,
    astigmatism_restraint: float | None = None,
    max_astigmatism: float = 3000.0,
    fit_phase_shift: bool = False,
    phase_shift: float = 0.0,
    tilt_angle: float = 0.0,
    tilt_axis: float = 0.0,
    fit_pixel_size: float | None = None,
    pre_exposure: float = 0.0,
    gradient_sign: int | None = None,
    fixed_defocus: float | None = None,
    min_tiles: int = 20,
    device=None,
) -> CtfFit:
    """Fit defocus (and astigmatism, phase shift) of ``image``, a 2-D array/tensor or :class:`TileSpectra`.

    ``search_centre`` and ``search_range`` (A) bound the mean defocus searched (``centre +- range``);
    ``res_min``/``res_max`` (A) the fitted band; ``phase_shift`` (deg) is the fixed phase shift, or the
    start when ``fit_phase_shift``. ``fixed_astigmatism`` = (|U - V| in A, angle in deg) keeps the
    astigmatism at that value (``fit_astigmatism=False`` alone fixes it at zero). ``tilt_angle``/
    ``tilt_axis`` (deg) switch on the tilt-corrected spectrum for tilted images (the axis as
    rlnTomoNominalTiltAxisAngle: from the image y axis). ``fit_pixel_size`` (A) is the pixel the spectrum
    is computed at (default: from ``res_max``; a tilt series passes one value for all tilts so that a
    dose-reduced ``res_max`` does not coarsen the tiles). ``box`` is reduced (halved, never below what the
    rings at ``res_max`` need) while the image holds fewer than ``min_tiles`` tiles: many small tiles beat
    a few large ones on small images. ``pre_exposure`` (e/A^2) weights the 1-D search by the expected
    fading of the rings with dose (:func:`~tiltflow.ctffit.model.dose_envelope`). ``gradient_sign`` (+1/-1)
    fixes the sign of the defocus gradient (the series' handedness) instead of trying both.
    ``fixed_defocus`` (A) keeps the mean defocus (a value decided for the whole series) and fits only the
    rest; the 1-D search still runs over ``search_centre +- search_range`` for its curve.
    """
    optics = optics or Optics()
    if res_max >= res_min:
        raise TiltflowError(f"maximum resolution {res_max} A must be finer than minimum resolution {res_min} A")
    d_max = search_centre + search_range
    if isinstance(image, TileSpectra):
        tiles = image
    else:
        if pixel_size is None:
            raise TiltflowError("fit_defocus needs the pixel size of the image")
        fit_px = max(fit_pixel_size or fitting_pixel_size(pixel_size, res_max), pixel_size)
        shape = tuple(int(n) for n in image.shape[-2:])
        use_box = choose_box(shape, pixel_size, fit_px, box, 1.0 / max(res_max, 2.0 * fit_px), d_max, optics,
                             min_tiles)
        tiles = tile_spectra(image, pixel_size, use_box, fit_px, device=device)
    px = tiles.pixel_size
    k_lo = 1.0 / res_min
    k_hi = min(1.0 / res_max, (tiles.box // 2 - 2) / (tiles.box * px))
    if k_hi <= k_lo * 1.2:
        raise TiltflowError(f"fitting band {res_min}-{res_max} A is empty at a {px:.2f} A fitting pixel")
    total = float(tiles.power.sum())
    if not math.isfinite(total) or total <= 0:
        raise TiltflowError("the image has no contrast (blank or constant)")
    d_min = max(1000.0, search_centre - search_range)

    # 1-D search, with the tilt correction for each gradient sign when the specimen is tilted
    signs = [0]
    g1 = defocus_gradient(tilt_angle, tilt_axis, 1)
    spread = float(tile_defocus_offsets(tiles, g1).abs().max()) if len(tiles.centres) else 0.0
    if spread > MIN_GRADIENT_SPREAD:
        signs = [gradient_sign] if gradient_sign in (1, -1) else [1, -1]
    phases = _phase_grid(fit_phase_shift, phase_shift)
    searches: dict[int, SignSearch] = {}
    for sign in signs:
        grad = defocus_gradient(tilt_angle, tilt_axis, sign)
        ref = search_centre
        res = curve = None
        for half_range, stp in ((search_range, step), (min(search_range, 3000.0), step / 2)):
            spec = tilt_corrected_average(tiles, ref, grad, optics) if sign else tiles.average()
            flat = flatten_spectrum(spec, px, k_lo, d_min, optics)
            prof = rotational_average(flat, px, k_lo, k_hi)
            centre = search_centre if res is None else res.defocus
            env = dose_envelope(prof.k, pre_exposure, optics.voltage) if pre_exposure > 0 else None
            res = search_defocus(prof, optics, centre, half_range, stp, phases, minimum=1000.0, envelope=env)
            if curve is None:
                curve = (res.defoci.cpu().numpy(), res.scores.max(dim=0).values.cpu().numpy(), len(prof.k))
            if not sign:
                break
            ref = res.defocus
        searches[sign] = SignSearch(sign, res, flat, curve)
    settings = FitSettings(optics=optics, pixel_size=px, k_lo=k_lo, k_hi=k_hi, defocus_min=d_min, res_min=res_min,
                           res_max=res_max, pre_exposure=pre_exposure, fit_phase_shift=fit_phase_shift,
                           phase_shift=phase_shift, astigmatism_restraint=astigmatism_restraint,
                           max_astigmatism=max_astigmatism, iciness=tiles.iciness)
    best = max(searches.values(), key=lambda x: x.result.score)  # the first sign on a tie, as before
    return _refine(best, searches, settings, fit_astigmatism, fixed_astigmatism, fixed_defocus)


def refit(fit: CtfFit, *, gradient_sign: int | None = None, fixed_astigmatism: tuple[float, float] | None = None,
          fixed_defocus: float | None = None) -> CtfFit:
    """Fit again what a series-level decision changed, from the 1-D searches ``fit`` kept (no image needed).

    ``gradient_sign`` picks that sign's search (else the best-scoring one, as :func:`fit_defocus`);
    ``fixed_astigmatism`` (|U - V| A, angle deg) and ``fixed_defocus`` (A) as in :func:`fit_defocus`. Only the
    2-D refinement and the fit resolution are computed again.
    """
    if not fit.searches or fit.settings is None:
        raise TiltflowError("this CTF fit kept no 1-D search to refit from")
    search = fit.searches.get(gradient_sign) if gradient_sign in (1, -1) else None
    if search is None:
        search = max(fit.searches.values(), key=lambda x: x.result.score)
    return _refine(search, fit.searches, fit.settings, True, fixed_astigmatism, fixed_defocus)


def _refine(search: SignSearch, searches: dict[int, SignSearch], s: FitSettings, fit_astigmatism: bool,
            fixed_astigmatism: tuple[float, float] | None, fixed_defocus: float | None) -> CtfFit:
    """The 2-D refinement of one sign's 1-D result, guarded by it, and the fit resolution."""
    res1d, flat = search.result, search.flat
    pixels = annulus_pixels(flat, s.pixel_size, s.k_lo, s.k_hi, s.defocus_min, s.optics, s.pre_exposure)
    start = None
    if fixed_astigmatism is not None:
        _, sx, sy = from_relion(fixed_astigmatism[0], 0.0, fixed_astigmatism[1])
        start, fit_astigmatism = (sx, sy), False
    defocus_1d = float(fixed_defocus) if fixed_defocus is not None else float(res1d.defocus)
    refined = refine_2d(pixels, s.optics, defocus_1d, res1d.phase_shift, fit_astigmatism=fit_astigmatism,
                        fit_phase_shift=s.fit_phase_shift, restraint=s.astigmatism_restraint,
                        max_astigmatism=s.max_astigmatism, start_astigmatism=start,
                        fit_defocus=fixed_defocus is None)
    ok = abs(refined.defocus - defocus_1d) <= MAX_2D_SHIFT and math.isfinite(refined.score)
    if not ok:
        ax0, ay0 = start or (0.0, 0.0)
        refined = Refined(defocus_1d, ax0, ay0, res1d.phase_shift,
                          float(score_2d(pixels, defocus_1d, ax0, ay0, s.optics, res1d.phase_shift)))
    profile = fit_profile(flat, s.pixel_size, refined.defocus, refined.ax, refined.ay, refined.phase_shift, s.optics,
                          s.k_lo)
    u, v, angle = to_relion(refined.defocus, refined.ax, refined.ay)
    return CtfFit(
        defocus_u=u, defocus_v=v, defocus_angle=angle,
        phase_shift=math.degrees(refined.phase_shift) % 180.0 if s.fit_phase_shift else s.phase_shift,
        score=refined.score, resolution=profile.resolution,
        defocus_1d=defocus_1d, score_1d=res1d.score, refined_2d=ok,
        gradient_sign=search.sign, gradient_scores={k: x.result.score for k, x in searches.items()},
        pixel_size=s.pixel_size, res_min=s.res_min, res_max=s.res_max, iciness=s.iciness,
        spectrum=flat, profile=profile, curve=search.curve, curves={k: x.curve for k, x in searches.items()},
        searches=searches, settings=s,
    )


def choose_box(shape: tuple[int, int], pixel_size: float, fit_pixel_size: float, box: int, k_hi: float,
               defocus_max: float, optics: Optics, min_tiles: int = 20) -> int:
    """Halve ``box`` while the image holds fewer than ``min_tiles`` half-overlapping tiles, as long as the
    Thon rings at ``k_hi`` for ``defocus_max`` keep at least 3 pixels per period (and the box 128 or more).
    """
    need = 3.0 * 2.0 * optics.wavelength * defocus_max * k_hi / fit_pixel_size  # box * px >= 3 / period
    b = int(box)
    while b // 2 >= max(128, need) and _n_tiles(shape, b * fit_pixel_size / pixel_size) < min_tiles:
        b = (b // 2 // 2) * 2
    return b


def _n_tiles(shape: tuple[int, int], native_box: float) -> int:
    n = 1
    for size in shape:
        step = native_box / 2
        n *= max(1, int((size - native_box) // step) + 1 + (1 if (size - native_box) % step else 0))
    return n


def _phase_grid(fit_phase_shift: bool, phase_shift_deg: float) -> tuple[float, ...]:
    """Phase shifts (rad) scanned by the 1-D search: 0-175 deg in 5 deg steps when fitted, else the fixed one."""
    if not fit_phase_shift:
        return (math.radians(phase_shift_deg),)
    return tuple(math.radians(5.0 * i) for i in range(36))
