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
from the best tilts (``astigmatism="per-tilt"`` fits it on every tilt).

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
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tiltflow import star
from tiltflow.errors import TiltflowError
from tiltflow.steps.common import each_tilt, execute_series_step

log = logging.getLogger("tiltflow.ctf")

BACKENDS = ("builtin", "ctffind4", "ctffind5")
ASTIGMATISM_MODES = ("per-tilt", "series")
TF_GRADIENT_SIGN = "tfCtfGradientSign"
TF_CTF_PROBLEM = "tfCtfProblem"  # why a tilt has no CTF fit (empty when it has one)
#: rlnCtfMaxResolution is capped here (RELION reports no worse value)
MAX_RESOLUTION_CAP = 25.0
#: search range (A) used when a tilt has no nominal defocus
FALLBACK_DEFOCUS = (5000.0, 80000.0)


@dataclass(frozen=True)
class CtfOptions:
    """The step's options (the CLI's, with the same defaults)."""

    backend: str = "builtin"
    executable: str | None = None
    box: int = 512
    res_min: float = 30.0  # A
    res_max: float = 5.0  # A, before the dose-dependent relaxation
    defocus_range: float = 2.0  # um, half-width of the search around the nominal defocus
    defocus_step: float = 100.0  # A
    astigmatism_restraint: float | None = None  # A (CTFFIND's tolerance); None = unrestrained
    max_astigmatism: float = 3000.0  # A, largest |U - V| the built-in search considers
    phase_shift: bool = False
    phase_min: float = 0.0  # degrees (CTFFIND's search; the built-in one scans 0-180)
    phase_max: float = 180.0
    phase_step: float = 10.0
    slow_search: bool = False  # CTFFIND's "slower, more exhaustive search"
    dose_res_factor: float = 100.0  # e/A^2; 0 = no dose dependence
    series_prior: float = 0.05  # um, s.d. of an exposure's defocus about the smooth trend (focus error); 0 = off
    astigmatism: str = "series"  # one astigmatism for the whole series (built-in), or "per-tilt" (CTFFIND's)
    device: str = "auto"
    extra_args: str = ""
    png: str = "all"  # "all", "none" or tilt numbers "1,5,9" (1-based, acquisition order)
    timeout: float | None = 3600.0  # s per tilt for CTFFIND
    root: Path = field(default_factory=lambda: Path("."))  # project root: STAR paths are relative to it

    def check(self) -> None:
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


@dataclass
class _Tilt:
    row: int
    label: str
    micrograph: Path
    root: str
    pre_exposure: float
    tilt_angle: float
    tilt_axis: float
    nominal_defocus: float | None  # A, underfocus positive
    no_image: str = ""  # why motioncor made no image of it (tfMovieProblem): not fitted, flagged


@dataclass
class _Result:
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


def _no_fit(t: _Tilt, problem: str) -> _Result:
    """A tilt the fitter failed on: nominal defocus (so per-series statistics stay finite), no resolution."""
    d = t.nominal_defocus if t.nominal_defocus is not None else math.nan
    return _Result(d, d, 0.0, 0.0, 0.0, math.nan, Path(), problem=problem)


def tilt_res_max(res_max: float, res_min: float, pre_exposure: float, factor: float) -> float:
    """RELION's dose-dependent maximum resolution: ``res_max * exp(pre / factor)``, at most ``0.9 * res_min``."""
    if not factor or factor <= 0:
        return res_max
    return min(res_max * math.exp(max(pre_exposure, 0.0) / factor), 0.9 * res_min)


def run_from_star(in_star: str | Path, step_dir: str | Path, options: CtfOptions) -> Path:
    """Estimate the CTF of one tilt series: read ``in_star``, write ``<step_dir>/<name>/<name>.star``."""
    options.check()
    return execute_series_step("ctf", in_star, step_dir, lambda ts, out: run(ts, out, options))


