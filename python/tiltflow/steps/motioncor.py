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
``steps.common.run_star_step``), so a failed run leaves no STAR file and no partial image. The input STAR file is
only read.
"""

from __future__ import annotations

import logging
import shlex
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from tiltflow import star
from tiltflow.columns import TF_DOSE, TF_MOVIE_PROBLEM
from tiltflow.errors import TiltflowError, ToolError
from tiltflow.io.mrc import read_mrc, write_mrc
from tiltflow.motion.metadata import MovieInfo, write_motion_star
from tiltflow.motion.trajectory import Trajectory
from tiltflow.parallel import map_ordered, workers_for
from tiltflow.steps.common import at_root, each_tilt, option

log = logging.getLogger("tiltflow.motioncor")

BACKENDS = ("builtin", "motioncor2", "motioncor3", "relion")
DTYPES = {"float32": np.float32, "float16": np.float16}


@dataclass(frozen=True)
class Options:
    """The motioncor step's options: field names, defaults and help are those of ``tiltflow motioncor``."""

    gain: Path | None = option(None, "Prepared gain (gain/gain.mrc: multiplicative, movie orientation).")
    frames: Path | None = option(None, "Folder to look for movies (by file name) not found at the STAR path.")
    backend: str = option("builtin", "builtin (torch, CPU or GPU), motioncor2, motioncor3 or relion "
                                     "(relion_run_motioncorr --use_own).")
    executable: str | None = option(
        None, "MotionCor2/3 or relion_run_motioncorr program (default: environment variable, then PATH).")
    throw: int = option(0, "Frames to leave out at the start (their dose still counts).", "frames")
    trunc: int = option(0, "Frames to leave out at the end.", "frames")
    bin: float = option(1.0, "Fourier binning of the output (tilt-series pixel = movie pixel x bin).")
    patches: tuple[int, int] = option((1, 1), "Patches in X Y for local motion (1 1 = global only).")
    dose_weighting: bool = option(False, "Exposure-filter the frames (off: RELION 5 weights by pre-exposure itself).")
    even_odd: bool = option(True, "Also write even/odd frame sums (_EVN/_ODD).")
    dtype: str = option("float32", "Output images: float32 or float16.")
    eer_grouping: int | None = option(None, "EER fractions per frame (default 32, as RELION).")
    eer_sampling: int = option(1, "EER rendering: 1 = 4k, 2 = 8k.")
    gpu: str = option("0", "GPU id(s) for MotionCor (-Gpu), e.g. '0 1'; the built-in backend uses the first.")
    device: str = option("auto", "Built-in backend: auto, cpu, cuda or cuda:N.")
    threads: int = option(1, "RELION backend: threads per movie (--j).")
    extra_args: str = option("", "Passed verbatim to MotionCor2/3 or RELION (e.g. '-Iter 10 -Bft 500 150').")
    timeout: float | None = 3600.0  # s per movie for an external tool
    skip_bad_movies: bool = option(
        False, "A missing, truncated or unreadable movie flags its tilt (tfMovieProblem; then excluded) "
               "instead of stopping the series.")

    def validate(self) -> None:
        """Reject impossible combinations before any movie is read."""
        if self.backend not in BACKENDS:
            raise TiltflowError(f"--backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.dtype not in DTYPES:
            raise TiltflowError(f"--dtype must be float32 or float16, got {self.dtype!r}")
        if self.throw < 0 or self.trunc < 0:
            raise TiltflowError("--throw and --trunc must be >= 0")
        if self.bin < 1:
            raise TiltflowError(f"--bin must be >= 1 (Fourier binning), got {self.bin:g}")
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


def run_series(ts: star.TiltSeriesStar, out_dir: str | Path, options: Options, root: str | Path) -> star.TiltSeriesStar:
    """Motion-correct every tilt of ``ts`` into ``out_dir/frames``; return the series with the new columns."""
    options.validate()
    out_dir = Path(out_dir)
    frames_dir = out_dir / "frames"
    tilts = _resolve_tilts(ts, options, Path(root))
    movie_px = _movie_pixel_size(ts)
    kv = ts.optics.voltage
    gain, gain_path, defects_path = _load_gain(at_root(options.gain, root) if options.gain else None)
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
    setup = _Setup(options, movie_px, kv, gain_path, defects_path)
    backend: MotionCorBackend
    if options.backend == "builtin":
        backend = _Builtin(setup, gain, defects)
    elif options.backend == "relion":
        backend = _Relion(setup)
    else:
        backend = _MotionCor(setup)
    log.info("%s: %s, %d tilts", ts.name, backend.describe(), len(tilts))

    def one(t: _Tilt) -> MotionCorTiltOutputs:
        try:
            if t.problem:
                raise TiltflowError(t.problem, t.movie)
            return backend.process(t, frames_dir)
        except TiltflowError as exc:  # a reader's error names the file; the user also wants the tilt
            if t.label in str(exc):
                raise
            raise type(exc)(f"{ts.name} {t.label}: {exc}") from exc

    # the built-in correction runs tilts side by side (tiltflow.parallel); external programs use their own threads
    workers = backend.plan(tilts) if isinstance(backend, _Builtin) else 1
    if options.skip_bad_movies:  # the same per-tilt rule as the CTF fit: flagged, unless every tilt fails
        outs, problems = each_tilt(tilts, one, ts.name, "motion-corrected image (--skip-bad-movies)", workers)
    else:
        outs, problems = map_ordered(one, tilts, workers), {}
    if problems or TF_MOVIE_PROBLEM in tbl:
        tbl[TF_MOVIE_PROBLEM] = [problems.get(i, "") for i in range(len(tilts))]
    for t, out in zip(tilts, outs, strict=True):
        if out is None:
            continue
        for col, path in out.columns(options.even_odd):
            tbl.at[t.row, col] = star.relative_to_root(path, root)
        total, early, late = out.motion
        tbl.at[t.row, star.MOTION_TOTAL] = total
        tbl.at[t.row, star.MOTION_EARLY] = early
        tbl.at[t.row, star.MOTION_LATE] = late
        log.info("%s: %s total motion %.2f A (early %.2f, late %.2f)", ts.name, t.label, total, early, late)
    if not options.even_odd:
        new.tilts = tbl.drop(columns=[star.MICROGRAPH_EVEN, star.MICROGRAPH_ODD])
    new.globals[star.TS_PIXEL_SIZE] = round(movie_px * options.bin, 6)
    return new


def movie_problems(tilts) -> list[str]:
    """Per row of a later step's table why motioncor made no image of it (``tfMovieProblem``; "" if it did)."""
    if TF_MOVIE_PROBLEM not in tilts:
        return [""] * len(tilts)
    return [v if isinstance(v, str) and v != "nan" else "" for v in tilts[TF_MOVIE_PROBLEM]]


# --- tilts, movies, dose ---------------------------------------------------------------------------


def _resolve_tilts(ts: star.TiltSeriesStar, options: Options, root: Path) -> list[_Tilt]:
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
    where = f" or in {options.frames}" if options.frames else " (give --frames DIR)"
    for row in range(len(tbl)):
        name = str(tbl.at[row, star.MOVIE])
        base = name.replace("\\", "/").rsplit("/", 1)[-1]
        label = f"tilt {row + 1} ({base})"
        path = _find_movie(name, base, options, root)
        if path is None and not options.skip_bad_movies:
            missing.append(label)
            continue
        mroot = movie_root(base)
        if mroot in seen:
            raise TiltflowError(f"{ts.name}: {label} and {seen[mroot]} both map to output {mroot}.mrc")
        seen[mroot] = label
        count = tbl.at[row, star.FRAME_COUNT] if star.FRAME_COUNT in tbl.columns else None
        dose = tbl.at[row, TF_DOSE] if TF_DOSE in tbl.columns else None
        dose = float(dose) if dose is not None and np.isfinite(float(dose)) and float(dose) > 0 else fallback_dose
        problem = "" if path else f"movie not found: looked relative to {root}{where}"
        tilts.append(_Tilt(row, label, path or star.resolve(name, root), mroot,
                           int(count) if count and int(count) > 0 else None, dose,
                           float(tbl.at[row, star.PRE_EXPOSURE]), problem))
    if missing:
        raise TiltflowError(f"{ts.name}: movie not found for {', '.join(missing[:3])}"
                            f"{f' and {len(missing) - 3} more' if len(missing) > 3 else ''}: looked relative to "
                            f"{root}{where}")
    return tilts


def movie_root(movie_name: str) -> str:
    """RELION's output root for a movie: the file name without extension, every other dot replaced by _."""
    base = movie_name.replace("\\", "/").rsplit("/", 1)[-1]
    stem = base.rsplit(".", 1)[0] if "." in base else base
    return stem.replace(".", "_")


def _find_movie(name: str, base: str, options: Options, root: Path) -> Path | None:
    p = star.resolve(name, root)
    if p.is_file():
        return p
    if options.frames is not None:
        q = at_root(options.frames, root) / base
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
    times raw frames per rendered frame. The file, not the mdoc's frame count, says how the dose was split.
    """
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


def _open(t: _Tilt, options: Options):
    from tiltflow.io.movies import open_movie

    return open_movie(t.movie, eer_grouping=options.eer_grouping, eer_sampling=options.eer_sampling)


def _builtin_device(options: Options) -> str:
    if options.device == "auto" and options.gpu.strip():
        import torch

        if torch.cuda.is_available():
            return f"cuda:{options.gpu.replace(',', ' ').split()[0]}"
    return options.device


# --- the backends ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TiltFiles:
    """Where one tilt's outputs go in ``frames/`` (RELION's MotionCorr names)."""

    image: Path
    even: Path
    odd: Path
    ps: Path
    star: Path
    log: Path

    @classmethod
    def of(cls, frames_dir: Path, root: str) -> TiltFiles:
        """The files of tilt ``root`` in ``frames_dir``."""
        return cls(image=frames_dir / f"{root}.mrc", even=frames_dir / f"{root}_EVN.mrc",
                   odd=frames_dir / f"{root}_ODD.mrc", ps=frames_dir / f"{root}_PS.mrc",
                   star=frames_dir / f"{root}.star", log=frames_dir / f"{root}.log")


@dataclass(frozen=True)
class MotionCorTiltOutputs:
    """What one tilt's motion correction wrote and how far the specimen moved (A: total, early, late)."""

    files: TiltFiles
    motion: tuple[float, float, float]

    def columns(self, even_odd: bool) -> list[tuple[str, Path]]:
        """(per-tilt STAR column, file) pairs this tilt fills in."""
        f = self.files
        cols = [(star.MICROGRAPH, f.image), (star.POWER_SPECTRUM, f.ps), (star.MICROGRAPH_METADATA, f.star)]
        return cols + ([(star.MICROGRAPH_EVEN, f.even), (star.MICROGRAPH_ODD, f.odd)] if even_odd else [])


