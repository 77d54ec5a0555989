"""User-facing errors: one line that names the file and the problem.

The CLI catches :class:`TiltflowError` and prints its message without a traceback,
so raise it for every problem a user can fix (bad input, missing files, wrong options).
"""

from __future__ import annotations

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
    ``except Exception`` (or per-tilt ``except TiltflowError``) swallows it."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum
