"""``tiltflow motioncor``: every tilt's movie -> motion-corrected image, trajectory and spectrum thumbnail.

Outputs per tilt in ``<outdir>/<series>/frames/`` named as RELION's MotionCorr job names them (the movie's
file name without extension, dots replaced by ``_``): ``<root>.mrc`` (pixel size in the header),
``<root>_EVN.mrc``/``<root>_ODD.mrc`` (even/odd frame sums, for denoising), ``<root>_PS.mrc`` (amplitude
spectrum thumbnail), ``<root>.star`` (RELION's per-movie trajectory file) and ``<root>.log`` (what the
built-in backend did, or MotionCor's own output). The per-tilt table gains ``rlnMicrographName``,
``rlnMicrographNameEven/Odd``, ``rlnCtfPowerSpectrum``, ``rlnMicrographMetadata`` and
``rlnAccumMotionTotal/Early/Late`` (Angstrom; early = up to 4 e/A^2, RELION's cut); the global row gains
``rlnTomoTiltSeriesPixelSize`` = movie pixel x binning.

Dose: the tilt's dose ``tfDose`` (e/A^2, from import) spread evenly over its raw frames
(``rlnTomoTiltMovieFrameCount``; an EER frame is ``--eer-grouping`` raw fractions), starting at
``rlnMicrographPreExposure``. Dropped frames (``--throw``/``--trunc``) are not summed but their dose counts.
Dose weighting is off by default, as in RELION 5's tomography pipeline: RELION weights every tilt by its
pre-exposure itself when it reconstructs particles, so weighting here as well would filter twice.

Failure: any tilt that cannot be corrected (a missing, truncated or undecodable movie, fewer frames than
the mdoc says, a tool failing on it) stops the step with an error naming that tilt; with
``skip_bad_movies`` (``--skip-bad-movies``) that tilt is flagged instead (``tfMovieProblem``, the reason;
its image columns empty), the exclusion drops it and the series goes on, as for a failed CTF fit
(``steps.common.each_tilt``). Every file is written atomically and the STAR file is written last (by
``execute_series_step``), so a failed run leaves no STAR file and no partial image. The input STAR file is
only read.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tiltflow import star
from tiltflow.errors import TiltflowError, ToolError
from tiltflow.io.mrc import read_mrc, write_mrc
from tiltflow.motion.metadata import MovieInfo, write_motion_star
from tiltflow.motion.trajectory import Trajectory
from tiltflow.steps.common import each_tilt, execute_series_step

log = logging.getLogger("tiltflow.motioncor")

TF_DOSE = "tfDose"  # e/A^2 for the whole tilt (import's column)
TF_MOVIE_PROBLEM = "tfMovieProblem"  # why a tilt has no motion-corrected image (empty when it has one)
BACKENDS = ("builtin", "motioncor2", "motioncor3", "relion")
DTYPES = {"float32": np.float32, "float16": np.float16}


@dataclass(frozen=True)
class MotionCorOptions:
    """The step's options (the CLI's, with the same defaults)."""

    gain: Path | None = None
    frames_dir: Path | None = None
    backend: str = "builtin"
    executable: str | None = None
    throw: int = 0
    trunc: int = 0
    bin_factor: float = 1.0
    patches: tuple[int, int] = (1, 1)
    dose_weighting: bool = False
    even_odd: bool = True
    dtype: str = "float32"
    eer_grouping: int | None = None
    eer_sampling: int = 1
    gpu: str = "0"
    device: str = "auto"
    threads: int = 1  # RELION --j
    extra_args: tuple[str, ...] = ()
    timeout: float | None = 3600.0  # s per movie for an external tool
    skip_bad_movies: bool = False  # flag a tilt whose movie cannot be corrected (tfMovieProblem), go on
    root: Path = field(default_factory=lambda: Path("."))  # project root: STAR paths are relative to it

    def check(self) -> None:
        """Reject impossible combinations before any movie is read."""
        if self.backend not in BACKENDS:
            raise TiltflowError(f"--backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.dtype not in DTYPES:
            raise TiltflowError(f"--dtype must be float32 or float16, got {self.dtype!r}")
        if self.throw < 0 or self.trunc < 0:
            raise TiltflowError("--throw and --trunc must be >= 0")
        if self.bin_factor < 1:
            raise TiltflowError(f"--bin must be >= 1 (Fourier binning), got {self.bin_factor:g}")
        if min(self.patches) < 1:
            raise TiltflowError(f"--patches must be >= 1 in x and y, got {self.patches}")
        if self.eer_sampling not in (1, 2):
            raise TiltflowError(f"--eer-sampling must be 1 or 2, got {self.eer_sampling}")
        if self.eer_grouping is not None and self.eer_grouping < 1:
            raise TiltflowError(f"--eer-grouping must be >= 1, got {self.eer_grouping}")
        if self.threads < 1:
            raise TiltflowError(f"--threads must be >= 1, got {self.threads}")


@dataclass
class _Tilt:
    """One row of the table, resolved: where its movie is and what dose it had."""

    row: int
    label: str
    movie: Path
    root: str
    frame_count: int | None
    dose: float | None  # e/A^2 for the tilt
    pre_exposure: float
    problem: str = ""  # known before reading it (movie not found): the tilt fails with this


def run_from_star(in_star: str | Path, step_dir: str | Path, options: MotionCorOptions) -> Path:
    """Correct one tilt series' movies: read ``in_star``, write ``<step_dir>/<name>/<name>.star``."""
    options.check()
    return execute_series_step("motioncor", in_star, step_dir, lambda ts, out: run(ts, out, options))


