"""RELION's own motion correction (``relion_run_motioncorr --use_own``), one movie per call.

Why this backend: it is what RELION 5's tomography MotionCorr job runs by default, and Debian ships it
(``relion`` 3.1.3), so CI can run the field's program beside the built-in one on the same movies.

What RELION needs and does (measured with 3.1.3, read in ``src/motioncorr_runner.cpp``):

* the input is a movies STAR file with an optics table (pixel size, voltage); outputs go to
  ``<o>/<movie path without extension, dots as _>.mrc`` and ``.star`` (``getOutputFileNames``), so the
  movie is linked into a private folder under a fixed name and run from there;
* ``--eer_grouping`` is always passed: 3.1.3's default is 40, and a movie with fewer than 3 frames after
  grouping is skipped with exit status 0, so every expected output is checked;
* EER movies must be 4096x4096 (``renderEER.cpp``) and their gain is read by ``EERRenderer::loadEERGain``:
  a ``.gain`` is multiplicative and kept in file order, any other file is taken as a count-style gain and
  inverted. An EPU ``.gain`` is passed as it is; the prepared (multiplicative, movie-oriented) MRC gain is
  handed over as a ``.gain`` TIFF whose stored rows are the array itself;
* the per-movie STAR file's ``data_global_shift`` holds the shift applied to each frame, relative to the
  first frame used, in movie pixels (-9999 = not observed): a specimen drifting by +d px per frame gives
  -d, -2d, ... (measured), which is tiltflow's :class:`~tiltflow.motion.trajectory.Trajectory` convention;
* even/odd sums exist only where the program offers ``--even_odd_split`` (RELION 5); 3.1.3 has none.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tiltflow.backends import toolrun
from tiltflow.backends.tools import TOOLS
from tiltflow.errors import TiltflowError, ToolError
from tiltflow.motion.trajectory import Trajectory

TOOL = "RELION"
EVEN_ODD_PATTERN = r"(--even_odd_split)"
EER_SENSOR = 4096  # renderEER.cpp: "Currently we support only 4096x4096 pixel EER movies"
MIN_FRAMES = 3  # motioncorr_runner.cpp skips a movie with fewer frames (and exits 0)
OUT_DIR = "MC"
MOVIE_STEM = "movie"


@dataclass(frozen=True)
class RelionMotionCall:
    """One movie's ``relion_run_motioncorr --use_own`` run (frame numbers 1-based, as RELION's)."""

    executable: Path
    movie: Path
    pixel_size: float  # A per movie pixel
    kv: float = 300.0
    gain: Path | None = None  # an MRC gain for TIFF/MRC movies, the movie-oriented array for EER ones
    gain_rot: int = 0  # RELION --gain_rot (= MotionCor -RotGain for an MRC gain)
    gain_flip: int = 0  # RELION --gain_flip
    patches: tuple[int, int] = (1, 1)
    first_frame: int = 1
    last_frame: int = 0  # 0 = up to the last frame
    bfactor: float = 150.0
    bin_factor: float = 1.0
    eer_grouping: int = 32
    eer_upsampling: int = 1
    threads: int = 1
    even_odd: bool = False
    extra_args: tuple[str, ...] = ()


@dataclass(frozen=True)
class RelionMotionOutput:
    """What RELION wrote (paths in the run folder), the trajectory it found, and its version."""

    sum: Path
    even: Path | None
    odd: Path | None
    trajectory: Trajectory
    version: str | None
    log: Path


def version(executable: str | os.PathLike) -> str | None:
    """``relion_run_motioncorr --version`` -> e.g. ``"3.1.3"``."""
    return toolrun.detect_version(executable, TOOLS["relion"])


def offers_even_odd(executable: str | os.PathLike) -> bool:
    """Whether this RELION can write even/odd sums (``--even_odd_split`` in its ``--help``, RELION 5)."""
    return toolrun.detect_version(executable, pattern=EVEN_ODD_PATTERN, args=("--help",)) is not None


def write_movies_star(path: Path, movie_name: str, pixel_size: float, kv: float) -> Path:
    """The movies STAR file RELION reads: an optics table (pixel size, voltage) and one movie."""
    from tiltflow import star

    optics = {star.OPTICS_GROUP: ["opticsGroup1"], star.OPTICS_GROUP_NUMBER: [1],
              star.ORIGINAL_PIXEL_SIZE: [float(pixel_size)], star.VOLTAGE: [float(kv)],
              star.CS: [star.DEFAULT_OPTICS.cs], star.AMP_CONTRAST: [star.DEFAULT_OPTICS.amplitude_contrast]}
    movies = {star.MOVIE: [movie_name], star.OPTICS_GROUP_NUMBER: [1]}
    import pandas as pd

    return star.write_blocks(path, {"optics": pd.DataFrame(optics), "movies": pd.DataFrame(movies)})


def build_command(call: RelionMotionCall, movies_star: str, gain_name: str | None) -> list[str]:
    """The command line (run in the private folder): every option RELION's defaults could change."""
    cmd = [str(call.executable), "--i", movies_star, "--o", f"{OUT_DIR}/", "--use_own", "--j", str(call.threads),
           "--first_frame_sum", str(call.first_frame), "--last_frame_sum", str(call.last_frame),
           "--bfactor", _num(call.bfactor), "--bin_factor", _num(call.bin_factor),
           "--patch_x", str(call.patches[0]), "--patch_y", str(call.patches[1]),
           "--eer_grouping", str(call.eer_grouping), "--eer_upsampling", str(call.eer_upsampling)]
    if gain_name:
        cmd += ["--gainref", gain_name, "--gain_rot", str(call.gain_rot), "--gain_flip", str(call.gain_flip)]
    if call.even_odd:
        cmd.append("--even_odd_split")
    return cmd + list(call.extra_args)


