"""``tiltflow import``: a session -> the initial tomogram set (RELION 5 STAR, one file per series)."""

from __future__ import annotations

from pathlib import Path

import typer


def main(
    paths: list[Path] = typer.Argument(..., help="Session folder(s) and/or tilt-series mdoc files."),
    outdir: Path = typer.Option(Path("import"), "--outdir", help="Output folder."),
    kv: float | None = typer.Option(None, "--kv", help="Voltage in kV (default: mdoc Voltage, else 300)."),
    cs: float = typer.Option(2.7, "--cs", help="Spherical aberration in mm."),
    amp_contrast: float = typer.Option(0.1, "--amp-contrast", help="Amplitude contrast (fraction)."),
    tilt_axis: float | None = typer.Option(None, "--tilt-axis", help="Tilt-axis angle in degrees (overrides the mdoc)."),
    dose_per_tilt: float | None = typer.Option(None, "--dose-per-tilt", help="Dose per tilt in e/A^2 (overrides the mdoc)."),
    hand: int = typer.Option(-1, "--hand", help="rlnTomoHand: -1 (RELION's GUI default, EMPIAR-10164) or 1."),
    frames: Path | None = typer.Option(None, "--frames", help="Folder holding the movies (default: next to the mdoc)."),
    optics_group: str = typer.Option("optics1", "--optics-group", help="rlnOpticsGroupName for every series."),
    pixel_size: float | None = typer.Option(
        None, "--pixel-size", help="Movie pixel size in A (default: mdoc PixelSpacing / Binning)."
    ),
    expected_tilts: int | None = typer.Option(
        None, "--expected-tilts", help="Tilts per series; fewer sections means the mdoc is incomplete."
    ),
    skip_incomplete: bool = typer.Option(
        False, "--skip-incomplete", help="Skip incomplete or unusable mdocs instead of failing."
    ),
) -> None:
    """Import a SerialEM/Tomo5 session: OUT/<name>/<name>.star per tilt series and OUT/tomograms.star.

    Tilts stay in acquisition order with their pre-exposure; retakes (repeated angles) keep the
    newest image. Nothing is written when an mdoc is incomplete, has no dose (give --dose-per-tilt)
    or no tilt axis (give --tilt-axis).
    """
    from tiltflow.steps.importer import import_session

    result = import_session(
        paths, outdir, kv=kv, cs=cs, amp_contrast=amp_contrast, tilt_axis=tilt_axis,
        dose_per_tilt=dose_per_tilt, hand=hand, frames_dir=frames, optics_group=optics_group,
        pixel_size=pixel_size, expected_tilts=expected_tilts, skip_incomplete=skip_incomplete,
    )
    typer.echo(f"{len(result.series_stars)} tilt series -> {result.tomograms}")