def run(ts: star.TiltSeriesStar, out_dir: str | Path, options: CtfOptions) -> star.TiltSeriesStar:
    """Fit every tilt of ``ts``; diagnostics into ``out_dir/frames``; return the series with CTF columns."""
    options.check()
    out_dir = Path(out_dir)
    frames = out_dir / "frames"
    tilts = _resolve_tilts(ts, options)
    pixel_size = ts.pixel_size
    g = ts.globals
    voltage = float(g.get(star.VOLTAGE) or 300.0)
    cs = float(g.get(star.CS) if g.get(star.CS) is not None else 2.7)
    amp = float(g.get(star.AMP_CONTRAST) if g.get(star.AMP_CONTRAST) is not None else 0.1)
    png_rows = _png_selection(options.png, len(tilts))
    if options.backend == "builtin":
        fitter = _BuiltinFitter(options, pixel_size, voltage, cs, amp)
    else:
        fitter = _CtffindFitter(options, pixel_size, voltage, cs, amp)
    log.info("%s: CTF of %d tilts with %s (pixel %.3f A, %g kV, Cs %g mm, Q0 %g)", ts.name, len(tilts),
             fitter.describe(), pixel_size, voltage, cs, amp)
    fitted = [t for t in tilts if not t.no_image]  # a tilt motioncor flagged has nothing to fit
    png_fitted = {n for n, i in enumerate(i for i, t in enumerate(tilts) if not t.no_image) if i in png_rows}
    results = iter(fitter.run(fitted, frames, png_fitted, ts.name))
    return _with_columns(ts, tilts, [_no_fit(t, f"no motion-corrected image ({t.no_image})") if t.no_image
                                     else next(results) for t in tilts], options)


def _res_text(res: float) -> str:
    return f"{res:.1f} A" if math.isfinite(res) else "no fit"


