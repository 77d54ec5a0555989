"""``tiltflow follow``: option parsing only; the rule is ``tiltflow.live.follow``."""

from __future__ import annotations

from pathlib import Path

import typer


def main(
    session: Path = typer.Argument(..., help="The session folder SerialEM writes into (it may hold no mdoc yet)."),
    ready: Path = typer.Option(..., "--ready", help="Folder for the announcements (watch_series_<TS>, watch_end)."),
    frames: Path = typer.Option(None, "--frames", help="Folder of the movies (default: the session folder)."),
    tilts: int = typer.Option(None, "--tilts", min=1, help="Tilts per series: complete at this many sections."),
    series_idle: float = typer.Option(60.0, "--series-idle", min=0, help="Seconds without a new section: complete."),
    movie_stable: float = typer.Option(2.0, "--movie-stable", min=0, help="Seconds a movie's size must stay the same."),
    until: float = typer.Option(600.0, "--until", min=0, help="Seconds with nothing new: the watch ends."),
    stop_file: Path = typer.Option(None, "--stop-file", help="End the watch when this file appears."),
    tilt_axis: float = typer.Option(None, "--tilt-axis", help="Tilt axis (deg) where the mdocs have none."),
    dose_per_tilt: float = typer.Option(None, "--dose-per-tilt", help="Dose per tilt (e/A^2) where the mdocs have none."),
) -> None:
    """Announce each tilt series as it becomes complete, by `tiltflow watch`'s rules (the pipeline's --watch).

    Writes READY/watch_series_<TS> (the mdoc's path) once per complete series and READY/watch_end (the
    series never complete) when nothing new has come for --until s or the stop file appears.
    """
    from tiltflow.live.completeness import Timing
    from tiltflow.live.follow import follow_session
    from tiltflow.runner.params import RunParams

    session = session.resolve()
    params = RunParams().with_values({"frames": str((frames or session).resolve()), "tilt_axis": tilt_axis,
                                      "dose_per_tilt": dose_per_tilt}, "follow")
    timing = Timing(movie_stable=movie_stable, series_idle=series_idle, idle=until)
    result = follow_session(session, ready.resolve(), Path.cwd(), params, timing, tilts,
                            stop_file.resolve() if stop_file else None)
    typer.echo(f"tiltflow follow: stopped by {result.stopped_by}; complete: {', '.join(result.announced) or 'none'}")
    for name, why in sorted(result.incomplete.items()):
        typer.echo(f"tiltflow follow: {name} incomplete: {why}", err=True)
