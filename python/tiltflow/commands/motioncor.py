"""``tiltflow motioncor``: motion-correct one tilt series' movies (built-in, MotionCor2/3 or RELION's own)."""

from __future__ import annotations

from pathlib import Path

import typer

from tiltflow.commands.options import build, option, project_root, root_option, shown
from tiltflow.steps.common import run_star_step
from tiltflow.steps.motioncor import Options


def main(
    in_star: Path = typer.Argument(..., help="The tilt series' STAR file (from import)."),
    outdir: Path = typer.Option(Path("motioncor"), "--outdir", help="Step folder: writes OUTDIR/<name>/<name>.star."),
    root: Path | None = root_option(),
    gain: Path | None = option(Options, "gain"),
    frames: Path | None = option(Options, "frames"),
    backend: str = option(Options, "backend"),
    executable: str | None = option(Options, "executable"),
    throw: int = option(Options, "throw"),
    trunc: int = option(Options, "trunc"),
    bin: float = option(Options, "bin"),
    patches: tuple[int, int] = option(Options, "patches"),
    dose_weighting: bool = option(Options, "dose_weighting"),
    even_odd: bool = option(Options, "even_odd"),
    dtype: str = option(Options, "dtype"),
    eer_grouping: int | None = option(Options, "eer_grouping"),
    eer_sampling: int = option(Options, "eer_sampling"),
    gpu: str = option(Options, "gpu"),
    device: str = option(Options, "device"),
    threads: int = option(Options, "threads"),
    extra_args: str = option(Options, "extra_args"),
    skip_bad_movies: bool = option(Options, "skip_bad_movies"),
) -> None:
    """Motion-correct every tilt: corrected image, even/odd sums, spectrum thumbnail, trajectory.

    Writes OUTDIR/<name>/frames/<movie>.mrc (+ _EVN, _ODD, _PS, .star, .log) with RELION's names and
    OUTDIR/<name>/<name>.star with rlnMicrographName, rlnAccumMotion* and rlnTomoTiltSeriesPixelSize.
    Movies are found at rlnMicrographMovieName (relative to the current folder) or by name in --frames.
    """
    backend = backend.lower()
    root = project_root(root)
    typer.echo(shown(run_star_step("motioncor", in_star, outdir, build(Options, locals()), root), root))