class MotionCorBackend(Protocol):
    """One way of motion-correcting a movie (built-in, MotionCor2/3, RELION's own)."""

    def describe(self) -> str:
        """What runs, for the step's log (program, version, device)."""
        ...

    def process(self, t: _Tilt, frames_dir: Path) -> MotionCorTiltOutputs:
        """Correct tilt ``t``'s movie; write its files into ``frames_dir`` (atomically)."""
        ...


@dataclass(frozen=True)
class _Setup:
    """What every backend needs besides the tilt: options, movie pixel (A), kV, prepared gain and defects."""

    options: Options
    movie_px: float
    kv: float
    gain_path: Path | None
    defects_path: Path | None


class _Builtin:
    """tiltflow's own motion correction (:mod:`tiltflow.motion`), CUDA when there is one."""

    def __init__(self, setup: _Setup, gain, defects):
        from tiltflow.device import get_device

        self.setup, self.gain, self.defects = setup, gain, defects
        self.device = get_device(_builtin_device(setup.options))
        self.cache_gb: float | None = None  # per movie; None = correct_movie's own default

    def plan(self, tilts: list[_Tilt]) -> int:
        """Tilts at a time, and each one's budget for keeping its frames (``cache_gb``), from the memory allowed.

        On the CPU every worker holds a movie (:func:`tiltflow.motion.correct.movie_bytes`): the workers are
        capped by what fits (:mod:`tiltflow.memory`), and each keeps as many of its frames' spectra as its share
        of the rest holds; the others it reads again from the movie in each pass (more decoding, same result).
        More workers first: on a K3 series under a 4 GiB limit, two workers reading every frame three times
        took 40 s where one worker keeping all its frames took 48 s (at 20 % more CPU).
        """
        from tiltflow import memory
        from tiltflow.motion.correct import cache_bytes, movie_bytes

        if self.device.type != "cpu" or not tilts:
            return workers_for(len(tilts), self.device)
        probe = next((t for t in tilts if not t.problem), None)
        if probe is None:
            return 1
        try:
            with _open(probe, self.setup.options) as movie:
                shape, n_frames = tuple(movie.shape), movie.n_frames
        except (TiltflowError, OSError):
            return 1  # the tilt's own run reports the problem
        opts = self.setup.options
        n_used = max(2, n_frames - opts.throw - opts.trunc)
        plain = movie_bytes(shape, n_used)
        workers = workers_for(len(tilts), self.device, item_bytes=plain)
        share = memory.headroom() / workers - plain
        self.cache_gb = max(0.0, min(4e9, share)) / 1e9
        log.info("%d tilts at a time; %.1f GB per movie for keeping its %dx%d frames (%.1f GB each)", workers,
                 self.cache_gb, shape[1], shape[0], cache_bytes(shape, 1) / 1e9)
        return workers

    def describe(self) -> str:
        from tiltflow.device import device_name

        return f"built-in motion correction on {device_name(self.device)}"

    def process(self, t: _Tilt, frames_dir: Path) -> MotionCorTiltOutputs:
        from tiltflow.atomic import write_text
        from tiltflow.motion.correct import Exposure, MotionSettings, correct_movie

        options, movie_px, kv, gain_path = self.setup.options, self.setup.movie_px, self.setup.kv, self.setup.gain_path
        settings = MotionSettings(throw=options.throw, trunc=options.trunc, bin_factor=options.bin,
                                  patches=tuple(options.patches), even_odd=options.even_odd,
                                  memory_gb=self.cache_gb)
        with _open(t, options) as movie:
            raw_per_frame = int(getattr(movie, "group_size", 1))
            n_raw = int(getattr(movie, "n_fractions", movie.n_frames))
            fdose = _frame_dose(t, raw_per_frame, n_raw)
            _check_movie(t, movie, movie_px)
            exposure = Exposure(fdose, t.pre_exposure, kv) if options.dose_weighting and fdose else None
            res = correct_movie(movie, pixel_size=movie_px, gain=self.gain, settings=settings, exposure=exposure,
                                defects=self.defects, device=self.device, label=t.label)
            info = MovieInfo(str(t.movie), movie.shape[1], movie.shape[0], movie.n_frames, movie_px,
                             options.bin, str(options.gain) if gain_path else None, fdose, t.pre_exposure, kv)
        files = TiltFiles.of(frames_dir, t.root)
        dt = DTYPES[options.dtype]
        write_mrc(files.image, res.sums.image, res.pixel_size, dtype=dt)
        if options.even_odd:
            if res.sums.even is None:
                raise TiltflowError(f"{t.label}: even/odd sums need at least 2 frames", t.movie)
            write_mrc(files.even, res.sums.even, res.pixel_size, dtype=dt)
            write_mrc(files.odd, res.sums.odd, res.pixel_size, dtype=dt)
        write_mrc(files.ps, res.spectrum.image, res.spectrum.pixel_size)
        write_motion_star(files.star, res.trajectory, info)
        write_text(files.log, _builtin_log(res))
        return MotionCorTiltOutputs(files, res.trajectory.accumulated_motion(movie_px, fdose or 0.0, t.pre_exposure))


