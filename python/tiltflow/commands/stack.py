"""``tiltflow stack``: option parsing only; the work is in ``tiltflow.steps.stack``."""

from __future__ import annotations

from pathlib import Path

import typer

from tiltflow.commands.options import build, option, project_root, root_option, shown
from tiltflow.steps.common import run_star_step
from tiltflow.steps.stack import Options


def main(
    in_star: Path = typer.Argument(..., help="Per-tilt-series STAR file from motioncor/ctf/exclude."),
    outdir: Path = typer.Option(Path("stack"), "--outdir", help="Step folder; writes <outdir>/<name>/."),
    root: Path | None = root_option(),
    backend: str = option(Options, "backend"),
    executable: str | None = option(Options, "executable"),
    bin: int = option(Options, "bin"),
    min_tilts: int = option(Options, "min_tilts"),
) -> None:
    """Stack the motion-corrected tilts in tilt-angle order (excluded tilts left out).

    Writes <name>.mrc (+ _EVN/_ODD), .rawtlt, .tlt, .mdoc, IMOD's .filelist and <name>.star.
    """
    root = project_root(root)
    typer.echo(shown(run_star_step("stack", in_star, outdir, build(Options, locals()), root), root))