def run(ts: star.TiltSeriesStar, out_dir: str | Path, options: MotionCorOptions) -> star.TiltSeriesStar:
    """Motion-correct every tilt of ``ts`` into ``out_dir/frames``; return the series with the new columns."""
    options.check()
    out_dir = Path(out_dir)
    frames_dir = out_dir / "frames"
    tilts = _resolve_tilts(ts, options)
    movie_px = _movie_pixel_size(ts)
    kv = float(ts.globals.get(star.VOLTAGE) or 300.0)
    gain, gain_path, defects_path = _load_gain(options.gain)
    defects = read_mrc(defects_path)[0] if defects_path is not None and options.backend == "builtin" else None
    if options.dose_weighting:
        missing = [t.label for t in tilts if not t.dose]
        if missing:
            raise TiltflowError(f"{ts.name}: dose weighting needs each tilt's dose ({TF_DOSE}); missing for "
                                f"{', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}; re-import with "
                                "--dose-per-tilt or use --no-dose-weighting")
    new = ts.copy()
    tbl = new.tilts
    for col in (star.MICROGRAPH, star.MICROGRAPH_EVEN, star.MICROGRAPH_ODD, star.POWER_SPECTRUM,
                star.MICROGRAPH_METADATA):
        tbl[col] = "" if col not in tbl else tbl[col].astype(object)
    for col in (star.MOTION_TOTAL, star.MOTION_EARLY, star.MOTION_LATE):
        tbl[col] = np.nan
    if options.backend == "builtin":
        from tiltflow.device import device_name, get_device

        device = get_device(_builtin_device(options))
        log.info("%s: built-in motion correction on %s, %d tilts", ts.name, device_name(device), len(tilts))
    else:
        device = None
        exe = _find_tool(options)
        version = _tool_version(options, exe)
        log.info("%s: %s %s (%s), %d tilts", ts.name, _tool_name(options), version or "(version unknown)", exe,
                 len(tilts))
    def one(t: _Tilt) -> dict:
        try:
            if t.problem:
                raise TiltflowError(t.problem, t.movie)
            if options.backend == "builtin":
                return _builtin_tilt(t, frames_dir, options, movie_px, kv, gain, gain_path, defects, device)
            if options.backend == "relion":
                return _relion_tilt(t, frames_dir, options, movie_px, kv, gain_path, exe)
            return _motioncor_tilt(t, frames_dir, options, movie_px, kv, gain_path, defects_path, exe)
        except TiltflowError as exc:  # a reader's error names the file; the user also wants the tilt
            if t.label in str(exc):
                raise
            raise type(exc)(f"{ts.name} {t.label}: {exc}") from exc

    if options.skip_bad_movies:  # the same per-tilt rule as the CTF fit: flagged, unless every tilt fails
        outs, problems = each_tilt(tilts, one, ts.name, "motion-corrected image (--skip-bad-movies)")
    else:
        outs, problems = [one(t) for t in tilts], {}
    if problems or TF_MOVIE_PROBLEM in tbl:
        tbl[TF_MOVIE_PROBLEM] = [problems.get(i, "") for i in range(len(tilts))]
    for t, out in zip(tilts, outs, strict=True):
        if out is None:
            continue
        for col, key in ((star.MICROGRAPH, "image"), (star.POWER_SPECTRUM, "ps"), (star.MICROGRAPH_METADATA, "star"),
                         (star.MICROGRAPH_EVEN, "even"), (star.MICROGRAPH_ODD, "odd")):
            if options.even_odd or key not in ("even", "odd"):
                tbl.at[t.row, col] = _rel(out[key], options.root)
        total, early, late = out["motion"]
        tbl.at[t.row, star.MOTION_TOTAL] = total
        tbl.at[t.row, star.MOTION_EARLY] = early
        tbl.at[t.row, star.MOTION_LATE] = late
        log.info("%s: %s total motion %.2f A (early %.2f, late %.2f)", ts.name, t.label, total, early, late)
    if not options.even_odd:
        new.tilts = tbl.drop(columns=[star.MICROGRAPH_EVEN, star.MICROGRAPH_ODD])
    new.globals[star.TS_PIXEL_SIZE] = round(movie_px * options.bin_factor, 6)
    return new