def _builtin_log(res) -> str:
    lines = list(res.report)
    lines.append("frame  shift_x  shift_y  (px, applied to the frame; RELION convention)")
    for i, (x, y) in enumerate(res.trajectory.shifts, start=1):
        lines.append(f"{i:5d}  {x:8.3f}  {y:8.3f}" if np.isfinite(x) else f"{i:5d}  (not used)")
    return "\n".join(lines) + "\n"


def _check_movie(t: _Tilt, movie, movie_px: float) -> None:
    """Fewer frames than SerialEM saved (``NumSubFrames``) is a movie cut short (a copy that stopped at a frame
    boundary reads without error): refused like any truncated movie. More frames is only a warning.
    """
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


class _ExternalTool:
    """An external program found through :data:`tiltflow.backends.tools.TOOLS` (version probed once)."""

    def __init__(self, setup: _Setup):
        from tiltflow.backends import toolrun
        from tiltflow.backends.tools import TOOLS

        self.setup = setup
        self.tool = TOOLS[setup.options.backend]
        self.exe = toolrun.find_executable(self.tool, setup.options.executable)
        self.version = toolrun.detect_version(self.exe, self.tool)

    def describe(self) -> str:
        return f"{self.tool.name} {self.version or '(version unknown)'} ({self.exe})"


