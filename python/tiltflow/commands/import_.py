"""``tiltflow import``: a session -> the initial tomogram set (RELION 5 STAR, one file per series)."""

from __future__ import annotations

from pathlib import Path

import typer

from tiltflow.commands.options import build, option, project_root, root_option, shown
from tiltflow.steps.importer import Options, run_session


def main(
    paths: list[Path] = typer.Argument(..., help="Session folder(s) and/or tilt-series mdoc files."),
    outdir: Path = typer.Option(Path("import"), "--outdir", help="Output folder."),
    root: Path | None = root_option(),
    kv: float | None = option(Options, "kv"),
    cs: float = option(Options, "cs"),
    amp_contrast: float = option(Options, "amp_contrast"),
    tilt_axis: float | None = option(Options, "tilt_axis"),
    dose_per_tilt: float | None = option(Options, "dose_per_tilt"),
    hand: int = option(Options, "hand"),
    frames: Path | None = option(Options, "frames"),
    optics_group: str = option(Options, "optics_group"),
    pixel_size: float | None = option(Options, "pixel_size"),
    expected_tilts: int | None = option(Options, "expected_tilts"),
    skip_incomplete: bool = option(Options, "skip_incomplete"),
) -> None:
    """Import a SerialEM/Tomo5 session: OUT/<name>/<name>.star per tilt series and OUT/tomograms.star.

    Tilts stay in acquisition order with their pre-exposure; retakes (repeated angles) keep the
    newest image. Nothing is written when an mdoc is incomplete, has no dose (give --dose-per-tilt)
    or no tilt axis (give --tilt-axis).
    """
    root = project_root(root)
    result = run_session(paths, outdir, build(Options, locals()), root)
    typer.echo(f"{len(result.series_stars)} tilt series -> {shown(result.tomograms, root)}")
