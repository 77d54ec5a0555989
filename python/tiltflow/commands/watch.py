"""``tiltflow watch``: option parsing only; the work is in ``tiltflow.live``.

It takes every option of ``tiltflow run`` (the same settings give the same outputs; see
``tiltflow.commands.run``) plus the options that say how to follow the session.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import typer

from tiltflow.commands import run as run_command

_WATCH_OPTIONS = {
    "tilts": typer.Option(None, "--tilts", min=1, help="Tilts per series: a series is complete at this many sections."),
    "movie_stable": typer.Option(2.0, "--movie-stable", min=0, help="Seconds a movie's size must stay the same."),
    "series_idle": typer.Option(60.0, "--series-idle", min=0, help="Seconds without a new section: series complete."),
    "idle": typer.Option(600.0, "--idle", min=0, help="Seconds with nothing new and nothing to do: stop."),
    "stop_file": typer.Option(None, "--stop-file", help="Stop cleanly when this file appears (default OUT/STOP)."),
    "poll": typer.Option(False, "--poll", help="Poll the folder (NFS/SMB shares, where file events do not arrive)."),
    "serve": typer.Option(None, "--serve", min=1, max=65535, help="Serve the live page on 127.0.0.1:PORT."),
}
_NOT_PARAMS = (*run_command._NOT_PARAMS, *_WATCH_OPTIONS)


def main(**opts) -> None:
    """Process a session while the microscope collects it: per tilt as it lands, per series when complete.

    Per tilt (movie complete: its mdoc section, a stable size, the mdoc's frame count): motion
    correction and a CTF preview. Per series (all sections and --tilts reached, or --series-idle without
    a new one): import, ctf, exclude, stack, align, reconstruct, as `tiltflow run` does them, with the
    same outputs. Continuously: relion/tomograms.star of the finished series, report/report.html and the
    live page OUT/live/index.html. Ends after --idle, on the stop file or Ctrl-C; restarting continues.
    """
    from rich.console import Console

    from tiltflow.live.completeness import Timing
    from tiltflow.live.scheduler import WatchSettings, watch_session

    params = run_command.run_params(opts, _NOT_PARAMS)
    settings = WatchSettings(
        timing=Timing(movie_stable=opts["movie_stable"], series_idle=opts["series_idle"], idle=opts["idle"]),
        expected_tilts=opts["tilts"], stop_file=Path(opts["stop_file"]).resolve() if opts["stop_file"] else None,
        poll=opts["poll"], jobs=opts["jobs"])
    console = Console(stderr=True)
    if not console.is_terminal:
        console = Console(stderr=True, width=160)
    server = None
    if opts["serve"]:
        from tiltflow.live.page import serve

        root = Path(params.outdir).resolve()
        root.mkdir(parents=True, exist_ok=True)
        server = serve(root, opts["serve"])
        console.print(f"tiltflow watch: live page at http://127.0.0.1:{opts['serve']}/live/index.html")
    try:
        result = watch_session(params.input, params.outdir, params, settings, console)
    finally:
        if server is not None:
            server.shutdown()
    for line in result.failures:
        typer.echo(f"tiltflow watch: {line}", err=True)
    if result.incomplete:
        typer.echo(f"tiltflow watch: incomplete (not processed as series): {', '.join(sorted(result.incomplete))}",
                   err=True)
    if result.stopped_by == "interrupt":
        raise typer.Exit(130)
    if result.failures:
        raise typer.Exit(1)
    typer.echo(str(result.root / "relion" / "tomograms.star"))


def _signature() -> inspect.Signature:
    """The run command's parameters (less --force) followed by watch's own, as typer reads them."""
    params = [p for name, p in inspect.signature(run_command.main).parameters.items() if name != "force"]
    params += [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default,
                                 annotation={"tilts": int, "serve": int, "stop_file": Path, "poll": bool}.get(name, float))
               for name, default in _WATCH_OPTIONS.items()]
    return inspect.Signature([p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in params])


main.__signature__ = _signature()  # type: ignore[attr-defined]
