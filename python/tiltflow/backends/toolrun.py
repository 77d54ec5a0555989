"""Running an external program (MotionCor2/3, CTFFIND4/5, AreTomo2/3, IMOD) the same way in every wrapper.

Why one helper: each wrapper needs the same things, and each got them wrong at least once in the tools we
studied (RELION appends MotionCor's output to ``.out``/``.err`` and only warns on failure; TomoFlows skips a
step when its output exists). Here:

* :func:`find_executable` - for a :class:`~tiltflow.backends.tools.Tool`: an explicit ``--executable`` path,
  else its environment variables, else ``PATH``; a missing program is one clear error listing what was tried.
* :func:`run_tool` - the exact command line and the tool's complete stdout+stderr go to one log file that
  the wrapper keeps next to its outputs; a timeout kills the whole process group; a non-zero exit becomes
  a :class:`~tiltflow.errors.ToolError` naming the tilt (``label``), the log and its last lines.
* :func:`require_outputs` - a tool that exits 0 but writes nothing (or an empty file) is also an error.
* :func:`detect_version` - the version hook: run the tool's probe (``<exe> --version`` or its own) once and
  pick the version out with its regular expression; ``None`` when it cannot be told.

Wrappers should run a tool into a temporary folder and move its outputs into place only after
:func:`require_outputs` passed, so that a failure leaves nothing half-written.
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tiltflow.backends.tools import Tool
from tiltflow.errors import ToolError


@dataclass(frozen=True)
class ToolRun:
    """What happened when a tool ran: the command, its exit status, where its output went, how long."""

    tool: str
    command: tuple[str, ...]
    returncode: int
    log_path: Path
    seconds: float

    def log_text(self) -> str:
        """The tool's captured output (with tiltflow's header and footer lines)."""
        return self.log_path.read_text(errors="replace")


def find_executable(tool: Tool, explicit: str | os.PathLike | None = None) -> Path:
    """Locate ``tool``: ``explicit`` (a path or a name on ``PATH``), else its environment variables in order,
    else its names on ``PATH``, else ``$<home_var>/bin/<name>``.

    The first hit wins; an explicit choice that does not work is an error (it never silently falls back).
    """
    if explicit:
        return _usable(str(explicit), tool.name, "given with --executable")
    for var in tool.env_vars:
        value = os.environ.get(var)
        if value:
            return _usable(value, tool.name, f"from ${var}")
    for name in tool.executables:
        hit = shutil.which(name)
        if hit:
            return Path(hit)
    home = os.environ.get(tool.home_var) if tool.home_var else None
    for name in tool.executables if home else ():
        candidate = Path(home) / "bin" / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate.absolute()
    tried = [*(f"${v}" for v in tool.env_vars), *tool.executables]
    if tool.home_var:
        tried.append(f"${tool.home_var}/bin")
    raise ToolError(f"{tool.name} not found (tried {', '.join(tried) or 'nothing'}); install it or pass "
                    "--executable PATH")


def _usable(candidate: str, tool: str, origin: str) -> Path:
    path = Path(candidate).expanduser()
    if path.is_file():
        if not os.access(path, os.X_OK):
            raise ToolError(f"{tool} executable {origin} is not executable (chmod +x?)", path)
        return path.absolute()  # tools may run in another folder
    hit = shutil.which(candidate)
    if hit and os.sep not in candidate:
        return Path(hit)
    raise ToolError(f"{tool} executable {origin} does not exist", path)


def run_tool(
    command: Sequence[str | os.PathLike],
    *,
    log_path: str | os.PathLike,
    tool: str,
    label: str,
    timeout: float | None = None,
    cwd: str | os.PathLike | None = None,
    env: Mapping[str, str] | None = None,
    stdin: str | None = None,
    append: bool = False,
) -> ToolRun:
    """Run ``command`` with its stdout and stderr written to ``log_path``; raise ToolError on failure.

    ``label`` names what is being processed (``"tilt 3 (TS_01_003_-6.0.tif)"``) so the error tells the user
    which input failed. ``stdin`` feeds interactive programs (CTFFIND's prompts). ``env`` is added to the
    current environment. The log starts with the command line and ends with the exit status.
    """
    cmd = tuple(str(c) for c in command)
    log = Path(log_path)
    log.parent.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, **(env or {})}
    with open(log, "a" if append else "w") as fh:
        fh.write(f"# tiltflow: {tool} for {label}\n# tiltflow: command: {shlex.join(cmd)}\n")
        if cwd is not None:
            fh.write(f"# tiltflow: cwd: {cwd}\n")
        fh.flush()
        t0 = time.perf_counter()
        try:
            proc = subprocess.Popen(
                cmd,
                stdout=fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                cwd=cwd,
                env=full_env,
                start_new_session=True,  # own process group: a timeout kills its children too
                text=True,
            )
        except OSError as exc:
            raise ToolError(f"{tool} could not be started for {label}: {exc.strerror or exc}", cmd[0]) from exc
        try:
            proc.communicate(input=stdin, timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            seconds = time.perf_counter() - t0
            fh.write(f"\n# tiltflow: killed after {seconds:.0f} s (timeout {timeout:g} s)\n")
            fh.flush()
            raise ToolError(f"{tool} timed out after {timeout:g} s on {label}; its output is in the log", log) from None
        except BaseException:
            _kill_group(proc)  # Ctrl-C or an error here must not leave the tool running
            raise
        seconds = time.perf_counter() - t0
        fh.write(f"\n# tiltflow: exit status {proc.returncode} after {seconds:.1f} s\n")
    if proc.returncode != 0:
        why = f"killed by signal {-proc.returncode}" if proc.returncode < 0 else f"exit status {proc.returncode}"
        raise ToolError(f"{tool} failed on {label} ({why}); last lines of its log: {log_tail(log)}", log)
    return ToolRun(tool=tool, command=cmd, returncode=proc.returncode, log_path=log, seconds=seconds)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def require_outputs(paths: Iterable[str | os.PathLike], *, tool: str, label: str, log_path: str | os.PathLike) -> None:
    """Raise ToolError if any of ``paths`` is missing or empty: the tool 'succeeded' but wrote nothing."""
    missing = [str(p) for p in paths if not Path(p).is_file() or Path(p).stat().st_size == 0]
    if missing:
        names = ", ".join(Path(m).name for m in missing)
        raise ToolError(
            f"{tool} exited normally on {label} but did not write {names}; last lines of its log: "
            f"{log_tail(log_path)}",
            log_path,
        )


def log_tail(path: str | os.PathLike, n_lines: int = 8) -> str:
    """The last non-empty lines of a log (tiltflow's own ``#`` lines left out), joined with `` | ``."""
    try:
        lines = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    useful = [ln.strip() for ln in lines if ln.strip() and not ln.startswith("# tiltflow")]
    return " | ".join(useful[-n_lines:]) or "(empty log)"


def detect_version(
    executable: str | os.PathLike,
    tool: Tool | None = None,
    *,
    pattern: str | None = None,
    args: Sequence[str] | None = None,
    timeout: float = 30.0,
) -> str | None:
    """Run ``executable *args`` and return the first group of ``pattern`` found in its output, else None.

    ``tool`` supplies the pattern and arguments (its ``version_pattern``/``version_args``); ``pattern``/``args``
    override them (a probe of something else, such as an option in ``--help``). Cached per executable (path
    and modification time), so a wrapper can call it for every tilt.
    """
    pattern = pattern or (tool.version_pattern if tool else None)
    if pattern is None:
        return None
    args = tuple(args if args is not None else (tool.version_args if tool else ("--version",)))
    path = Path(executable)
    try:
        mtime = path.stat().st_mtime
    except OSError:
        mtime = 0.0
    return _detect_version_cached(str(path), mtime, pattern, args, timeout)


@functools.lru_cache(maxsize=64)
def _detect_version_cached(exe: str, _mtime: float, pattern: str, args: tuple[str, ...], timeout: float) -> str | None:
    try:
        proc = subprocess.run(
            [exe, *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, errors="replace"
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(pattern, (proc.stdout or "") + "\n" + (proc.stderr or ""))
    return match.group(1) if match else None