def movie_problems(tilts) -> list[str]:
    """Per row of a later step's table why motioncor made no image of it (``tfMovieProblem``; "" if it did)."""
    if TF_MOVIE_PROBLEM not in tilts:
        return [""] * len(tilts)
    return [v if isinstance(v, str) and v != "nan" else "" for v in tilts[TF_MOVIE_PROBLEM]]


# --- tilts, movies, dose ---------------------------------------------------------------------------


def _resolve_tilts(ts: star.TiltSeriesStar, options: MotionCorOptions) -> list[_Tilt]:
    tbl = ts.tilts
    if star.MOVIE not in tbl.columns:
        raise TiltflowError(f"{ts.name}: no {star.MOVIE} column: motion correction needs the movies (import them "
                            "from the session's mdoc files)")
    if star.PRE_EXPOSURE not in tbl.columns:
        raise TiltflowError(f"{ts.name}: no {star.PRE_EXPOSURE} column")
    if len(tbl) == 0:
        raise TiltflowError(f"{ts.name}: the tilt table is empty")
    fallback_dose = _dose_from_pre_exposure(tbl[star.PRE_EXPOSURE].to_numpy(float))
    tilts, seen, missing = [], {}, []
    where = f" or in {options.frames_dir}" if options.frames_dir else " (give --frames DIR)"
    for row in range(len(tbl)):
        name = str(tbl.at[row, star.MOVIE])
        base = name.replace("\\", "/").rsplit("/", 1)[-1]
        label = f"tilt {row + 1} ({base})"
        path = _find_movie(name, base, options)
        if path is None and not options.skip_bad_movies:
            missing.append(label)
            continue
        root = movie_root(base)
        if root in seen:
            raise TiltflowError(f"{ts.name}: {label} and {seen[root]} both map to output {root}.mrc")
        seen[root] = label
        count = tbl.at[row, star.FRAME_COUNT] if star.FRAME_COUNT in tbl.columns else None
        dose = tbl.at[row, TF_DOSE] if TF_DOSE in tbl.columns else None
        dose = float(dose) if dose is not None and np.isfinite(float(dose)) and float(dose) > 0 else fallback_dose
        problem = "" if path else f"movie not found: looked relative to {options.root}{where}"
        tilts.append(_Tilt(row, label, path or star.resolve(name, options.root), root,
                           int(count) if count and int(count) > 0 else None, dose,
                           float(tbl.at[row, star.PRE_EXPOSURE]), problem))
    if missing:
        raise TiltflowError(f"{ts.name}: movie not found for {', '.join(missing[:3])}"
                            f"{f' and {len(missing) - 3} more' if len(missing) > 3 else ''}: looked relative to "
                            f"{options.root}{where}")
    return tilts


