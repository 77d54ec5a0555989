"""``tiltflow motioncor``: motion-correct one tilt series' movies (built-in, MotionCor2/3 or RELION's own)."""

from __future__ import annotations

import shlex
from pathlib import Path

import typer


def main(
    in_star: Path = typer.Argument(..., help="The tilt series' STAR file (from import)."),
    outdir: Path = typer.Option(Path("motioncor"), "--outdir", help="Step folder: writes OUTDIR/<name>/<name>.star."),
    gain: Path | None = typer.Option(None, "--gain", help="Prepared gain (gain/gain.mrc: multiplicative, movie orientation)."),
    frames: Path | None = typer.Option(None, "--frames", help="Folder to look for movies (by file name) not found at the STAR path."),
    backend: str = typer.Option("builtin", "--backend", help="builtin (torch, CPU or GPU), motioncor2, motioncor3 or relion (relion_run_motioncorr --use_own)."),
    executable: str | None = typer.Option(None, "--executable", help="MotionCor2/3 or relion_run_motioncorr program (default: environment variable, then PATH)."),
    throw: int = typer.Option(0, "--throw", help="Frames to leave out at the start (their dose still counts)."),
    trunc: int = typer.Option(0, "--trunc", help="Frames to leave out at the end."),
    bin_factor: float = typer.Option(1.0, "--bin", help="Fourier binning of the output (tilt-series pixel = movie pixel x bin)."),
    patches: tuple[int, int] = typer.Option((1, 1), "--patches", help="Patches in X Y for local motion (1 1 = global only)."),
    dose_weighting: bool = typer.Option(
        False, "--dose-weighting/--no-dose-weighting",
        help="Exposure-filter the frames (off: RELION 5 weights by pre-exposure itself)."),
    even_odd: bool = typer.Option(True, "--even-odd/--no-even-odd", help="Also write even/odd frame sums (_EVN/_ODD)."),
    dtype: str = typer.Option("float32", "--dtype", help="Output images: float32 or float16."),
    eer_grouping: int | None = typer.Option(None, "--eer-grouping", help="EER fractions per frame (default 32, as RELION)."),
    eer_sampling: int = typer.Option(1, "--eer-sampling", help="EER rendering: 1 = 4k, 2 = 8k."),
    gpu: str = typer.Option("0", "--gpu", help="GPU id(s) for MotionCor (-Gpu), e.g. '0 1'; the built-in backend uses the first."),
    device: str = typer.Option("auto", "--device", help="Built-in backend: auto, cpu, cuda or cuda:N."),
    threads: int = typer.Option(1, "--threads", help="RELION backend: threads per movie (--j)."),
    extra_args: str = typer.Option("", "--extra-args", help="Passed verbatim to MotionCor2/3 or RELION (e.g. '-Iter 10 -Bft 500 150')."),
    skip_bad_movies: bool = typer.Option(
        False, "--skip-bad-movies/--no-skip-bad-movies",
        help="A missing, truncated or unreadable movie flags its tilt (tfMovieProblem; then excluded) instead of "
             "stopping the series."),
) -> None:
    """Motion-correct every tilt: corrected image, even/odd sums, spectrum thumbnail, trajectory.

    Writes OUTDIR/<name>/frames/<movie>.mrc (+ _EVN, _ODD, _PS, .star, .log) with RELION's names and
    OUTDIR/<name>/<name>.star with rlnMicrographName, rlnAccumMotion* and rlnTomoTiltSeriesPixelSize.
    Movies are found at rlnMicrographMovieName (relative to the current folder) or by name in --frames.
    """
    from tiltflow.steps.motioncor import MotionCorOptions, run_from_star

    options = MotionCorOptions(
        gain=gain, frames_dir=frames, backend=backend.lower(), executable=executable, throw=throw, trunc=trunc,
        bin_factor=bin_factor, patches=(int(patches[0]), int(patches[1])), dose_weighting=dose_weighting,
        even_odd=even_odd, dtype=dtype, eer_grouping=eer_grouping, eer_sampling=eer_sampling, gpu=gpu,
        device=device, threads=threads, extra_args=tuple(shlex.split(extra_args)),
        skip_bad_movies=skip_bad_movies,
    )
    out = run_from_star(in_star, outdir, options)
    typer.echo(str(out))
