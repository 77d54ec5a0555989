"""backends.tools + toolrun.find_executable: every external program is found by the same rule, in order:
``--executable``, then its environment variables in order, then its names on PATH in order, then
``$<home>/bin`` (IMOD_DIR). One table row per tool, checked with small fake programs.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tiltflow.backends import toolrun
from tiltflow.backends.tools import TOOLS
from tiltflow.errors import ToolError

#: what every tool is expected to be found by (the field's own variables: RELION's pipeline_jobs.cpp)
EXPECTED = {
    "ctffind4": (("ctffind4", "ctffind"), ("TILTFLOW_CTFFIND", "RELION_CTFFIND_EXECUTABLE"), None),
    "ctffind5": (("ctffind5", "ctffind"), ("TILTFLOW_CTFFIND", "RELION_CTFFIND_EXECUTABLE"), None),
    "motioncor2": (("MotionCor2", "motioncor2"), ("TILTFLOW_MOTIONCOR2", "RELION_MOTIONCOR2_EXECUTABLE"), None),
    "motioncor3": (("MotionCor3", "motioncor3"), ("TILTFLOW_MOTIONCOR3",), None),
    "relion": (("relion_run_motioncorr",), ("RELION_RUN_MOTIONCORR_EXECUTABLE",), None),
    "aretomo2": (("AreTomo2",), ("RELION_ARETOMO_EXECUTABLE",), None),
    "aretomo3": (("AreTomo3",), ("RELION_ARETOMO_EXECUTABLE",), None),
    "imod": (("newstack",), (), "IMOD_DIR"),
}


def _exe(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return path


@pytest.fixture
def bare_env(tmp_path, monkeypatch):
    """No tool anywhere: PATH is an empty folder and no variable of any tool is set."""
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    for t in TOOLS.values():
        for var in (*t.env_vars, *([t.home_var] if t.home_var else [])):
            monkeypatch.delenv(var, raising=False)
    return monkeypatch


def test_every_external_backend_has_a_tool():
    from tiltflow.steps import align, ctf, motioncor, stack

    backends = {b for m in (align, ctf, motioncor, stack) for b in m.BACKENDS if b != "builtin"}
    assert backends == set(TOOLS) == set(EXPECTED)


@pytest.mark.parametrize("backend", sorted(EXPECTED))
def test_lookup_order(backend, tmp_path, bare_env):
    names, env_vars, home = EXPECTED[backend]
    tool = TOOLS[backend]
    assert (tool.executables, tool.env_vars, tool.home_var) == (names, env_vars, home)
    with pytest.raises(ToolError, match=f"{tool.name} not found") as err:
        toolrun.find_executable(tool)
    for tried in (*names, *(f"${v}" for v in env_vars)):
        assert tried in str(err.value)

    found = []
    if home:  # last resort: $IMOD_DIR/bin
        bare_env.setenv(home, str(tmp_path / "home"))
        found.append(_exe(tmp_path / "home" / "bin" / names[0]))
        assert toolrun.find_executable(tool) == found[-1]
    path_dir = tmp_path / "path"
    bare_env.setenv("PATH", str(path_dir))
    for name in reversed(names):  # PATH beats the home folder; an earlier name beats a later one
        found.append(_exe(path_dir / name))
        assert toolrun.find_executable(tool) == found[-1]
    for var in reversed(env_vars):  # a variable beats PATH; an earlier variable beats a later one
        exe = _exe(tmp_path / "env" / var / "prog")
        bare_env.setenv(var, str(exe))
        assert toolrun.find_executable(tool) == exe
    explicit = _exe(tmp_path / "explicit" / "prog")
    assert toolrun.find_executable(tool, explicit) == explicit  # --executable beats everything
    if env_vars:  # a variable naming nothing is an error, never a silent fall-back to PATH
        bare_env.setenv(env_vars[0], str(tmp_path / "missing"))
        with pytest.raises(ToolError, match=f"from \\${env_vars[0]} does not exist"):
            toolrun.find_executable(tool)


def test_version_probe_uses_the_tools_pattern_and_arguments(tmp_path):
    """CTFFIND prints its banner when started with no input: the real CTFFIND 5.0.2 banner (tests/data)."""
    log = Path(__file__).parent / "data" / "ctffind-5.0.2-run__TS_01_000_0_0_ctffind.log"
    banner = "".join(log.read_text().splitlines(keepends=True)[:8])
    ctffind = _exe(tmp_path / "ctffind")
    ctffind.write_text(f"#!/bin/sh\n[ $# -eq 0 ] && cat <<'END'\n{banner}END\n")
    assert toolrun.detect_version(ctffind, TOOLS["ctffind5"]) == "5.0.2"
    assert toolrun.detect_version(ctffind, TOOLS["motioncor2"]) is None  # asked with --version: no banner
    assert toolrun.detect_version(ctffind, TOOLS["imod"]) is None  # newstack has no version option