def movie_root(movie_name: str) -> str:
    """RELION's output root for a movie: the file name without extension, every other dot replaced by _."""
    base = movie_name.replace("\\", "/").rsplit("/", 1)[-1]
    stem = base.rsplit(".", 1)[0] if "." in base else base
    return stem.replace(".", "_")


def _find_movie(name: str, base: str, options: MotionCorOptions) -> Path | None:
    p = star.resolve(name, options.root)
    if p.is_file():
        return p
    if options.frames_dir is not None:
        q = Path(options.frames_dir) / base
        if q.is_file():
            return q
    return None


def _dose_from_pre_exposure(pre: np.ndarray) -> float | None:
    """RELION's fallback for a tilt's dose: the smallest step between distinct pre-exposures."""
    steps = np.diff(np.unique(pre[np.isfinite(pre)]))
    steps = steps[steps > 1e-6]
    return float(steps.min()) if steps.size else None


def _movie_pixel_size(ts: star.TiltSeriesStar) -> float:
    px = ts.globals.get(star.ORIGINAL_PIXEL_SIZE)
    if not px or float(px) <= 0:
        raise TiltflowError(f"{ts.name}: no {star.ORIGINAL_PIXEL_SIZE} (movie pixel size) in the global table")
    return float(px)


def _frame_dose(t: _Tilt, raw_per_frame: int, n_raw: int) -> float | None:
    """e/A^2 per movie frame: the tilt's dose over the raw frames (or EER fractions) the file really holds,
    times raw frames per rendered frame. The file, not the mdoc's frame count, says how the dose was split."""
    if not t.dose:
        return None
    return t.dose / n_raw * raw_per_frame


def _load_gain(path: Path | None) -> tuple[np.ndarray | None, Path | None, Path | None]:
    """The prepared gain (multiplicative, movie orientation) and the gain step's ``defects.mrc`` if present."""
    if path is None:
        return None, None, None
    from tiltflow.io.gain import load_prepared_gain

    path = Path(path)
    gain = np.asarray(load_prepared_gain(path), dtype=np.float32)  # the shape is checked per movie
    defects = path.parent / "defects.mrc"
    return gain, path, defects if defects.is_file() else None


def _open(t: _Tilt, options: MotionCorOptions):
    from tiltflow.io.movies import open_movie

    return open_movie(t.movie, eer_grouping=options.eer_grouping, eer_sampling=options.eer_sampling)


def _builtin_device(options: MotionCorOptions) -> str:
    if options.device == "auto" and options.gpu.strip():
        import torch

        if torch.cuda.is_available():
            return f"cuda:{options.gpu.replace(',', ' ').split()[0]}"
    return options.device


# --- the backends ------------------------------------------------------------------------------


