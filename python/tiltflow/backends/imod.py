"""IMOD's ``newstack``: build a tilt stack from a file of inputs, as IMOD users would by hand.

The command is ``newstack -fileinlist <list> -output <stack> [-bin N]`` run in the folder that holds
the list (its paths are relative to that folder). newstack's binning averages ``N x N`` blocks, like the
built-in backend, so both give the same stack.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger("tiltflow.imod")


def run_logged(cmd: Sequence[str], log_path: str | Path, cwd: str | Path | None = None,
               tool: str | None = None, timeout: float | None = None, label: str = "") -> str:
    """Run ``cmd`` with ``toolrun.run_tool`` (stdout+stderr kept in ``log_path``); return the log text.

    A non-zero exit raises ``ToolError`` naming the tool, the series (``label``), the exit status
    and the last lines of the log.
    """
    from tiltflow.backends.toolrun import run_tool

    tool = tool or Path(cmd[0]).name
    log.info("running: %s", " ".join(str(c) for c in cmd))
    run = run_tool(cmd, log_path=log_path, tool=tool, label=label or Path(log_path).stem, timeout=timeout, cwd=cwd)
    log.info("%s finished in %.1f s, log %s", tool, run.seconds, log_path)
    return run.log_text()


def newstack_command(executable: str, filelist: str | Path, output: str | Path, binning: int = 1) -> list[str]:
    """The newstack command line for a file of inputs (sections are listed in the file)."""
    cmd = [executable, "-fileinlist", str(filelist), "-output", str(output)]
    if binning > 1:
        cmd += ["-bin", str(int(binning))]
    return cmd


def run_newstack(executable: str, filelist: str | Path, output: str | Path, log_path: str | Path,
                 binning: int = 1, cwd: str | Path | None = None, label: str = "") -> Path:
    """Run newstack; check it wrote ``output`` (a path relative to ``cwd`` when relative)."""
    from tiltflow.backends.toolrun import require_outputs

    run_logged(newstack_command(executable, filelist, output, binning), log_path, cwd=cwd, tool="newstack",
               label=label)
    written = Path(cwd or ".") / output if not Path(output).is_absolute() else Path(output)
    require_outputs([written], tool="newstack", label=label or str(filelist), log_path=log_path)
    return written