def _num(x: float) -> str:
    return f"{x:g}"


def run_relion_motioncorr(call: RelionMotionCall, *, workdir: Path, log_path: Path, label: str,
                          n_frames: int, timeout: float | None = None) -> RelionMotionOutput:
    """Run RELION on one movie in ``workdir`` (a fresh private folder); check and read what it wrote.

    ``n_frames`` is the number of frames RELION should see (after EER grouping). Raises ToolError when
    RELION fails or silently skips the movie, TiltflowError for what RELION cannot do at all.
    """
    fmt = _format(call.movie)
    if n_frames < MIN_FRAMES:
        raise TiltflowError(f"RELION's motion correction skips movies with fewer than {MIN_FRAMES} frames; "
                            f"{label} has {n_frames}" + (" after EER grouping (lower --eer-grouping)"
                                                         if fmt == "eer" else ""), call.movie)
    if call.even_odd and not offers_even_odd(call.executable):
        raise TiltflowError(f"this RELION ({version(call.executable) or 'version unknown'}) cannot write even/odd "
                            "sums (no --even_odd_split, added in RELION 5); use --no-even-odd or another backend",
                            call.executable)
    workdir = Path(workdir)
    movie_name = MOVIE_STEM + (".eer" if fmt == "eer" else call.movie.suffix.lower())
    os.symlink(Path(call.movie).resolve(), workdir / movie_name)
    gain_name = _stage_gain(call, fmt, workdir) if call.gain is not None else None
    write_movies_star(workdir / "movies.star", movie_name, call.pixel_size, call.kv)
    ver = version(call.executable)
    run = toolrun.run_tool(build_command(call, "movies.star", gain_name), log_path=log_path, tool=TOOL, label=label,
                           timeout=timeout, cwd=workdir)
    out = workdir / OUT_DIR
    wanted = [out / f"{MOVIE_STEM}.mrc", out / f"{MOVIE_STEM}.star"]
    if call.even_odd:
        wanted += [out / f"{MOVIE_STEM}_EVN.mrc", out / f"{MOVIE_STEM}_ODD.mrc"]
    own_log = out / f"{MOVIE_STEM}.log"  # RELION's account of the movie, kept in tiltflow's log
    with open(run.log_path, "a") as fh:
        fh.write(f"# tiltflow: RELION version {ver or 'unknown'}\n")
        if own_log.is_file():
            fh.write(f"# tiltflow: RELION's {own_log.name}:\n{own_log.read_text(errors='replace')}")
    toolrun.require_outputs(wanted, tool=TOOL, label=label, log_path=run.log_path)
    from tiltflow.motion.metadata import read_motion_star

    traj, _ = read_motion_star(wanted[1])
    if traj.n_frames != n_frames:
        raise ToolError(f"{TOOL} on {label}: its STAR file has {traj.n_frames} frames, expected {n_frames}", wanted[1])
    return RelionMotionOutput(sum=wanted[0], even=wanted[2] if call.even_odd else None,
                              odd=wanted[3] if call.even_odd else None, trajectory=traj, version=ver,
                              log=run.log_path)


def _format(movie: Path) -> str:
    from tiltflow.io.movies import detect_format

    return detect_format(movie)


def _stage_gain(call: RelionMotionCall, fmt: str, workdir: Path) -> str:
    """Put the gain where RELION reads it as meant; return the name to pass as ``--gainref``."""
    gain = Path(call.gain).resolve()
    if fmt != "eer":
        if gain.suffix.lower() != ".mrc":
            raise TiltflowError("RELION's motion correction needs an MRC gain for TIFF/MRC movies "
                                "(prepare it with `tiltflow gain`)", gain)
        os.symlink(gain, workdir / "gain.mrc")
        return "gain.mrc"
    if call.gain_rot or call.gain_flip:  # RELION would turn it, then invert it as a count-style EER gain
        raise TiltflowError("for EER movies give RELION a gain already in the movies' orientation "
                            "(--gain_rot/--gain_flip 0; `tiltflow gain` prepares one)", gain)
    if gain.suffix.lower() == ".gain":  # EPU's own file: RELION reads it as it is
        os.symlink(gain, workdir / "gain.gain")
        return "gain.gain"
    from tiltflow.io.gain import load_prepared_gain

    g = load_prepared_gain(gain)
    size = EER_SENSOR * call.eer_upsampling
    if g.shape not in ((EER_SENSOR, EER_SENSOR), (size, size)):
        raise TiltflowError(f"RELION reads only 4096x4096 or {size}x{size} EER gains, this one is "
                            f"{g.shape[1]}x{g.shape[0]}", gain)
    import tifffile

    from tiltflow.atomic import atomic_path

    target = workdir / "gain.gain"
    with atomic_path(target) as tmp:  # stored rows = the array: loadEERGain undoes its TIFF reader's y flip
        tifffile.imwrite(tmp, np.ascontiguousarray(g, dtype=np.float32), photometric="minisblack")
    return target.name


__all__ = ["RelionMotionCall", "RelionMotionOutput", "build_command", "offers_even_odd", "run_relion_motioncorr",
           "version", "write_movies_star"]
