"""``tiltflow export``: RELION 5 tomograms.star and per-series STAR files from the pipeline's outputs."""

from __future__ import annotations

from pathlib import Path

import typer

from tiltflow.commands.options import project_root, root_option, shown


def main(
    stars: list[Path] = typer.Argument(..., help="Per-tilt-series STAR files (e.g. reconstruct/*/*.star)."),
    outdir: Path = typer.Option(Path("relion"), "--outdir", "-o", help="Output folder."),
    root: Path | None = root_option(),
) -> None:
    """Write RELION 5's tomograms.star and tilt_series/<name>.star for the given series.

    Run it from the project root (or give --root) so that the paths in the STAR files stay valid for RELION.
    """
    from tiltflow.steps.export import Options, run_session

    root = project_root(root)
    typer.echo(shown(run_session(stars, outdir, Options(), root), root))