def _builtin_tilt(t: _Tilt, frames_dir: Path, options: MotionCorOptions, movie_px: float, kv: float,
                  gain, gain_path, defects, device) -> dict:
    from tiltflow.atomic import write_text
    from tiltflow.motion.correct import Exposure, MotionSettings, correct_movie

    settings = MotionSettings(throw=options.throw, trunc=options.trunc, bin_factor=options.bin_factor,
                              patches=tuple(options.patches), even_odd=options.even_odd)
    with _open(t, options) as movie:
        raw_per_frame = int(getattr(movie, "group_size", 1))
        n_raw = int(getattr(movie, "n_fractions", movie.n_frames))
        fdose = _frame_dose(t, raw_per_frame, n_raw)
        _check_movie(t, movie, movie_px)
        exposure = Exposure(fdose, t.pre_exposure, kv) if options.dose_weighting and fdose else None
        res = correct_movie(movie, pixel_size=movie_px, gain=gain, settings=settings, exposure=exposure,
                            defects=defects, device=device, label=t.label)
        info = MovieInfo(str(t.movie), movie.shape[1], movie.shape[0], movie.n_frames, movie_px,
                         options.bin_factor, str(gain_path) if gain_path else None, fdose, t.pre_exposure, kv)
    paths = _paths(frames_dir, t.root)
    dt = DTYPES[options.dtype]
    write_mrc(paths["image"], res.sums.image, res.pixel_size, dtype=dt)
    if options.even_odd:
        if res.sums.even is None:
            raise TiltflowError(f"{t.label}: even/odd sums need at least 2 frames", t.movie)
        write_mrc(paths["even"], res.sums.even, res.pixel_size, dtype=dt)
        write_mrc(paths["odd"], res.sums.odd, res.pixel_size, dtype=dt)
    write_mrc(paths["ps"], res.spectrum.image, res.spectrum.pixel_size)
    write_motion_star(paths["star"], res.trajectory, info)
    write_text(paths["log"], _builtin_log(res))
    motion = res.trajectory.accumulated_motion(movie_px, fdose or 0.0, t.pre_exposure)
    return {**paths, "motion": motion}


def _builtin_log(res) -> str:
    lines = list(res.report)
    lines.append("frame  shift_x  shift_y  (px, applied to the frame; RELION convention)")
    for i, (x, y) in enumerate(res.trajectory.shifts, start=1):
        lines.append(f"{i:5d}  {x:8.3f}  {y:8.3f}" if np.isfinite(x) else f"{i:5d}  (not used)")
    return "\n".join(lines) + "\n"


def _check_movie(t: _Tilt, movie, movie_px: float) -> None:
    """Fewer frames than SerialEM saved (``NumSubFrames``) is a movie cut short (a copy that stopped at a frame
    boundary reads without error): refused like any truncated movie. More frames is only a warning."""
    n_raw = int(getattr(movie, "n_fractions", movie.n_frames))
    if t.frame_count and n_raw < t.frame_count:
        raise TiltflowError(f"{t.label}: truncated movie: {n_raw} frames where the mdoc says {t.frame_count}",
                            t.movie)
    if t.frame_count and n_raw != t.frame_count:
        log.warning("%s: the STAR file says %d frames, the movie has %d; the dose is spread over the movie's",
                    t.label, t.frame_count, n_raw)
    if movie.pixel_size and abs(movie.pixel_size - movie_px) > 0.02 * movie_px:
        log.warning("%s: the movie header says %.4f A/px, the STAR file %.4f A/px; using the STAR file's",
                    t.label, movie.pixel_size, movie_px)


def _find_tool(options: MotionCorOptions) -> Path:
    from tiltflow.backends import relion, toolrun
    from tiltflow.backends.motioncor import EXECUTABLES

    names, env_vars = relion.EXECUTABLES if options.backend == "relion" else EXECUTABLES[options.backend]
    return toolrun.find_executable(options.executable, names=names, env_vars=env_vars, tool=_tool_name(options))


def _tool_version(options: MotionCorOptions, exe: Path) -> str | None:
    """The tool's version, recorded in the step's log (and each tilt's log by the wrappers)."""
    from tiltflow.backends import relion, toolrun
    from tiltflow.backends.motioncor import VERSION_PATTERN

    if options.backend == "relion":
        return relion.version(exe)
    return toolrun.detect_version(exe, pattern=VERSION_PATTERN)


def _tool_name(options: MotionCorOptions) -> str:
    return {"motioncor2": "MotionCor2", "motioncor3": "MotionCor3", "relion": "RELION"}[options.backend]


