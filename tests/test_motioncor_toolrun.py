"""backends.toolrun: finding, running and checking external programs (with small fake programs)."""

from __future__ import annotations

import os
import sys
import time
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


def test_run_tool_timeout_kills_the_process_group(tmp_path):
    marker = tmp_path / "child_alive"
    child = tmp_path / "child.py"
    child.write_text(f"import time\ntime.sleep(3)\nopen({str(marker)!r}, 'w').close()\n")
    body = f"import subprocess\nsubprocess.Popen([sys.executable, {str(child)!r}])\ntime.sleep(30)"
    exe = fake_tool(tmp_path / "slow", body)
    t0 = time.perf_counter()
    with pytest.raises(ToolError, match="timed out after 1 s on tilt 2"):
        toolrun.run_tool([exe], log_path=tmp_path / "slow.log", tool="Slow", label="tilt 2", timeout=1)
    assert time.perf_counter() - t0 < 10
    time.sleep(3.5)
    assert not marker.exists()  # the grandchild was killed with the group
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
    hangs = fake_tool(tmp_path / "hangs", "time.sleep(20)")
    assert toolrun.detect_version(hangs, pattern=r"version (\S+)", timeout=0.5) is None
