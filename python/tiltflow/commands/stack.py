"""``tiltflow stack``: option parsing only; the work is in ``tiltflow.steps.stack``."""

from __future__ import annotations

from pathlib import Path

import typer


def main(
    in_star: Path = typer.Argument(..., help="Per-tilt-series STAR file from motioncor/ctf/exclude."),
    outdir: Path = typer.Option(Path("stack"), "--outdir", help="Step folder; writes <outdir>/<name>/."),
    backend: str = typer.Option("builtin", "--backend", help="builtin or imod (IMOD's newstack)."),
    executable: str = typer.Option(None, "--executable", help="newstack program for --backend imod."),
    binning: int = typer.Option(1, "--bin", min=1, help="Average-bin N x N pixels, as newstack -bin."),
    min_tilts: int = typer.Option(5, "--min-tilts", min=1, help="Refuse series with fewer usable tilts."),
) -> None:
    """Stack the motion-corrected tilts in tilt-angle order (excluded tilts left out).

    Writes <name>.mrc (+ _EVN/_ODD), .rawtlt, .tlt, .mdoc, IMOD's .filelist and <name>.star.
    """
    from tiltflow.steps.stack import StackOptions, run

    out = run(in_star, outdir, StackOptions(backend=backend, executable=executable, binning=binning,
                                            min_tilts=min_tilts))
    typer.echo(str(out))