def _motioncor_tilt(t: _Tilt, frames_dir: Path, options: MotionCorOptions, movie_px: float, kv: float,
                    gain_path: Path | None, defects_path: Path | None, exe: Path) -> dict:
    from tiltflow.backends.motioncor import MotionCorCall, run_motioncor, write_fmint_file

    tool = _tool_name(options)
    with _open(t, options) as movie:
        fmt = movie.format
        shape, n_frames = movie.shape, movie.n_frames
        raw_per_frame = int(getattr(movie, "group_size", 1))
        n_raw = int(getattr(movie, "n_fractions", n_frames))
        _check_movie(t, movie, movie_px)
    fdose = _frame_dose(t, raw_per_frame, n_raw)
    paths = _paths(frames_dir, t.root)
    frames_dir.mkdir(parents=True, exist_ok=True)
    # no dot in the folder name: MotionCor cuts -OutMrc at the first ".mrc"/".st" (see run_motioncor)
    tmp = Path(tempfile.mkdtemp(prefix=f"tmp_{t.root}_", suffix="_part", dir=frames_dir))
    try:
        fmint = None
        init_dose = t.pre_exposure
        if fmt == "eer":
            dose_raw = (t.dose / n_raw) if t.dose else 0.0
            write_fmint_file(tmp / "fmint.txt", n_raw, raw_per_frame, dose_raw)
            fmint = Path("fmint.txt")
        elif fdose:
            init_dose += options.throw * fdose  # MotionCor restarts its dose count after the thrown frames
        call = MotionCorCall(
            executable=exe, movie=t.movie.resolve(), movie_format=fmt, out_mrc=Path(f"{t.root}.mrc"),
            pixel_size=movie_px, kv=kv, gain=gain_path.resolve() if gain_path else None,
            defect_map=defects_path.resolve() if defects_path else None, throw=options.throw,
            trunc=options.trunc, bin_factor=options.bin_factor, patches=tuple(options.patches),
            split_sum=options.even_odd, dose_per_frame=fdose if options.dose_weighting else None,
            init_dose=init_dose, fmint_file=fmint, eer_sampling=options.eer_sampling, gpu=options.gpu,
            log_dir=Path("logs"), extra_args=tuple(options.extra_args), workdir=tmp,
        )
        (tmp / "logs").mkdir()
        expected = None if fmt == "eer" else n_frames - options.throw - options.trunc
        out = run_motioncor(call, tool=tool, log_path=paths["log"], label=f"{t.label} of {t.movie}",
                            timeout=options.timeout, expected_frames=expected)
        out_px = movie_px * options.bin_factor
        main = out.dose_weighted if options.dose_weighting else out.sum
        images = {"image": _read_output(main, tool, t), "ps_source": _read_output(out.sum, tool, t)}
        if options.even_odd:
            images["even"] = _read_output(out.even, tool, t)
            images["odd"] = _read_output(out.odd, tool, t)
        n_total = n_frames if fmt != "eer" else (n_raw // raw_per_frame)
        traj = Trajectory.from_used(out.shifts, n_total, options.throw)
        info = MovieInfo(str(t.movie), shape[1], shape[0], n_total, movie_px, options.bin_factor,
                         str(gain_path) if gain_path else None, fdose, t.pre_exposure, kv)
        _save_tool_outputs(paths, images, traj, info, out_px, options)
        for extra in sorted((tmp / "logs").glob("*")):  # MotionCor's own -LogDir files, kept with the log
            if extra.is_file():
                name = extra.name if extra.name.startswith(t.root) else f"{t.root}_{extra.name}"
                shutil.copyfile(extra, frames_dir / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    motion = traj.accumulated_motion(movie_px, fdose or 0.0, t.pre_exposure)
    return {**paths, "motion": motion}


def _relion_tilt(t: _Tilt, frames_dir: Path, options: MotionCorOptions, movie_px: float, kv: float,
                 gain_path: Path | None, exe: Path) -> dict:
    """RELION's own motion correction on one movie (the prepared gain passed as it is: codes 0 0)."""
    from tiltflow.backends.relion import RelionMotionCall, run_relion_motioncorr

    with _open(t, options) as movie:
        fmt, shape, n_frames = movie.format, movie.shape, movie.n_frames
        raw_per_frame = int(getattr(movie, "group_size", 1))
        n_raw = int(getattr(movie, "n_fractions", n_frames))
        _check_movie(t, movie, movie_px)
    if options.dose_weighting:
        raise TiltflowError("the relion backend does not dose-weight here (RELION 5's tomography pipeline "
                            "weights later); use --no-dose-weighting")
    fdose = _frame_dose(t, raw_per_frame, n_raw)
    paths = _paths(frames_dir, t.root)
    frames_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"tmp_{t.root}_", suffix="_part", dir=frames_dir))
    try:
        call = RelionMotionCall(
            executable=exe, movie=t.movie, pixel_size=movie_px, kv=kv, gain=gain_path, patches=tuple(options.patches),
            first_frame=options.throw + 1, last_frame=n_frames - options.trunc if options.trunc else 0,
            bin_factor=options.bin_factor, eer_grouping=raw_per_frame if fmt == "eer" else 1,
            eer_upsampling=options.eer_sampling, threads=options.threads, even_odd=options.even_odd,
            extra_args=tuple(options.extra_args))
        out = run_relion_motioncorr(call, workdir=tmp, log_path=paths["log"], label=f"{t.label} of {t.movie}",
                                    n_frames=n_frames, timeout=options.timeout)
        images = {"image": _read_output(out.sum, "RELION", t)}
        images["ps_source"] = images["image"]
        if options.even_odd:
            images["even"] = _read_output(out.even, "RELION", t)
            images["odd"] = _read_output(out.odd, "RELION", t)
        info = MovieInfo(str(t.movie), shape[1], shape[0], n_frames, movie_px, options.bin_factor,
                         str(gain_path) if gain_path else None, fdose, t.pre_exposure, kv)
        _save_tool_outputs(paths, images, out.trajectory, info, movie_px * options.bin_factor, options)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    motion = out.trajectory.accumulated_motion(movie_px, fdose or 0.0, t.pre_exposure)
    return {**paths, "motion": motion}


