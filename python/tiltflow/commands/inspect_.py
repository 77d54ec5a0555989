"""``tiltflow inspect``: what a session holds, before anything is processed."""

from __future__ import annotations

from pathlib import Path

import typer


def main(
    paths: list[Path] = typer.Argument(..., help="Session folder(s) and/or tilt-series mdoc files."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON to stdout instead of tables."),
    frames: Path | None = typer.Option(None, "--frames", help="Folder holding the movies (default: next to the mdoc)."),
    tilt_axis: float | None = typer.Option(None, "--tilt-axis", help="Tilt-axis angle in degrees (overrides the mdoc)."),
    dose_per_tilt: float | None = typer.Option(None, "--dose-per-tilt", help="Dose per tilt in e/A^2 (overrides the mdoc)."),
    pixel_size: float | None = typer.Option(
        None, "--pixel-size", help="Movie pixel size in A (default: mdoc PixelSpacing / Binning)."
    ),
    expected_tilts: int | None = typer.Option(
        None, "--expected-tilts", help="Tilts per series; fewer sections means the mdoc is incomplete."
    ),
    tilts: bool = typer.Option(False, "--tilts", help="Also print every tilt (acquisition order)."),
) -> None:
    """Show the tilt series of a session: tilts, angles, scheme, dose, movies, warnings.

    Frame mdocs, montages and Tomo5 _override copies are listed as skipped, with the reason.
    Exit status 1 when no tilt series is found or a tilt-series mdoc is incomplete or unusable.
    """
    from tiltflow.metadata.session import load_session

    session = load_session(paths, frames, tilt_axis, dose_per_tilt, pixel_size, expected_tilts)
    if json_out:
        import json

        from tiltflow.metadata.summary import session_dict

        typer.echo(json.dumps(session_dict(session), indent=2))
    else:
        _print_tables(session, tilts)
    if not session.series or any(s.is_problem for s in session.skipped):
        raise typer.Exit(1)


def _print_tables(session, show_tilts: bool) -> None:
    import sys

    from rich.console import Console
    from rich.table import Table

    from tiltflow.metadata.summary import dose_per_tilt, series_dict, skipped_lines

    # a terminal gets its own width; a pipe or file gets wide lines instead of cropped tables
    console = Console() if sys.stdout.isatty() else Console(width=200)
    if session.series:
        table = Table(title="Tilt series", show_lines=False)
        for col in ("name", "tilts", "angles (deg)", "scheme", "dose/tilt", "total", "pixel (A)", "axis (deg)",
                    "movies", "warnings"):
            if col == "name":
                longest = max(len(ts.name) for ts in session.series)
                table.add_column(col, overflow="fold", min_width=min(longest, 40))
            else:
                table.add_column(col, justify="left" if col == "scheme" else "right", no_wrap=col == "scheme")
        for ts in session.series:
            d = series_dict(ts)
            lo, hi = ts.angle_range
            dpt = dose_per_tilt(ts)
            scheme = ts.scheme + (f" ({d['group_size']})" if d["group_size"] else "")
            table.add_row(
                ts.name, str(ts.n_tilts), f"{lo:.1f}..{hi:.1f}", scheme,
                f"{dpt:.3g}" if dpt else "[red]none[/red]",
                f"{ts.total_dose:.1f}" if ts.total_dose else "-",
                f"{ts.pixel_size:.4g}",
                f"{ts.tilt_axis:.1f}" if ts.tilt_axis is not None else "[red]?[/red]",
                f"{d['movies_found']}/{ts.n_tilts}", str(len(ts.warnings)),
            )
        console.print(table)
        for ts in session.series:
            for w in ts.warnings:
                console.print(f"[yellow]warning[/yellow] {ts.name}: {w}", highlight=False)
            if show_tilts:
                _print_tilts(console, ts)
    else:
        console.print("[red]no tilt series found[/red]")
    if session.skipped:
        sk = Table(title="Skipped files")
        sk.add_column("file")
        sk.add_column("kind")
        sk.add_column("reason")
        for path, kind, reason in skipped_lines(session):
            problem = kind in ("incomplete", "invalid")
            sk.add_row(path, f"[red]{kind}[/red]" if problem else kind, reason)
        console.print(sk)


def _print_tilts(console, ts) -> None:
    from rich.table import Table

    t = Table(title=f"{ts.name}: tilts in acquisition order")
    for col in ("#", "ZValue", "angle", "dose", "pre-exposure", "defocus", "time", "movie"):
        t.add_column(col, justify="right" if col not in ("time", "movie") else "left")
    for tl in ts.tilts:
        t.add_row(
            str(tl.acquisition_index), str(tl.z_value), f"{tl.tilt_angle:.2f}",
            f"{tl.dose:.3g}" if tl.dose else "-",
            f"{tl.pre_exposure:.2f}" if tl.pre_exposure is not None else "-",
            f"{tl.target_defocus:g}" if tl.target_defocus is not None else "-",
            tl.date_time.isoformat(sep=" ") if tl.date_time else "-",
            (tl.movie_name or "-") + ("" if tl.movie_found else " [red](missing)[/red]"),
        )
    console.print(t)
