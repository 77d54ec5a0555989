"""backends.toolrun: finding, running and checking external programs (with small fake programs)."""

from __future__ import annotations

import contextlib
import os
import select
import sys
from pathlib import Path

import pytest

from tiltflow.backends import toolrun
from tiltflow.backends.tools import Tool
from tiltflow.errors import ToolError


def fake_tool(path: Path, body: str) -> Path:
    """An executable Python script at ``path`` running ``body``."""
    path.write_text(f"#!{sys.executable}\nimport sys, os, time\n{body}\n")
    path.chmod(0o755)
    return path


def test_find_executable_order(tmp_path, monkeypatch):
    exe = fake_tool(tmp_path / "MyTool", "print('hi')")
    other = fake_tool(tmp_path / "OtherTool", "print('hi')")
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.delenv("MYTOOL_EXE", raising=False)
    tool = Tool("MyTool", ("MyTool",), ("MYTOOL_EXE",))
    assert toolrun.find_executable(tool) == exe
    monkeypatch.setenv("MYTOOL_EXE", str(other))
    assert toolrun.find_executable(tool) == other
    # an explicit choice wins over everything
    assert toolrun.find_executable(tool, exe) == exe


def test_find_executable_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    tool = Tool("MyTool", ("MyTool",), ("MYTOOL_EXE",))
    monkeypatch.delenv("MYTOOL_EXE", raising=False)
    with pytest.raises(ToolError, match=r"MyTool not found \(tried \$MYTOOL_EXE, MyTool\)"):
        toolrun.find_executable(tool)
    with pytest.raises(ToolError, match="does not exist"):
        toolrun.find_executable(tool, tmp_path / "nope")
    plain = tmp_path / "notexec"
    plain.write_text("x")
    with pytest.raises(ToolError, match="not executable"):
        toolrun.find_executable(tool, plain)


def test_run_tool_keeps_the_log_and_the_command(tmp_path):
    exe = fake_tool(tmp_path / "tool", "print('out line'); print('err line', file=sys.stderr); print(sys.argv[1:])")
    log = tmp_path / "logs" / "t.log"
    run = toolrun.run_tool([exe, "-In", "a b.mrc"], log_path=log, tool="Tool", label="tilt 1")
    text = log.read_text()
    assert run.returncode == 0 and run.log_path == log and run.seconds >= 0
    assert "out line" in text and "err line" in text and "['-In', 'a b.mrc']" in text
    assert "-In 'a b.mrc'" in text.splitlines()[1]  # the exact command, shell-quoted
    assert "exit status 0" in text


def test_run_tool_nonzero_exit_names_the_tilt_and_shows_the_log(tmp_path):
    exe = fake_tool(tmp_path / "tool", "print('Error: cannot open gain reference'); sys.exit(3)")
    log = tmp_path / "t.log"
    with pytest.raises(ToolError) as info:
        toolrun.run_tool([exe], log_path=log, tool="MotionCor2", label="tilt 7 (x.tif)")
    msg = str(info.value)
    assert "MotionCor2 failed on tilt 7 (x.tif) (exit status 3)" in msg
    assert "cannot open gain reference" in msg and msg.startswith(str(log))
    assert "\n" not in msg


def _exited(pid: int) -> bool:
    """Whether process ``pid`` has exited, waited for as an event (its pidfd becomes readable at exit).

    ``os.kill(pid, 0)`` alone cannot tell: a killed orphan stays a zombie until its (here: unknown) new
    parent reaps it. The bound only matters when the process was not killed (it then sleeps for an hour).
    """
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True  # gone and reaped
    try:
        return bool(select.select([fd], [], [], 60)[0])
    finally:
        os.close(fd)


def _timeouts_until(started: Path):
    """Timeouts for a call whose program must first record that it started (``started`` exists): a loaded
    machine can take longer than the first timeout just to start Python, and then the call is repeated.
    """
    for timeout in (1, 4, 16, 64):
        yield timeout
        if started.exists():
            return
    pytest.fail(f"the fake program never started within 64 s: no {started.name}")


