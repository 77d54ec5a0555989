"""Console and error logs for every step.

Each step writes ``console.log`` (everything it reports) and ``error.log`` (warnings and errors)
into its output folder, and echoes to the terminal. Steps log through ``logging.getLogger("tiltflow")``
(or a child), so library code never needs to know where the logs go.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path

LOGGER_NAME = "tiltflow"
log = logging.getLogger(LOGGER_NAME)

_FMT = "%(asctime)s %(levelname)-7s %(message)s"


def configure_console(verbose: bool = False, quiet: bool = False) -> None:
    """Terminal output for the CLI (stderr, so stdout stays clean for --json)."""
    root = logging.getLogger(LOGGER_NAME)
    root.setLevel(logging.DEBUG)
    for h in list(root.handlers):
        if getattr(h, "_tiltflow_console", False):
            root.removeHandler(h)
    h = logging.StreamHandler(sys.stderr)
    h.setLevel(logging.DEBUG if verbose else (logging.WARNING if quiet else logging.INFO))
    h.setFormatter(logging.Formatter("%(levelname)s: %(message)s" if not verbose else _FMT))
    h._tiltflow_console = True  # type: ignore[attr-defined]
    # the CLI prints a failing step's error itself, as one line; don't echo it twice
    h.addFilter(lambda record: not getattr(record, "file_only", False))
    root.addHandler(h)
    root.propagate = False


@contextlib.contextmanager
def step_logs(step: str, outdir: str | Path, series: str | None = None) -> Iterator[logging.Logger]:
    """Attach ``console.log``/``error.log`` in ``outdir`` for the duration of one step.

    Log files are appended to (a resumed step keeps the earlier attempt's record).
    """
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger(LOGGER_NAME)
    root.setLevel(logging.DEBUG)
    fmt = logging.Formatter(_FMT)
    out_h = _LogFile(outdir / "console.log")
    out_h.setLevel(logging.INFO)
    out_h.setFormatter(fmt)
    err_h = _LogFile(outdir / "error.log")
    err_h.setLevel(logging.WARNING)
    err_h.setFormatter(fmt)
    root.addHandler(out_h)
    root.addHandler(err_h)
    label = f"{step} {series}" if series else step
    t0 = time.perf_counter()
    root.info("start %s", label)
    try:
        yield root
    except Exception as exc:
        root.error("%s failed: %s", label, exc, extra={"file_only": True})
        if not isinstance(exc, _user_errors()):
            root.debug("traceback", exc_info=True)
            import traceback

            with contextlib.suppress(OSError):  # a full disk: the error itself says so
                err_h.stream.write(traceback.format_exc())
        raise
    else:
        root.info("done %s in %.1f s", label, time.perf_counter() - t0)
    finally:
        for h in (out_h, err_h):
            root.removeHandler(h)
            h.close()


def record_failure(folder: str | Path, label: str, error: str) -> None:
    """Append "<label> failed: <error>" to ``folder/error.log`` unless the step's own log already holds the
    error: a step can fail before its first log line (an unreadable input STAR, a bad option), and the folder
    a user or a Nextflow task is left with must still say why.
    """
    path = Path(folder) / "error.log"
    error = " ".join(str(error).split())
    with contextlib.suppress(OSError):  # a full disk or a read-only folder: the terminal has the line
        if path.is_file() and error in path.read_text(errors="replace"):
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        record = logging.makeLogRecord({"levelname": "ERROR", "msg": f"{label} failed: {error}"})
        with path.open("a") as f:
            f.write(logging.Formatter(_FMT).format(record) + "\n")


class _LogFile(logging.FileHandler):
    """A step log that stays quiet when it cannot be written (a full disk): logging's default prints a
    traceback per record over the terminal, while the step's own error already names the file and the space.
    """

    def handleError(self, record: logging.LogRecord) -> None:
        pass

    def flush(self) -> None:
        with contextlib.suppress(OSError):
            super().flush()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            super().close()


def _user_errors() -> tuple[type[BaseException], ...]:
    from tiltflow.errors import TiltflowError

    return (TiltflowError,)
