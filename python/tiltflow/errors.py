"""User-facing errors: one line that names the file and the problem.

The CLI catches :class:`TiltflowError` and prints its message without a traceback,
so raise it for every problem a user can fix (bad input, missing files, wrong options).
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path


class TiltflowError(Exception):
    """A problem with the user's input or environment, reported as one line."""

    def __init__(self, message: str, path: str | Path | None = None):
        self.path = str(path) if path is not None else None
        text = " ".join(str(message).split())  # always one line
        super().__init__(f"{self.path}: {text}" if self.path else text)


class ToolError(TiltflowError):
    """An external program (MotionCor2, CTFFIND, AreTomo, IMOD) failed or wrote nothing usable."""


class Interrupted(TiltflowError):
    """The run was stopped by a signal (Ctrl-C, SIGTERM from a scheduler); exit status 128 + the signal."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum


class StopSignal(BaseException):
    """Raised in the main thread by a SIGINT/SIGTERM handler: a BaseException, so that no step's
    ``except Exception`` (or per-tilt ``except TiltflowError``) swallows it.
    """

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


#: errno -> what the user is told; these are about where tiltflow writes, not about its input
_WRITE_ERRORS = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
                 errno.EROFS: "read-only file system"}


def write_problem(exc: BaseException, path: str | Path | None = None) -> TiltflowError | None:
    """A full disk, an exhausted quota or a read-only file system as one line naming the file (``path``, else
    the one in ``exc``), the space left there and that a rerun resumes; None for any other error.
    """
    if not isinstance(exc, OSError) or exc.errno not in _WRITE_ERRORS:
        return None
    target = Path(path if path is not None else (exc.filename or "."))
    where = target
    while not where.exists() and where != where.parent:
        where = where.parent
    try:
        free = f"{_size(shutil.disk_usage(where).free)} free on that file system"
    except OSError:
        free = "free space unknown"
    if exc.errno == errno.EROFS:
        return TiltflowError("cannot write here: read-only file system; choose another --outdir", target)
    return TiltflowError(f"could not be written: {_WRITE_ERRORS[exc.errno]} ({free}); free some space and run "
                         f"the same command again to resume", target)


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
