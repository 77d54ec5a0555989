"""``tiltflow gain GAIN``: prepare the gain reference (orientation, counting size, bad pixels)."""

from __future__ import annotations

from pathlib import Path

import typer

from tiltflow.commands.options import build, option, project_root, root_option
from tiltflow.steps.gain import Options, run_session


def main(
    gain: Path = typer.Argument(..., help="Gain reference: MRC, TIFF, EER .gain or DM4 (K2/K3)."),
    outdir: Path = typer.Option(Path("gain"), "--outdir", help="Output folder; writes OUTDIR/gain.mrc."),
    root: Path | None = root_option(),
    rotate: int = option(Options, "rotate"),
    flip: int = option(Options, "flip"),
    serialem_rf: int | None = option(Options, "serialem_rf"),
    movie: Path | None = option(Options, "movie"),
    counting: bool | None = option(Options, "counting"),
    invert: bool = option(Options, "invert"),
) -> None:
    """Prepare the gain reference: orient it like the movies, bin K3 super-resolution, fix bad pixels.

    Writes OUTDIR/gain.mrc (float32, multiplicative: corrected = raw * gain, like MotionCor's -Gain),
    gain.json, defects.mrc when there were bad pixels, and console.log/error.log.
    """
    root = project_root(root)
    typer.echo(run_session(gain, outdir, build(Options, locals()), root).output)
