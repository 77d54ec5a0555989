"""The ``tiltflow`` command line: one subcommand per step (see ``tiltflow --help``).

Each subcommand lives in ``tiltflow.commands.<name>`` as a function ``main``; the step commands take their
options from the step's ``Options`` (the step modules load numpy and pandas, never torch at import); torch
is imported inside the work, so that ``--help`` and Nextflow's version probes stay free of it.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import typer

from tiltflow import __version__, malloc, threads
from tiltflow.errors import Interrupted, StopSignal, TiltflowError, write_problem
from tiltflow.steps import registry

#: exit code for "CUDA out of memory": Nextflow retries such tasks with more memory (conf/base.config)
EXIT_GPU_OOM = 75

#: subcommand name -> module in tiltflow.commands: the steps from the registry, then the other commands
COMMANDS: dict[str, str] = {
    "inspect": "inspect_",
    "simulate": "simulate",
    **{step.name: step.command for step in registry.STEPS},
    "run": "run",
    "watch": "watch",
    "follow": "follow",
    "version": "version",
}

app = typer.Typer(
    name="tiltflow",
    help="SerialEM cryo-ET sessions to aligned tilt series, tomograms and RELION 5 input.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"tiltflow {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True, help="Print the version."),
) -> None:
    """tiltflow: preprocessing for cryo-electron tomography."""


for _name, _module in COMMANDS.items():
    _mod = importlib.import_module(f"tiltflow.commands.{_module}")
    app.command(_name, help=(_mod.main.__doc__ or "").strip().split("\n\n")[0] or None)(_mod.main)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app; user errors become one line on stderr and exit code 2."""
    from tiltflow.steplog import configure_console

    configure_console()
    _sigterm_as_interrupt()
    try:
        threads.configure(argv)  # before any command imports torch (OMP_WAIT_POLICY is read at load)
        malloc.use_huge_pages()  # before torch loads: large tensors on huge pages, not 4 KiB faults per frame
        # without standalone mode click returns typer.Exit(code)'s code instead of raising it
        rc = app(args=argv, prog_name="tiltflow", standalone_mode=False)
    except Interrupted as exc:
        typer.echo(f"tiltflow: {exc}", err=True)
        _record_failure(argv, str(exc))
        return exc.exit_code
    except TiltflowError as exc:
        typer.echo(f"tiltflow: error: {exc}", err=True)
        _record_failure(argv, str(exc))
        return 2
    except typer.Exit as exc:
        return exc.exit_code or 0
    except typer.Abort:
        typer.echo("tiltflow: aborted", err=True)
        return 130
    except (KeyboardInterrupt, StopSignal) as exc:
        import signal

        signum = exc.signum if isinstance(exc, StopSignal) else signal.SIGINT
        name = signal.Signals(signum).name
        typer.echo(f"tiltflow: stopped by {name}; nothing half-written was kept: run the command again", err=True)
        _record_failure(argv, f"stopped by {name}")
        return 128 + signum
    except Exception as exc:  # click usage errors and unexpected failures
        try:
            import click
        except ImportError:  # typer >= 0.2x vendors click as typer._click
            from typer import _click as click

        if type(exc).__name__ == "OutOfMemoryError":  # torch.cuda.OutOfMemoryError
            typer.echo(f"tiltflow: error: GPU out of memory: {' '.join(str(exc).split())[:200]}", err=True)
            _record_failure(argv, f"GPU out of memory: {' '.join(str(exc).split())[:200]}")
            return EXIT_GPU_OOM

        if isinstance(exc, click.ClickException):
            exc.show()
            _record_failure(argv, exc.format_message())
            return exc.exit_code
        problem = write_problem(exc)
        if problem is not None:  # a full disk or a read-only folder: one line, not a traceback
            typer.echo(f"tiltflow: error: {problem}", err=True)
            return 2
        typer.echo(f"tiltflow: error: {type(exc).__name__}: {' '.join(str(exc).split())}", err=True)
        _record_failure(argv, f"{type(exc).__name__}: {' '.join(str(exc).split())}")
        return 1
    return rc if isinstance(rc, int) else 0


def _record_failure(argv: list[str] | None, error: str) -> None:
    """Write a failing step command's error into its step folder's error.log (steplog.record_failure), also
    when it failed before the step logged anything: that folder is all a Nextflow task leaves to look at.
    """
    import contextlib

    from tiltflow.steplog import record_failure

    with contextlib.suppress(Exception):  # the error is on the terminal already; never fail on the way out
        where = _failure_folder(list(sys.argv[1:] if argv is None else argv))
        if where is not None:
            record_failure(where[0], where[1], error)


def _failure_folder(argv: list[str]) -> tuple[Path, str] | None:
    """Where a step command logs and its label: ``<outdir>/<series>`` for a per-series step (the series its
    input STAR is named after, ``<name>/<name>.star``), ``<outdir>`` for gain, import and export,
    ``OUT/report`` for report; None for the other commands. The arguments are parsed as the command would
    (resiliently: a bad value of another option still gives the folder).
    """
    from tiltflow.runner.plan import SERIES_STEPS

    if not argv or argv[0] not in (*SERIES_STEPS, "gain", "import", "export", "report"):
        return None
    command = typer.main.get_command(app).get_command(None, argv[0])  # type: ignore[attr-defined]
    params = command.make_context(argv[0], argv[1:], resilient_parsing=True).params
    if argv[0] == "report":
        return (Path(params["out"]) / "report", "report") if params.get("out") else None
    # a relative --outdir is relative to the project root, as the step itself takes it (commands.options)
    outdir = Path(params.get("root") or ".") / params["outdir"]
    if argv[0] not in SERIES_STEPS:
        return outdir, argv[0]
    if not params.get("in_star"):
        return None
    name = Path(params["in_star"]).stem
    return outdir / name, f"{argv[0]} {name}"


def _sigterm_as_interrupt() -> None:
    """SIGTERM (a scheduler's time limit) unwinds like Ctrl-C, so temporary files are removed on the way out;
    ``tiltflow run`` installs its own handlers for the run itself (runner/interrupt.py).
    """
    import signal
    import threading

    def handler(signum: int, frame: object) -> None:
        raise StopSignal(signum)

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)


if __name__ == "__main__":
    sys.exit(main())
