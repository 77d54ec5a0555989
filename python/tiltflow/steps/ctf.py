"""``tiltflow ctf``: defocus, astigmatism (and phase shift) of every tilt, as RELION 5's CtfFind job.

Backends: ``builtin`` (:mod:`tiltflow.ctffit`, torch on CPU or GPU), ``ctffind4``/``ctffind5`` (the external
programs, :mod:`tiltflow.backends.ctffind`). Per tilt, as RELION does for tomography:

- the defocus search is centred on the nominal defocus (``rlnTomoNominalDefocus``, SerialEM's
  TargetDefocus in um, negative = underfocus) +- ``defocus_range`` um;
- the highest resolution fitted falls with the dose already received:
  ``res_max * exp(pre_exposure / dose_res_factor)``, capped at ``0.9 * res_min`` (RELION's
  ``--exp_factor_dose``; 0 switches it off; the built-in fit also weights frequencies by the expected
  radiation damage).

The built-in backend then looks at the whole series (what per-tilt CTFFIND cannot): one sign of the
defocus gradient for all tilted images (the handedness; logged with its evidence), a defocus path
through the acquisition that late, damaged tilts without clear rings follow (``series_prior``; 0 fits
every tilt on its own as RELION's CtfFind does) and, by default, one astigmatism for the series, taken
from the best tilts (``astigmatism="per-tilt"`` fits it on every tilt). The series pass
(:mod:`tiltflow.ctffit.series`) refits only the tilts its decisions change, from the spectra and 1-D searches
each tilt's first fit kept: every micrograph is read and its tile spectra computed once.

Outputs in ``<outdir>/<series>/frames/`` named after the micrograph (RELION's layout): ``<root>_PS.ctf``
(MRC diagnostic: spectrum beside the fitted CTF; ``rlnCtfImage`` = ``..._PS.ctf:mrc``), ``<root>_ctf.png``
(diagnostic + 1-D profiles, for the report), ``<root>_PS.txt`` and ``<root>_PS_avrot.txt`` (CTFFIND's text
outputs, whichever backend), and ``<root>_ctffind.log`` with CTFFIND. New per-tilt columns: rlnCtfImage,
rlnDefocusU/V (A, U >= V), rlnCtfAstigmatism, rlnDefocusAngle (deg), rlnCtfFigureOfMerit (normalised
cross-correlation), rlnCtfMaxResolution (A, 25 when worse or no fit, as RELION reports),
rlnCtfIceRingDensity (when the pixel reaches 3.5 A), rlnPhaseShift (deg, with ``--phase-shift``) and
tiltflow's ``tfCtfGradientSign`` (built-in only: see :func:`tiltflow.ctffit.spectrum.defocus_gradient`;
which sign of the defocus gradient across the tilt axis sharpened the rings, 0 if not tested).

Failure: a missing micrograph, a tool that fails or writes nothing stops the step with an error naming
the tilt; all files are written atomically and the STAR file last, so nothing half-written is left.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from tiltflow import star
from tiltflow.columns import TF_CTF_GRADIENT_SIGN, TF_CTF_PROBLEM
from tiltflow.errors import TiltflowError
from tiltflow.parallel import map_ordered, workers_for
from tiltflow.steps.common import each_tilt, option

if TYPE_CHECKING:
    from tiltflow.ctffit.series import SeriesDecision

log = logging.getLogger("tiltflow.ctf")

BACKENDS = ("builtin", "ctffind4", "ctffind5")
ASTIGMATISM_MODES = ("per-tilt", "series")
#: rlnCtfMaxResolution is capped here (RELION reports no worse value)
MAX_RESOLUTION_CAP = 25.0
#: search range (A) used when a tilt has no nominal defocus
FALLBACK_DEFOCUS = (5000.0, 80000.0)


@dataclass(frozen=True)
class Options:
    """The ctf step's options: field names, defaults and help are those of ``tiltflow ctf``."""

    backend: str = option("builtin", "builtin (torch, CPU or GPU), ctffind4 or ctffind5.")
    executable: str | None = option(
        None, "CTFFIND program (default: $TILTFLOW_CTFFIND, $RELION_CTFFIND_EXECUTABLE, PATH).")
    box: int = option(512, "Spectrum box in pixels (at the fitting pixel).", "px")
    res_min: float = option(30.0, "Lowest resolution fitted (A).", "A")
    res_max: float = option(5.0, "Highest resolution fitted (A) at zero dose.", "A")
    defocus_range: float = option(2.0, "Search half-width around each tilt's nominal defocus (um).", "um")
    defocus_step: float = option(100.0, "Defocus search step (A).", "A")
    astigmatism_restraint: float | None = option(
        None, "Expected astigmatism (A): larger values are penalised.", "A")  # CTFFIND's tolerance; None = off
    max_astigmatism: float = 3000.0  # A, largest |U - V| the built-in search considers
    phase_shift: bool = option(False, "Also fit a phase shift (phase-plate data).")
    phase_min: float = 0.0  # degrees (CTFFIND's search; the built-in one scans 0-180)
    phase_max: float = 180.0
    phase_step: float = 10.0
    slow_search: bool = option(False, "CTFFIND's slower, exhaustive 2-D initial search.",
                               flag="--slow-search/--fast-search")
    dose_res_factor: float = option(
        100.0, "Highest resolution fitted = res-max * exp(pre-exposure / this) (e/A^2); 0 = off.", "e/A^2")
    series_prior: float = option(
        0.05, "Spread (s.d., um) of each exposure's defocus about a smooth trend through the acquisition: "
              "tilts without clear rings follow the trend (built-in backend); 0 = every tilt on its own, as "
              "RELION's CtfFind.", "um")
    astigmatism: str = option(
        "series", "series: one astigmatism (from the best tilts) for all tilts, as it is a property of the "
                  "microscope; per-tilt: fitted on every tilt, as CTFFIND does (built-in backend).")
    png: str = option("all", "Diagnostic PNGs: all, none, or tilt numbers like 1,5,9.")  # 1-based, acquisition order
    device: str = option("auto", "auto, cpu, cuda or cuda:N (built-in backend).")
    extra_args: str = option("", "Passed verbatim to CTFFIND's command line.")
    timeout: float | None = 3600.0  # s per tilt for CTFFIND

    def validate(self) -> None:
        """Reject impossible settings before any image is read."""
        if self.backend not in BACKENDS:
            raise TiltflowError(f"--backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if not 0 < self.res_max < self.res_min:
            raise TiltflowError(f"need 0 < --res-max < --res-min (A), got {self.res_max:g} and {self.res_min:g}")
        if self.box < 64 or self.box % 2:
            raise TiltflowError(f"--box must be an even number of at least 64 pixels, got {self.box}")
        if not self.defocus_range > 0:
            raise TiltflowError(f"--defocus-range must be above 0 um, got {self.defocus_range:g}")
        if self.dose_res_factor < 0:
            raise TiltflowError(f"--dose-res-factor must be >= 0, got {self.dose_res_factor:g}")
        if self.series_prior < 0:
            raise TiltflowError(f"--series-prior must be >= 0 um, got {self.series_prior:g}")
        if self.astigmatism not in ASTIGMATISM_MODES:
            raise TiltflowError(f"--astigmatism must be one of {', '.join(ASTIGMATISM_MODES)}, got {self.astigmatism!r}")
        if self.astigmatism_restraint is not None and self.astigmatism_restraint <= 0:
            raise TiltflowError("--astigmatism-restraint must be above 0 A (leave it out for none)")
        _png_selection(self.png, 1)


@dataclass(frozen=True)
class CtfTilt:
    """One row of the table, resolved: its micrograph, geometry, dose so far and nominal defocus."""

    row: int
    label: str
    micrograph: Path
    root: str
    pre_exposure: float
    tilt_angle: float
    tilt_axis: float
    nominal_defocus: float | None  # A, underfocus positive
    name: str = ""  # rlnMicrographName as the STAR file has it (relative to the project root)
    no_image: str = ""  # why motioncor made no image of it (tfMovieProblem): not fitted, flagged


@dataclass(frozen=True)
class CtfTiltResult:
    """One tilt's CTF as the STAR file gets it (defoci A, RELION's U >= V), or why it has none."""

    defocus_u: float
    defocus_v: float
    defocus_angle: float
    phase_shift: float  # degrees
    score: float
    resolution: float  # A, uncapped (inf: no fit)
    ctf_image: Path
    iciness: float | None = None
    gradient_sign: int = 0
    problem: str = ""  # why this tilt has no fit ("" when it has one); the exclusion then drops it


def _no_fit(t: CtfTilt, problem: str) -> CtfTiltResult:
    """A tilt the fitter failed on: nominal defocus (so per-series statistics stay finite), no resolution."""
    d = t.nominal_defocus if t.nominal_defocus is not None else math.nan
    return CtfTiltResult(d, d, 0.0, 0.0, 0.0, math.nan, Path(), problem=problem)


class CtfBackend(Protocol):
    """One way of estimating the CTF of a series' tilts (built-in, CTFFIND4/5)."""

    def describe(self) -> str:
        """What runs, for the step's log (program and version, or device)."""
        ...

    def process(self, tilts: list[CtfTilt], frames: Path, png_rows: set[int], series: str) -> list[CtfTiltResult]:
        """Every tilt's result in ``tilts``' order (a failed tilt gets ``problem``); files into ``frames``."""
        ...


def tilt_res_max(res_max: float, res_min: float, pre_exposure: float, factor: float) -> float:
    """RELION's dose-dependent maximum resolution: ``res_max * exp(pre / factor)``, at most ``0.9 * res_min``."""
    if not factor or factor <= 0:
        return res_max
    return min(res_max * math.exp(max(pre_exposure, 0.0) / factor), 0.9 * res_min)


def run_series(ts: star.TiltSeriesStar, out_dir: str | Path, options: Options, root: str | Path) -> star.TiltSeriesStar:
    """Fit every tilt of ``ts``; diagnostics into ``out_dir/frames``; return the series with CTF columns."""
    options.validate()
    out_dir = Path(out_dir)
    frames = out_dir / "frames"
    tilts = _resolve_tilts(ts, root)
    pixel_size = ts.pixel_size
    optics = ts.optics
    voltage, cs, amp = optics.voltage, optics.cs, optics.amplitude_contrast
    png_rows = _png_selection(options.png, len(tilts))
    fitter: CtfBackend
    if options.backend == "builtin":
        fitter = _BuiltinFitter(options, pixel_size, voltage, cs, amp)
    else:
        fitter = _CtffindFitter(options, pixel_size, voltage, cs, amp)
    log.info("%s: CTF of %d tilts with %s (pixel %.3f A, %g kV, Cs %g mm, Q0 %g)", ts.name, len(tilts),
             fitter.describe(), pixel_size, voltage, cs, amp)
    fitted = [t for t in tilts if not t.no_image]  # a tilt motioncor flagged has nothing to fit
    png_fitted = {n for n, i in enumerate(i for i, t in enumerate(tilts) if not t.no_image) if i in png_rows}
    results = iter(fitter.process(fitted, frames, png_fitted, ts.name))
    return _with_columns(ts, tilts, [_no_fit(t, f"no motion-corrected image ({t.no_image})") if t.no_image
                                     else next(results) for t in tilts], options, Path(root))


def _res_text(res: float) -> str:
    return f"{res:.1f} A" if math.isfinite(res) else "no fit"


def _with_columns(ts: star.TiltSeriesStar, tilts: list[CtfTilt], results: list[CtfTiltResult],
                  options: Options, root: Path) -> star.TiltSeriesStar:
    new = ts.copy()
    tbl = new.tilts
    if [t.row for t in tilts] != list(tbl.index):
        raise TiltflowError(f"{ts.name}: internal error: tilts out of step with the table")
    values = {
        star.CTF_IMAGE: [star.image_ref(r.ctf_image, root) if not r.problem else "" for r in results],
        star.DEFOCUS_U: [round(r.defocus_u, 2) for r in results],
        star.DEFOCUS_V: [round(r.defocus_v, 2) for r in results],
        star.ASTIGMATISM: [round(abs(r.defocus_u - r.defocus_v), 2) for r in results],
        star.DEFOCUS_ANGLE: [round(r.defocus_angle, 3) for r in results],
        star.CTF_FOM: [round(r.score, 6) for r in results],
        # a failed tilt has NaN: "present but missing", which the exclusion reads as no fit at all
        star.CTF_MAX_RES: [math.nan if r.problem else round(min(r.resolution, MAX_RESOLUTION_CAP), 4)
                           if r.resolution > 0 else MAX_RESOLUTION_CAP for r in results],
    }
    if any(r.problem for r in results) or TF_CTF_PROBLEM in tbl:
        values[TF_CTF_PROBLEM] = [r.problem for r in results]
    if all(r.iciness is not None for r in results):
        values[star.ICE_RING] = [round(float(r.iciness), 6) for r in results]
    if options.phase_shift:
        values[star.PHASE_SHIFT] = [round(r.phase_shift, 3) for r in results]
    if options.backend == "builtin":
        values[TF_CTF_GRADIENT_SIGN] = [int(r.gradient_sign) for r in results]
    stale = [c for c in (star.ICE_RING, star.PHASE_SHIFT, TF_CTF_GRADIENT_SIGN) if c in tbl and c not in values]
    tbl = tbl.drop(columns=stale)  # from an earlier CTF estimation of the same series
    for col, vals in values.items():
        tbl[col] = vals  # one tilt per row, in the table's order
    new.tilts = tbl
    return new


# --- tilts -------------------------------------------------------------------------------------------


def _resolve_tilts(ts: star.TiltSeriesStar, root: str | Path) -> list[CtfTilt]:
    tbl = ts.tilts
    if star.MICROGRAPH not in tbl:
        raise TiltflowError(f"{ts.name}: no {star.MICROGRAPH} column; run motioncor before ctf")
    if len(tbl) == 0:
        raise TiltflowError(f"{ts.name}: the tilt table is empty")
    from tiltflow.steps.motioncor import movie_problems

    out, missing = [], []
    no_image = movie_problems(tbl)
    has_nominal = star.NOMINAL_DEFOCUS in tbl
    if not has_nominal:
        log.warning("%s: no %s column; searching defocus %g-%g A", ts.name, star.NOMINAL_DEFOCUS,
                    *FALLBACK_DEFOCUS)
    for i, (idx, row) in enumerate(tbl.iterrows()):
        name = str(row[star.MICROGRAPH])
        path = star.resolve(name, root)
        angle = _float(row.get(star.NOMINAL_TILT), 0.0)
        label = f"tilt {i + 1} ({Path(name).name}, {angle:+.1f} deg)"
        if (not name or name == "nan" or not path.is_file()) and not no_image[i]:
            missing.append((label, path))
        nominal = _float(row.get(star.NOMINAL_DEFOCUS), float("nan")) if has_nominal else float("nan")
        if math.isfinite(nominal) and nominal > star.NO_NOMINAL_DEFOCUS_UM:
            log.warning("%s: %s nominal defocus %+g um is positive (overfocus in SerialEM's sign); "
                        "searching around %g um underfocus", ts.name, label, nominal, nominal)
        nominal_a = star.nominal_defocus_angstrom(nominal)
        out.append(CtfTilt(row=idx, label=label, micrograph=path, root=Path(name).stem, tilt_angle=angle,
                         pre_exposure=_float(row.get(star.PRE_EXPOSURE), 0.0),
                         tilt_axis=_float(row.get(star.NOMINAL_AXIS), 0.0), nominal_defocus=nominal_a, name=name,
                         no_image=no_image[i]))
    if missing:
        label, path = missing[0]
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise TiltflowError(f"{ts.name}: micrograph of {label} not found{more}", path)
    return out


def _float(v, default: float) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return default
    return f if math.isfinite(f) else default


def _png_selection(text: str, n: int) -> set[int]:
    """Rows (0-based) that get a PNG: ``all``, ``none`` or 1-based tilt numbers ``"1,5,9"``."""
    t = (text or "none").strip().lower()
    if t == "all":
        return set(range(n))
    if t in ("none", ""):
        return set()
    try:
        nums = {int(x) for x in t.replace(";", ",").split(",") if x.strip()}
    except ValueError:
        raise TiltflowError(f"--png must be all, none or tilt numbers like 1,5,9; got {text!r}") from None
    if any(x < 1 for x in nums):
        raise TiltflowError(f"--png tilt numbers start at 1; got {text!r}")
    return {x - 1 for x in nums if x <= n}


def _search_range(t: CtfTilt, options: Options) -> tuple[float, float]:
    """(min, max) defocus searched (A)."""
    if t.nominal_defocus is None:
        return FALLBACK_DEFOCUS
    half = star.um_to_angstrom(options.defocus_range)
    return max(1000.0, t.nominal_defocus - half), t.nominal_defocus + half




def _title(series: str, t: CtfTilt, u: float, v: float, angle: float, res: float, score: float) -> str:
    return (f"{series} {t.label}: U {star.angstrom_to_um(u):.3f} V {star.angstrom_to_um(v):.3f} um, {angle:.0f} deg, "
            f"fit to {_res_text(res)}, CC {score:.3f}")


# --- built-in backend --------------------------------------------------------------------------------


class _BuiltinFitter:
    """The built-in estimator: every tilt on its own, then (optionally) the series-level pass."""

    def __init__(self, options: Options, pixel_size: float, voltage: float, cs: float, amp: float):
        from tiltflow.ctffit.model import Optics
        from tiltflow.ctffit.spectrum import fitting_pixel_size
        from tiltflow.device import device_name, get_device

        if options.extra_args:
            log.warning("--extra-args is for external programs; the built-in backend ignores %r",
                        options.extra_args)
        self.options = options
        self.pixel_size = pixel_size
        self.fit_pixel_size = fitting_pixel_size(pixel_size, options.res_max)
        self.optics = Optics(voltage, cs, amp)
        self.device = get_device(options.device)
        self._device_name = device_name(self.device)

    def describe(self) -> str:
        return f"the built-in estimator on {self._device_name}"

    def process(self, tilts: list[CtfTilt], frames: Path, png_rows: set[int], series: str) -> list[CtfTiltResult]:
        """Each tilt on its own, then (three fitted tilts or more) the series pass; then every tilt's files."""
        o = self.options

        def first_fit(t: CtfTilt):
            t0 = time.perf_counter()
            lo, hi = _search_range(t, o)
            fit = self.fit_tilt(t, 0.5 * (lo + hi), 0.5 * (hi - lo))
            _log_fit(series, t, fit, time.perf_counter() - t0)
            return fit

        t0 = time.perf_counter()
        workers = workers_for(len(tilts), self.device)  # tilts side by side (tiltflow.parallel)
        fits, problems = each_tilt(tilts, first_fit, series, "CTF fit", workers)
        t1 = time.perf_counter()
        good = [i for i in range(len(tilts)) if i not in problems]
        n_refit = 0
        if len(good) >= 3:  # the series pass sees the fitted tilts only
            decisions = self.series_pass([tilts[i] for i in good], [fits[i] for i in good], series, workers)
            for i, d in zip(good, decisions, strict=True):
                fits[i] = d.fit
            n_refit = sum(d.refitted for d in decisions)
        t2 = time.perf_counter()
        results = map_ordered(lambda i: _no_fit(tilts[i], problems[i]) if i in problems
                              else self.write(tilts[i], fits[i], frames, i in png_rows, series),
                              range(len(tilts)), workers)
        passes = {"first pass": t1 - t0, "series pass": t2 - t1, "outputs": time.perf_counter() - t2}
        log.info("%s: CTF first pass %.1f s, series pass %.1f s (%d of %d tilts refitted from their kept spectra), "
                 "outputs %.1f s", series, passes["first pass"], passes["series pass"], n_refit, len(good),
                 passes["outputs"], extra={"ctf_passes": {**passes, "tilts": len(tilts), "refitted": n_refit}})
        return results

    def fit_tilt(self, t: CtfTilt, centre: float, half_range: float):
        """The tilt's first fit: its micrograph read once, its spectra kept in the fit for the series pass."""
        from tiltflow.ctffit.fit import fit_defocus
        from tiltflow.io.mrc import read_mrc

        o = self.options
        image, file_px = read_mrc(t.micrograph)
        if image.ndim == 3 and image.shape[0] == 1:
            image = image[0]
        if image.ndim != 2:
            raise TiltflowError(f"{t.label}: expected a single image, found shape {image.shape}", t.micrograph)
        if not np.isfinite(image).all() or float(np.std(image)) == 0.0:
            raise TiltflowError(f"{t.label}: the micrograph is blank or has NaN values", t.micrograph)
        if file_px and abs(file_px - self.pixel_size) > 0.01 * self.pixel_size:
            log.warning("%s header pixel %.3f A differs from the series' %.3f A; using the series'", t.label,
                        file_px, self.pixel_size)
        res_max = tilt_res_max(o.res_max, o.res_min, t.pre_exposure, o.dose_res_factor)
        try:
            return fit_defocus(image, self.pixel_size, search_centre=centre, search_range=half_range,
                               optics=self.optics, res_min=o.res_min, res_max=res_max, box=o.box, step=o.defocus_step,
                               astigmatism_restraint=o.astigmatism_restraint, max_astigmatism=o.max_astigmatism,
                               fit_phase_shift=o.phase_shift, tilt_angle=t.tilt_angle, tilt_axis=t.tilt_axis,
                               fit_pixel_size=self.fit_pixel_size,
                               pre_exposure=t.pre_exposure if o.dose_res_factor > 0 else 0.0, device=self.device)
        except TiltflowError as exc:
            raise TiltflowError(f"{t.label}: {exc}", t.micrograph) from exc

    def series_pass(self, tilts: list[CtfTilt], fits: list, series: str, workers: int = 1) -> list[SeriesDecision]:
        """The series model (:func:`tiltflow.ctffit.series.series_model`) and the refits it calls for, logged."""
        from tiltflow.ctffit.series import apply_series_model, series_model

        o = self.options
        nominal = [t.nominal_defocus if t.nominal_defocus is not None else 0.0 for t in tilts]
        model = series_model(fits, nominal, star.um_to_angstrom(o.series_prior), o.astigmatism == "series")
        if model.gradient_sign:
            log.info("%s: defocus gradient sign %+d for the series (log-likelihood ratio %.1f; in RELION's "
                     "convention rlnTomoHand = %+d)", series, model.gradient_sign, model.evidence, -model.gradient_sign)
        if o.astigmatism == "series":
            if model.astigmatism is None:
                log.warning("%s: too few well-fitted tilts for a series astigmatism; kept per-tilt values", series)
            else:
                log.info("%s: series astigmatism |U - V| = %.0f A at %.1f deg", series, *model.astigmatism)
        decisions = apply_series_model(fits, model, agree=max(300.0, 3 * o.defocus_step), workers=workers)
        for t, d, path in zip(tilts, decisions, model.path, strict=True):
            if d.imposed:
                log.info("%s: %s best defocus %.0f A disagrees with the series; using %.0f A", series, t.label,
                         d.own_defocus, path)
            if d.refitted:
                _log_fit(series, t, d.fit, d.seconds)
        return decisions

    def write(self, t: CtfTilt, f, frames: Path, with_png: bool, series: str) -> CtfTiltResult:
        from tiltflow.ctffit.ctffind_files import AvrotProfile, CtffindRow, write_avrot, write_summary
        from tiltflow.ctffit.diagnostic import DiagnosticPlot, diagnostic_image, write_png
        from tiltflow.ctffit.model import from_relion
        from tiltflow.io.mrc import write_mrc

        o = self.options
        lo, hi = _search_range(t, o)
        paths = _paths(frames, t.root)
        mean, ax, ay = from_relion(f.defocus_u, f.defocus_v, f.defocus_angle)
        ps_rad = math.radians(f.phase_shift)
        diag = diagnostic_image(f.spectrum, f.pixel_size, mean, ax, ay, ps_rad, self.optics, 1.0 / o.res_min)
        write_mrc(paths["ctf"], diag, f.pixel_size)
        prof = f.profile
        k = prof.k.cpu().numpy()
        avrot = AvrotProfile(k=k, average_plain=prof.plain.cpu().numpy(), average=prof.average.cpu().numpy(),
                             fit=prof.fit.cpu().numpy(), cc=prof.cc.cpu().numpy(), cc_2sigma=prof.cc_sigma.cpu().numpy())
        program = "tiltflow built-in CTF fit (CTFFIND-compatible files)"
        res_col = f.resolution if math.isfinite(f.resolution) else 0.0
        write_summary(paths["txt"], program=program, input_file=t.name, pixel_size=f.pixel_size,
                      voltage=self.optics.voltage, cs=self.optics.cs, amplitude_contrast=self.optics.amplitude_contrast,
                      box=int(f.spectrum.shape[-1]), res_min=o.res_min, res_max=f.res_max, defocus_min=lo,
                      defocus_max=hi, rows=[CtffindRow(1, f.defocus_u, f.defocus_v, f.defocus_angle, ps_rad, f.score,
                                                       res_col)])
        write_avrot(paths["avrot"], program=program, input_file=t.name, profiles=[avrot])
        if with_png:
            write_png(paths["png"], DiagnosticPlot(
                image=diag, k=k, average=avrot.average, fit=avrot.fit, cc=avrot.cc, resolution=f.resolution,
                res_min=o.res_min, res_max=f.res_max,
                title=_title(series, t, f.defocus_u, f.defocus_v, f.defocus_angle, f.resolution, f.score)))
        if not f.refined_2d:
            log.warning("%s: %s 2-D refinement moved the defocus too far from the 1-D search; kept the 1-D "
                        "result", series, t.label)
        return CtfTiltResult(f.defocus_u, f.defocus_v, f.defocus_angle, f.phase_shift, f.score, f.resolution,
                       paths["ctf"], f.iciness, f.gradient_sign)


def _log_fit(series: str, t: CtfTilt, f, seconds: float) -> None:
    log.info("%s: %s defocus %.0f/%.0f A at %.1f deg, fit to %s, CC %.3f (%.1f s)", series, t.label,
             f.defocus_u, f.defocus_v, f.defocus_angle, _res_text(f.resolution), f.score, seconds)


def _paths(frames: Path, root: str) -> dict[str, Path]:
    return {
        "ctf": frames / f"{root}_PS.ctf",
        "txt": frames / f"{root}_PS.txt",
        "avrot": frames / f"{root}_PS_avrot.txt",
        "png": frames / f"{root}_ctf.png",
        "log": frames / f"{root}_ctffind.log",
    }


# --- CTFFIND backend ---------------------------------------------------------------------------------


class _CtffindFitter:
    def __init__(self, options: Options, pixel_size: float, voltage: float, cs: float, amp: float):
        from tiltflow.backends import ctffind, toolrun
        from tiltflow.backends.tools import TOOLS

        self.options = options
        self.pixel_size, self.voltage, self.cs, self.amp = pixel_size, voltage, cs, amp
        wanted = 5 if options.backend == "ctffind5" else 4
        self.exe = toolrun.find_executable(TOOLS[options.backend], options.executable)
        self.version = toolrun.detect_version(self.exe, TOOLS[options.backend])
        self.major = ctffind.major_version(self.version, wanted)
        if self.version and self.major != wanted:
            log.warning("--backend %s but %s reports version %s: answering CTFFIND %d's prompts",
                        options.backend, self.exe, self.version, self.major)
        if not self.version:
            log.warning("could not read CTFFIND's version from %s; assuming %d.x prompts", self.exe, wanted)

    def describe(self) -> str:
        return f"CTFFIND {self.version or '(version unknown)'} ({self.exe})"

    def process(self, tilts: list[CtfTilt], frames: Path, png_rows: set[int], series: str) -> list[CtfTiltResult]:
        """Every tilt on its own, as RELION's CtfFind job runs CTFFIND."""
        log.info("%s: CTFFIND fits every tilt on its own (--series-prior and --astigmatism series are "
                 "built-in backend options)", series)
        def one(item: tuple[int, CtfTilt]) -> CtfTiltResult:
            i, t = item
            t0 = time.perf_counter()
            r = self.fit(t, frames, i in png_rows, series)
            _log_fit(series, t, r, time.perf_counter() - t0)
            return r

        results, problems = each_tilt(list(enumerate(tilts)), one, series, "CTF fit")
        return [_no_fit(t, problems[i]) if i in problems else results[i] for i, t in enumerate(tilts)]

    def fit(self, t: CtfTilt, frames: Path, with_png: bool, series: str) -> CtfTiltResult:
        from tiltflow.backends.ctffind import CtffindParams, run_ctffind
        from tiltflow.ctffit.model import normalise_angle

        o = self.options
        lo, hi = _search_range(t, o)
        res_max = tilt_res_max(o.res_max, o.res_min, t.pre_exposure, o.dose_res_factor)
        params = CtffindParams(pixel_size=self.pixel_size, voltage=self.voltage, cs=self.cs,
                               amplitude_contrast=self.amp, box=o.box, res_min=o.res_min, res_max=res_max,
                               defocus_min=lo, defocus_max=hi, defocus_step=o.defocus_step,
                               astigmatism_restraint=o.astigmatism_restraint, slow_search=o.slow_search,
                               phase_shift=o.phase_shift, phase_min=o.phase_min, phase_max=o.phase_max,
                               phase_step=o.phase_step)
        out = run_ctffind(self.exe, t.micrograph, frames, t.root, params, major=self.major, version=self.version,
                          extra_args=o.extra_args, label=f"{series} {t.label}", timeout=o.timeout)
        r = out.row
        u, v, angle = r.defocus_1, r.defocus_2, r.azimuth
        if v > u:  # RELION's convention U >= V (CTFFIND already keeps it; be safe)
            u, v, angle = v, u, angle + 90.0
        angle = normalise_angle(angle)
        resolution = r.fit_resolution if r.fit_resolution > 0 else math.inf
        if with_png:
            self._png(out, frames, t, series, u, v, angle, resolution, r.cross_correlation, res_max)
        return CtfTiltResult(u, v, angle, math.degrees(r.phase_shift) % 180.0, r.cross_correlation, resolution,
                       out.diagnostic)

    def _png(self, out, frames: Path, t: CtfTilt, series: str, u, v, angle, resolution, score, res_max) -> None:
        from tiltflow.ctffit.diagnostic import DiagnosticPlot, write_png
        from tiltflow.io.mrc import read_mrc

        try:
            img, _ = read_mrc(out.diagnostic)
        except TiltflowError as exc:
            log.warning("%s: %s: no PNG, CTFFIND's diagnostic image is unreadable (%s)", series, t.label, exc)
            return
        img = np.asarray(img, dtype=np.float32)
        img = img[0] if img.ndim == 3 else img
        lo, hi = np.percentile(img, [1, 99]) if img.size else (0, 1)
        img = np.clip((img - lo) / max(hi - lo, 1e-30), 0, 1)
        p = out.profile
        empty = np.zeros(0)
        write_png(_paths(frames, t.root)["png"], DiagnosticPlot(
            image=img, k=p.k if p else empty, average=(p.average - p.average.mean()) if p else empty,
            fit=(p.fit - p.fit.mean()) if p else empty, cc=p.cc if p else empty, resolution=resolution,
            res_min=self.options.res_min, res_max=res_max,
            title=_title(series, t, u, v, angle, resolution, score)))
