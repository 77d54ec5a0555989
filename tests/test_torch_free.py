"""Steps that need no torch never import it (importing torch is ~1.8 s of every Nextflow task, issue 14).

Each command runs in a fresh interpreter through ``cli.main``, as a Nextflow task does, and reports which
heavy modules it loaded. torch must load only where compute starts (motion correction, CTF, align,
reconstruct, exclude's handedness check), never for ``--help``, import, stack (built-in and IMOD's
newstack), export or the report.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from builders import MIC_NAME as NAME
from builders import micrograph_series as make_series
from fakes import install

pytestmark = pytest.mark.slow  # a tiny simulated session and seven fresh interpreters (~1 min on 2 loaded cores)

PROBE = """
import json, sys
from tiltflow import cli
rc = cli.main(sys.argv[1:])
print(json.dumps({"rc": rc, "torch": "torch" in sys.modules}))
"""


def _modules(cwd: Path, *argv: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-c", PROBE, *argv], cwd=cwd, capture_output=True, text=True, env=env,
                       timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A SerialEM session and a series' micrographs (the stack step's input), in one project folder."""
    from tiltflow.simulate import make_config, simulate_session

    root = tmp_path_factory.mktemp("project")
    simulate_session(make_config("tiny", tilt_min=-20.0, tilt_max=20.0, tilt_step=20.0), root / "session")
    make_series(root)
    return root


def test_the_probe_sees_torch_when_a_command_loads_it(project):
    """Control: the same probe reports torch when a command does load it (simulation computes with torch)."""
    out = _modules(project, "simulate", str(project / "sim"), "--preset", "tiny", "--tilt-min", "0",
                   "--tilt-max", "0")
    assert out == {"rc": 0, "torch": True}


def test_help_import_stack_export_and_report_never_import_torch(project):
    fake = install(project / "bin", "newstack", "newstack")
    series = f"motioncor/{NAME}/{NAME}.star"
    commands = {
        "--help": ["--help"],
        "import": ["import", "session", "--outdir", "import"],
        "stack": ["stack", series, "--outdir", "stack"],
        "stack imod": ["stack", series, "--outdir", "stack_imod", "--backend", "imod", "--executable", str(fake)],
        "export": ["export", f"stack/{NAME}/{NAME}.star", "--outdir", "relion"],
        "report": ["report", ".", "--output", "report/report.html"],
    }
    loaded = {name: _modules(project, *argv) for name, argv in commands.items()}
    assert loaded == {name: {"rc": 0, "torch": False} for name in commands}
    assert (project / "import" / "tomograms.star").is_file()
    assert (project / "relion" / "tomograms.star").is_file()
    assert (project / "report" / "report.html").is_file()