class _MotionCor(_ExternalTool):
    """MotionCor2 or MotionCor3 (:mod:`tiltflow.backends.motioncor`)."""

    def process(self, t: _Tilt, frames_dir: Path) -> MotionCorTiltOutputs:
        from tiltflow.backends.motioncor import MotionCorCall, run_motioncor, write_fmint_file

        options, movie_px, kv = self.setup.options, self.setup.movie_px, self.setup.kv
        gain_path, defects_path = self.setup.gain_path, self.setup.defects_path
        tool = self.tool.name
        with _open(t, options) as movie:
            fmt = movie.format
            shape, n_frames = movie.shape, movie.n_frames
            raw_per_frame = int(getattr(movie, "group_size", 1))
            n_raw = int(getattr(movie, "n_fractions", n_frames))
            _check_movie(t, movie, movie_px)
        fdose = _frame_dose(t, raw_per_frame, n_raw)
        files = TiltFiles.of(frames_dir, t.root)
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
                executable=self.exe, movie=t.movie.resolve(), movie_format=fmt, out_mrc=Path(f"{t.root}.mrc"),
                pixel_size=movie_px, kv=kv, gain=gain_path.resolve() if gain_path else None,
                defect_map=defects_path.resolve() if defects_path else None, throw=options.throw,
                trunc=options.trunc, bin_factor=options.bin, patches=tuple(options.patches),
                split_sum=options.even_odd, dose_per_frame=fdose if options.dose_weighting else None,
                init_dose=init_dose, fmint_file=fmint, eer_sampling=options.eer_sampling, gpu=options.gpu,
                log_dir=Path("logs"), extra_args=tuple(shlex.split(options.extra_args)), workdir=tmp,
            )
            (tmp / "logs").mkdir()
            expected = None if fmt == "eer" else n_frames - options.throw - options.trunc
            out = run_motioncor(call, tool=tool, log_path=files.log, label=f"{t.label} of {t.movie}",
                                timeout=options.timeout, expected_frames=expected)
            out_px = movie_px * options.bin
            main = out.dose_weighted if options.dose_weighting else out.sum
            images = _ToolImages(_read_output(main, tool, t), _read_output(out.sum, tool, t))
            if options.even_odd:
                images.even, images.odd = _read_output(out.even, tool, t), _read_output(out.odd, tool, t)
            n_total = n_frames if fmt != "eer" else (n_raw // raw_per_frame)
            traj = Trajectory.from_used(out.shifts, n_total, options.throw)
            info = MovieInfo(str(t.movie), shape[1], shape[0], n_total, movie_px, options.bin,
                             str(options.gain) if gain_path else None, fdose, t.pre_exposure, kv)
            _save_tool_outputs(files, images, traj, info, out_px, options)
            for extra in sorted((tmp / "logs").glob("*")):  # MotionCor's own -LogDir files, kept with the log
                if extra.is_file():
                    name = extra.name if extra.name.startswith(t.root) else f"{t.root}_{extra.name}"
                    shutil.copyfile(extra, frames_dir / name)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return MotionCorTiltOutputs(files, traj.accumulated_motion(movie_px, fdose or 0.0, t.pre_exposure))


class _Relion(_ExternalTool):
    """RELION's own motion correction on one movie (the prepared gain passed as it is: codes 0 0)."""

    def process(self, t: _Tilt, frames_dir: Path) -> MotionCorTiltOutputs:
        from tiltflow.backends.relion import RelionMotionCall, run_relion_motioncorr

        options, movie_px, kv, gain_path = self.setup.options, self.setup.movie_px, self.setup.kv, self.setup.gain_path
        with _open(t, options) as movie:
            fmt, shape, n_frames = movie.format, movie.shape, movie.n_frames
            raw_per_frame = int(getattr(movie, "group_size", 1))
            n_raw = int(getattr(movie, "n_fractions", n_frames))
            _check_movie(t, movie, movie_px)
        if options.dose_weighting:
            raise TiltflowError("the relion backend does not dose-weight here (RELION 5's tomography pipeline "
                                "weights later); use --no-dose-weighting")
        fdose = _frame_dose(t, raw_per_frame, n_raw)
        files = TiltFiles.of(frames_dir, t.root)
        frames_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f"tmp_{t.root}_", suffix="_part", dir=frames_dir))
        try:
            call = RelionMotionCall(
                executable=self.exe, movie=t.movie, pixel_size=movie_px, kv=kv, gain=gain_path,
                patches=tuple(options.patches), first_frame=options.throw + 1,
                last_frame=n_frames - options.trunc if options.trunc else 0,
                bin_factor=options.bin, eer_grouping=raw_per_frame if fmt == "eer" else 1,
                eer_upsampling=options.eer_sampling, threads=options.threads, even_odd=options.even_odd,
                extra_args=tuple(shlex.split(options.extra_args)))
            out = run_relion_motioncorr(call, workdir=tmp, log_path=files.log, label=f"{t.label} of {t.movie}",
                                        n_frames=n_frames, timeout=options.timeout)
            image = _read_output(out.sum, "RELION", t)
            images = _ToolImages(image, image)
            if options.even_odd:
                images.even, images.odd = _read_output(out.even, "RELION", t), _read_output(out.odd, "RELION", t)
            info = MovieInfo(str(t.movie), shape[1], shape[0], n_frames, movie_px, options.bin,
                             str(options.gain) if gain_path else None, fdose, t.pre_exposure, kv)
            _save_tool_outputs(files, images, out.trajectory, info, movie_px * options.bin, options)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return MotionCorTiltOutputs(files, out.trajectory.accumulated_motion(movie_px, fdose or 0.0, t.pre_exposure))


@dataclass
class _ToolImages:
    """An external tool's sums, read back: the image for the STAR file, the one its spectrum is made from."""

    image: np.ndarray
    ps_source: np.ndarray
    even: np.ndarray | None = None
    odd: np.ndarray | None = None


def _save_tool_outputs(files: TiltFiles, images: _ToolImages, traj: Trajectory, info: MovieInfo,
                       out_px: float, options: Options) -> None:
    """Write an external tool's sums, spectrum and trajectory under tiltflow's names (atomically)."""
    from tiltflow.motion.spectrum import amplitude_spectrum

    ps = amplitude_spectrum(images.ps_source, out_px)
    dt = DTYPES[options.dtype]
    write_mrc(files.image, images.image, out_px, dtype=dt)
    if options.even_odd:
        write_mrc(files.even, images.even, out_px, dtype=dt)
        write_mrc(files.odd, images.odd, out_px, dtype=dt)
    write_mrc(files.ps, ps.image, ps.pixel_size)
    write_motion_star(files.star, traj, info)


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