def test_run_tool_timeout_kills_the_process_group(tmp_path):
    pid_file = tmp_path / "grandchild.pid"
    # the tool starts a grandchild that would sleep for an hour, records its pid (rename: never half-written)
    body = (f"import subprocess\np = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(3600)'])\n"
            f"open({str(pid_file)!r} + '.tmp', 'w').write(str(p.pid))\nos.rename({str(pid_file)!r} + '.tmp', "
            f"{str(pid_file)!r})\ntime.sleep(3600)")
    exe = fake_tool(tmp_path / "slow", body)
    for timeout in _timeouts_until(pid_file):
        with pytest.raises(ToolError, match=f"timed out after {timeout} s on tilt 2"):
            toolrun.run_tool([exe], log_path=tmp_path / "slow.log", tool="Slow", label="tilt 2", timeout=timeout)
    pid = int(pid_file.read_text())
    assert _exited(pid), "the grandchild survived: the timeout did not kill the process group"
    with contextlib.suppress(ProcessLookupError):  # a zombie (not yet reaped orphan) is dead, not running
        os.kill(pid, 0)
        assert Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in "ZX"
    assert "killed after" in (tmp_path / "slow.log").read_text()


def test_run_tool_feeds_stdin_and_env(tmp_path):
    exe = fake_tool(tmp_path / "ask", "a = input(); b = input(); print('got', a, b, os.environ['EXTRA'])")
    run = toolrun.run_tool([exe], log_path=tmp_path / "ask.log", tool="Ask", label="x", stdin="1.35\nyes\n",
                           env={"EXTRA": "value"})
    assert "got 1.35 yes value" in run.log_text()


def test_missing_program_is_a_tool_error(tmp_path):
    with pytest.raises(ToolError, match="could not be started"):
        toolrun.run_tool([tmp_path / "missing"], log_path=tmp_path / "m.log", tool="M", label="x")


def test_require_outputs(tmp_path):
    log = tmp_path / "t.log"
    log.write_text("# tiltflow: header\nsaving done\n")
    good = tmp_path / "a.mrc"
    good.write_bytes(b"1234")
    empty = tmp_path / "b.mrc"
    empty.write_bytes(b"")
    toolrun.require_outputs([good], tool="T", label="tilt 1", log_path=log)
    with pytest.raises(ToolError, match=r"T exited normally on tilt 1 but did not write b\.mrc, c\.mrc.*saving done"):
        toolrun.require_outputs([good, empty, tmp_path / "c.mrc"], tool="T", label="tilt 1", log_path=log)


def test_detect_version(tmp_path):
    exe = fake_tool(tmp_path / "mc", "print('MotionCor3 version 1.1.2'); print('Built on Jun 11 2024')")
    assert toolrun.detect_version(exe, pattern=r"MotionCor[23]? version (\S+)") == "1.1.2"
    silent = fake_tool(tmp_path / "silent", "sys.exit(1)")
    assert toolrun.detect_version(silent, pattern=r"version (\S+)") is None


def test_detect_version_gives_up_on_a_program_that_hangs(tmp_path):
    """A program that never answers (here: records its pid, then waits forever) gives None and is killed."""
    pid_file = tmp_path / "hangs.pid"
    hangs = fake_tool(tmp_path / "hangs", f"open({str(pid_file)!r} + '.tmp', 'w').write(str(os.getpid()))\n"
                                          f"os.rename({str(pid_file)!r} + '.tmp', {str(pid_file)!r})\n"
                                          "import signal\nsignal.pause()")
    for timeout in _timeouts_until(pid_file):
        assert toolrun.detect_version(hangs, pattern=r"version (\S+)", timeout=timeout) is None
    with pytest.raises(ProcessLookupError):  # our own child: killed and reaped by the time the call returns
        os.kill(int(pid_file.read_text()), 0)