def _save_tool_outputs(paths: dict[str, Path], images: dict[str, np.ndarray], traj: Trajectory, info: MovieInfo,
                       out_px: float, options: MotionCorOptions) -> None:
    """Write an external tool's sums, spectrum and trajectory under tiltflow's names (atomically)."""
    from tiltflow.motion.spectrum import amplitude_spectrum

    ps = amplitude_spectrum(images["ps_source"], out_px)
    dt = DTYPES[options.dtype]
    write_mrc(paths["image"], images["image"], out_px, dtype=dt)
    if options.even_odd:
        write_mrc(paths["even"], images["even"], out_px, dtype=dt)
        write_mrc(paths["odd"], images["odd"], out_px, dtype=dt)
    write_mrc(paths["ps"], ps.image, ps.pixel_size)
    write_motion_star(paths["star"], traj, info)


def _read_output(path: Path | None, tool: str, t: _Tilt) -> np.ndarray:
    if path is None:
        raise ToolError(f"{tool} wrote no output for {t.label}")
    try:
        data, _ = read_mrc(path)
    except TiltflowError as exc:
        raise ToolError(f"{tool} wrote an unreadable image for {t.label}: {exc}", path) from None
    if data.ndim == 3 and data.shape[0] == 1:
        data = data[0]
    if data.ndim != 2 or not np.isfinite(data).all():
        raise ToolError(f"{tool} wrote a bad image for {t.label} (shape {data.shape} or NaN values)", path)
    return data.astype(np.float32, copy=False)


def _paths(frames_dir: Path, root: str) -> dict[str, Path]:
    return {
        "image": frames_dir / f"{root}.mrc",
        "even": frames_dir / f"{root}_EVN.mrc",
        "odd": frames_dir / f"{root}_ODD.mrc",
        "ps": frames_dir / f"{root}_PS.mrc",
        "star": frames_dir / f"{root}.star",
        "log": frames_dir / f"{root}.log",
    }


def _rel(path: Path, root: Path) -> str:
    """``path`` as written into STAR files: relative to the project root when it lies inside it."""
    p = Path(path)
    if not p.is_absolute():
        return str(p)
    base = Path(root).resolve()
    return os.path.relpath(p, base) if p.is_relative_to(base) else str(p)