def _with_columns(ts: star.TiltSeriesStar, tilts: list[_Tilt], results: list[_Result],
                  options: CtfOptions) -> star.TiltSeriesStar:
    new = ts.copy()
    tbl = new.tilts
    if [t.row for t in tilts] != list(tbl.index):
        raise TiltflowError(f"{ts.name}: internal error: tilts out of step with the table")
    values = {
        star.CTF_IMAGE: [f"{_rel(r.ctf_image, options.root)}:mrc" if not r.problem else "" for r in results],
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
        values[TF_GRADIENT_SIGN] = [int(r.gradient_sign) for r in results]
    stale = [c for c in (star.ICE_RING, star.PHASE_SHIFT, TF_GRADIENT_SIGN) if c in tbl and c not in values]
    tbl = tbl.drop(columns=stale)  # from an earlier CTF estimation of the same series
    for col, vals in values.items():
        tbl[col] = vals  # one tilt per row, in the table's order
    new.tilts = tbl
    return new


# --- tilts -------------------------------------------------------------------------------------------


def _resolve_tilts(ts: star.TiltSeriesStar, options: CtfOptions) -> list[_Tilt]:
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
        path = star.resolve(name, options.root)
        angle = _float(row.get(star.NOMINAL_TILT), 0.0)
        label = f"tilt {i + 1} ({Path(name).name}, {angle:+.1f} deg)"
        if (not name or name == "nan" or not path.is_file()) and not no_image[i]:
            missing.append((label, path))
        nominal = _float(row.get(star.NOMINAL_DEFOCUS), float("nan")) if has_nominal else float("nan")
        if math.isfinite(nominal) and nominal > 0.05:
            log.warning("%s: %s nominal defocus %+g um is positive (overfocus in SerialEM's sign); "
                        "searching around %g um underfocus", ts.name, label, nominal, nominal)
        nominal_a = abs(nominal) * 1e4 if math.isfinite(nominal) and abs(nominal) > 0.05 else None
        out.append(_Tilt(row=idx, label=label, micrograph=path, root=Path(name).stem, tilt_angle=angle,
                         pre_exposure=_float(row.get(star.PRE_EXPOSURE), 0.0),
                         tilt_axis=_float(row.get(star.NOMINAL_AXIS), 0.0), nominal_defocus=nominal_a,
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


def _search_range(t: _Tilt, options: CtfOptions) -> tuple[float, float]:
    """(min, max) defocus searched (A)."""
    if t.nominal_defocus is None:
        return FALLBACK_DEFOCUS
    half = options.defocus_range * 1e4
    return max(1000.0, t.nominal_defocus - half), t.nominal_defocus + half


def _rel(path: Path, root: Path) -> str:
    p = Path(path)
    if not p.is_absolute():
        return str(p)
    base = Path(root).resolve()
    return os.path.relpath(p, base) if p.is_relative_to(base) else str(p)


def _title(series: str, t: _Tilt, u: float, v: float, angle: float, res: float, score: float) -> str:
    return (f"{series} {t.label}: U {u / 1e4:.3f} V {v / 1e4:.3f} um, {angle:.0f} deg, "
            f"fit to {_res_text(res)}, CC {score:.3f}")


# --- built-in backend --------------------------------------------------------------------------------


class _BuiltinFitter:
    """The built-in estimator: every tilt on its own, then (optionally) the series-level pass."""

    def __init__(self, options: CtfOptions, pixel_size: float, voltage: float, cs: float, amp: float):
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

    def run(self, tilts: list[_Tilt], frames: Path, png_rows: set[int], series: str) -> list[_Result]:
        o = self.options

        def first_fit(t: _Tilt):
            t0 = time.perf_counter()
            lo, hi = _search_range(t, o)
            fit = self.fit_tilt(t, 0.5 * (lo + hi), 0.5 * (hi - lo))
            _log_fit(series, t, fit, time.perf_counter() - t0)
            return fit

        fits, problems = each_tilt(tilts, first_fit, series, "CTF fit")
        good = [i for i in range(len(tilts)) if i not in problems]
        if len(good) >= 3:  # the series pass sees the fitted tilts only
            refits = self.series_pass([tilts[i] for i in good], [fits[i] for i in good], series)
            for i, f in zip(good, refits, strict=True):
                fits[i] = f
        return [_no_fit(t, problems[i]) if i in problems else self.write(t, f, frames, i in png_rows, series)
                for i, (t, f) in enumerate(zip(tilts, fits, strict=True))]

    def fit_tilt(self, t: _Tilt, centre: float, half_range: float, fixed_astigmatism=None, gradient_sign=None,
                 fixed_defocus=None):
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
                               fixed_astigmatism=fixed_astigmatism, fit_phase_shift=o.phase_shift,
                               tilt_angle=t.tilt_angle, tilt_axis=t.tilt_axis, fit_pixel_size=self.fit_pixel_size,
                               pre_exposure=t.pre_exposure if o.dose_res_factor > 0 else 0.0,
                               gradient_sign=gradient_sign, fixed_defocus=fixed_defocus, device=self.device)
        except TiltflowError as exc:
            raise TiltflowError(f"{t.label}: {exc}", t.micrograph) from exc

    def series_pass(self, tilts: list[_Tilt], fits: list, series: str) -> list:
        """Series-level decisions, then refits.

        One defocus-gradient sign for all tilts (the handedness is the same for every tilt); a defocus path
        consistent across the acquisition (:func:`~tiltflow.ctffit.series.smooth_path`: a smooth trend plus
        an independent focusing error per exposure) on the curves of
        that sign; optionally one astigmatism. A tilt whose own best defocus agrees with the path is refitted
        near it with everything free; a tilt whose data disagree (weak rings, a wrong ring order) gets the
        path's defocus, the most probable value given its own curve and its neighbours', and only the rest
        is fitted.
        """
        from tiltflow.ctffit.series import gradient_sign_evidence, smooth_path

        o = self.options
        nominal = [t.nominal_defocus if t.nominal_defocus is not None else 0.0 for t in tilts]
        sign, evidence = gradient_sign_evidence(fits)
        if sign:
            log.info("%s: defocus gradient sign %+d for the series (log-likelihood ratio %.1f; in RELION's "
                     "convention rlnTomoHand = %+d)", series, sign, evidence, -sign)
        curves = [f.curves.get(sign, f.curve) for f in fits]
        if o.series_prior > 0:
            path = smooth_path(curves, nominal, o.series_prior * 1e4)
        else:
            path = np.array([float(c[0][int(np.argmax(c[1]))]) for c in curves])
        astig = series_astigmatism(fits) if o.astigmatism == "series" else None
        if o.astigmatism == "series":
            if astig is None:
                log.warning("%s: too few well-fitted tilts for a series astigmatism; kept per-tilt values", series)
            else:
                log.info("%s: series astigmatism |U - V| = %.0f A at %.1f deg", series, *astig)
        agree = max(300.0, 3 * o.defocus_step)
        out = list(fits)
        for i, (t, f, d, c) in enumerate(zip(tilts, fits, path, curves, strict=True)):
            own = float(c[0][int(np.argmax(c[1]))])
            consistent = abs(own - d) <= agree
            same_sign = sign == 0 or f.gradient_sign in (0, sign)
            if consistent and same_sign and astig is None and abs(f.defocus - d) <= agree:
                continue
            t0 = time.perf_counter()
            out[i] = self.fit_tilt(t, float(d), agree, fixed_astigmatism=astig, gradient_sign=sign or None,
                                   fixed_defocus=None if consistent else float(d))
            if not consistent:
                log.info("%s: %s best defocus %.0f A disagrees with the series; using %.0f A", series, t.label,
                         own, d)
            _log_fit(series, t, out[i], time.perf_counter() - t0)
        return out

    def write(self, t: _Tilt, f, frames: Path, with_png: bool, series: str) -> _Result:
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
        write_summary(paths["txt"], program=program, input_file=str(t.micrograph), pixel_size=f.pixel_size,
                      voltage=self.optics.voltage, cs=self.optics.cs, amplitude_contrast=self.optics.amplitude_contrast,
                      box=int(f.spectrum.shape[-1]), res_min=o.res_min, res_max=f.res_max, defocus_min=lo,
                      defocus_max=hi, rows=[CtffindRow(1, f.defocus_u, f.defocus_v, f.defocus_angle, ps_rad, f.score,
                                                       res_col)])
        write_avrot(paths["avrot"], program=program, input_file=str(t.micrograph), profiles=[avrot])
        if with_png:
            write_png(paths["png"], DiagnosticPlot(
                image=diag, k=k, average=avrot.average, fit=avrot.fit, cc=avrot.cc, resolution=f.resolution,
                res_min=o.res_min, res_max=f.res_max,
                title=_title(series, t, f.defocus_u, f.defocus_v, f.defocus_angle, f.resolution, f.score)))
        if not f.refined_2d:
            log.warning("%s: %s 2-D refinement moved the defocus too far from the 1-D search; kept the 1-D "
                        "result", series, t.label)
        return _Result(f.defocus_u, f.defocus_v, f.defocus_angle, f.phase_shift, f.score, f.resolution,
                       paths["ctf"], f.iciness, f.gradient_sign)


def series_astigmatism(fits: list, min_tilts: int = 3) -> tuple[float, float] | None:
    """One astigmatism (|U - V| A, angle deg) for a series: astigmatism is a property of the microscope,
    so it is taken from the well-fitted tilts only (fit resolution within 1.5x of the series' best, at
    least ``min_tilts``), as the weighted median (weights 1/resolution^2) of their astigmatism vectors -
    a median, so that one spurious fit cannot move it."""
    from tiltflow.ctffit.model import from_relion, to_relion

    good = sorted((f for f in fits if math.isfinite(f.resolution) and f.resolution > 0), key=lambda f: f.resolution)
    if len(good) < min_tilts:
        return None
    close = [f for f in good if f.resolution <= 1.5 * good[0].resolution]
    good = close if len(close) >= min_tilts else good[:min_tilts]
    w = np.array([1.0 / f.resolution**2 for f in good])
    vec = np.array([from_relion(f.defocus_u, f.defocus_v, f.defocus_angle)[1:] for f in good])
    ax, ay = _weighted_median(vec[:, 0], w), _weighted_median(vec[:, 1], w)
    u, v, angle = to_relion(0.0, ax, ay)
    return u - v, angle


def _weighted_median(x: np.ndarray, w: np.ndarray) -> float:
    order = np.argsort(x)
    cum = np.cumsum(w[order])
    return float(x[order][np.searchsorted(cum, 0.5 * cum[-1])])


def _log_fit(series: str, t: _Tilt, f, seconds: float) -> None:
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
    def __init__(self, options: CtfOptions, pixel_size: float, voltage: float, cs: float, amp: float):
        from tiltflow.backends import ctffind

        self.options = options
        self.pixel_size, self.voltage, self.cs, self.amp = pixel_size, voltage, cs, amp
        wanted = 5 if options.backend == "ctffind5" else 4
        self.exe = ctffind.find(options.executable, wanted)
        self.version = ctffind.detect_version(self.exe)
        self.major = ctffind.major_version(self.version, wanted)
        if self.version and self.major != wanted:
            log.warning("--backend %s but %s reports version %s: answering CTFFIND %d's prompts",
                        options.backend, self.exe, self.version, self.major)
        if not self.version:
            log.warning("could not read CTFFIND's version from %s; assuming %d.x prompts", self.exe, wanted)

    def describe(self) -> str:
        return f"CTFFIND {self.version or '(version unknown)'} ({self.exe})"

    def run(self, tilts: list[_Tilt], frames: Path, png_rows: set[int], series: str) -> list[_Result]:
        log.info("%s: CTFFIND fits every tilt on its own (--series-prior and --astigmatism series are "
                 "built-in backend options)", series)
        def one(item: tuple[int, _Tilt]) -> _Result:
            i, t = item
            t0 = time.perf_counter()
            r = self.fit(t, frames, i in png_rows, series)
            _log_fit(series, t, r, time.perf_counter() - t0)
            return r

        results, problems = each_tilt(list(enumerate(tilts)), one, series, "CTF fit")
        return [_no_fit(t, problems[i]) if i in problems else results[i] for i, t in enumerate(tilts)]

    def fit(self, t: _Tilt, frames: Path, with_png: bool, series: str) -> _Result:
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
        return _Result(u, v, angle, math.degrees(r.phase_shift) % 180.0, r.cross_correlation, resolution,
                       out.diagnostic)

    def _png(self, out, frames: Path, t: _Tilt, series: str, u, v, angle, resolution, score, res_max) -> None:
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
