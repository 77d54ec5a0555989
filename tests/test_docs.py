"""The documentation users read matches the code."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_cli_reference_is_generated_from_the_cli():
    res = subprocess.run([sys.executable, str(REPO / "tools" / "clidoc.py"), "--check"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    assert "make test" in readme and "make demo" in readme
    ci = (REPO / ".ci" / "run").read_text()
    assert re.search(r"(?m)^make test$", ci)


def test_makefile_installs_pinned_torch_first_and_keeps_it():
    make = (REPO / "Makefile").read_text()
    setup = make[make.index("$(VENV)/.installed:"):]
    torch_at = setup.index("$(TORCH)")
    pkg_at = setup.index('-e ".[test]"')
    assert torch_at < pkg_at
    assert "-c constraints.txt" in setup[pkg_at - 40:pkg_at]
    assert "torch==2.13.0" in (REPO / "constraints.txt").read_text()
