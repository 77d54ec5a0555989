"""The tiltflow image gives the host's results: ``tiltflow simulate`` + ``tiltflow run`` on the tiny preset,
once inside the image (podman) and once on the host, must write the same session, STAR files and tomogram.

The last test runs the pipeline with the real Nextflow (``make nextflow``, the pipeline issue's runtime)
and ``-profile test,podman``: every process in the image, and a second launch with ``-resume`` reuses every
task. It is skipped while that runtime is not installed.

``make imagetest`` builds the image and runs this file with ``TILTFLOW_TEST_IMAGE`` set (``make test``
calls it); a plain ``pytest`` run skips it. Without podman it is skipped, except under CI (env CI set),
where a missing engine is a failure: CI has to test the image.

Both runs happen in the same folder (the image run mounts it at the same path), one after the other, so
that the absolute paths the STAR files hold (raw movies, gain) are the same and the files can be compared
byte for byte.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import mrcfile
import numpy as np
import pytest

from programs import missing

REPO = Path(__file__).resolve().parents[1]
IMAGE = os.environ.get("TILTFLOW_TEST_IMAGE")
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not IMAGE, reason="run by `make imagetest` (TILTFLOW_TEST_IMAGE)")]

#: one thread in both runs: torch's CPU reductions then add in the same order
ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
SIMULATE = ["simulate", "session", "--preset", "tiny", "--threads", "1"]
#: --keep-tilts: at 8 A pixels the tiny session's CTF fits miss the default 20 A limit on some tilts
RUN = ["run", "session", "--gain", "session/gain.mrc", "--outdir", "results", "--device", "cpu",
       "--thickness", "60", "--rec-pixel-size", "16", "--keep-tilts", "TS_01:0-10"]


@pytest.fixture(scope="module")
def podman() -> str:
    exe = shutil.which("podman")
    if exe is None:
        missing("podman is not installed")
    return exe


def _in_image(podman: str, workdir: Path, *args: str) -> subprocess.CompletedProcess:
    """``tiltflow ARGS`` in the image, as the calling user, offline, with ``workdir`` at the same path."""
    command = [podman, "run", "--rm", "--network", "none", "--user", f"{os.getuid()}:{os.getgid()}",
               "-v", f"{workdir}:{workdir}", "-w", str(workdir), *(f"--env={k}={v}" for k, v in ENV.items()),
               IMAGE, "tiltflow", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=900)


def _on_host(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tiltflow", *args], cwd=workdir, capture_output=True, text=True,
                          timeout=900, env={**os.environ, **ENV})


def _check(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


@pytest.fixture(scope="module")
def runs(podman, tmp_path_factory) -> dict[str, Path]:
    """The same simulate + run on the host and in the image, in one folder, moved aside after each."""
    base = tmp_path_factory.mktemp("container")
    workdir, out = base / "work", {}
    for where in ("host", "image"):
        workdir.mkdir()
        for args in (SIMULATE, RUN):
            _check(_in_image(podman, workdir, *args) if where == "image" else _on_host(workdir, *args))
        out[where] = workdir.rename(base / where)
    return out


def _files(root: Path, pattern: str) -> list[Path]:
    return sorted(p.relative_to(root) for p in root.rglob(pattern) if p.is_file())


def _json_floats(path: Path) -> tuple[object, list[float]]:
    """The JSON document with every float set to 0, and the floats in document order."""
    floats: list[float] = []
    doc = json.loads(path.read_text(), parse_float=lambda text: floats.append(float(text)) or 0.0)
    return doc, floats


def test_version_matches_the_working_tree(podman, tmp_path):
    from tiltflow import __version__

    proc = _in_image(podman, tmp_path, "--version")
    _check(proc)
    assert proc.stdout.strip() == f"tiltflow {__version__}"


def test_simulated_session_is_the_same(runs):
    """Movies, mdoc, gain and phantom byte for byte. ground_truth.json by value: some particle rotations
    (simulator metadata that no image is made from) differ in the last bit between the two Pythons.
    """
    image, host = runs["image"] / "session", runs["host"] / "session"
    files = _files(host, "*")
    assert Path("TS_01.mrc.mdoc") in files and files == _files(image, "*")
    for f in files:
        if f.name == "ground_truth.json":
            (doc_a, floats_a), (doc_b, floats_b) = _json_floats(image / f), _json_floats(host / f)
            assert doc_a == doc_b and np.allclose(floats_a, floats_b, rtol=1e-12, atol=0)
        else:
            assert (image / f).read_bytes() == (host / f).read_bytes(), f"session/{f} differs"


def test_star_files_are_the_same(runs):
    """Every STAR file of every step and the RELION export, byte for byte."""
    image, host = runs["image"] / "results", runs["host"] / "results"
    stars = _files(host, "*.star")
    assert Path("relion/tomograms.star") in stars and Path("align/TS_01/TS_01.star") in stars
    assert stars == _files(image, "*.star")
    for f in stars:
        assert (image / f).read_text() == (host / f).read_text(), f"results/{f} differs"


def test_tomogram_is_the_same(runs):
    """Voxels and voxel size (the header also holds the file's creation time, which cannot match)."""
    tomograms = _files(runs["host"] / "results", "rec_*.mrc")
    assert Path("reconstruct/TS_01/rec_TS_01.mrc") in tomograms
    assert tomograms == _files(runs["image"] / "results", "rec_*.mrc")
    for f in tomograms:
        with mrcfile.open(runs["image"] / "results" / f) as a, mrcfile.open(runs["host"] / "results" / f) as b:
            assert a.data.shape == b.data.shape and a.voxel_size == b.voxel_size
            assert np.array_equal(a.data, b.data), f"results/{f}: voxels differ"


#: the trace of the Nextflow runs: which container each task ran in
TRACE_CONFIG = """
trace {
    enabled = true
    overwrite = true
    file = "${params.outdir}/pipeline_info/container_trace.txt"
    fields = 'name,status,container'
}
"""


def _nextflow(launch: Path, outdir: Path, *extra: str) -> list[dict[str, str]]:
    """``nextflow run -profile test,podman`` through the pinned runtime's wrapper; the trace rows."""
    command = [str(REPO / "tools" / "nextflow" / "nextflow"), "run", str(REPO), "-profile", "test,podman",
               "--tiltflow_image", IMAGE, "--outdir", str(outdir), "-c", str(launch / "trace.config"), *extra]
    proc = subprocess.run(command, cwd=launch, capture_output=True, text=True, timeout=1800,
                          env={**os.environ, **ENV, "NXF_ANSI_LOG": "false"})
    _check(proc)
    with open(outdir / "pipeline_info" / "container_trace.txt") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def test_nextflow_podman_profile_runs_every_process_in_the_image_and_resumes(podman, tmp_path):
    if not (REPO / ".tools" / "nextflow" / "lib" / ".verified").is_file():
        missing("the Nextflow runtime is not installed: `make imagetest` installs it (make nextflow)")
    (tmp_path / "trace.config").write_text(TRACE_CONFIG)
    outdir = tmp_path / "results"
    first = _nextflow(tmp_path, outdir)
    assert first and all(row["container"] == IMAGE for row in first), first
    assert (outdir / "relion" / "tomograms.star").is_file()
    done = {row["name"] for row in first if row["status"] == "COMPLETED"}
    assert any("RECONSTRUCT" in name for name in done), first
    second = _nextflow(tmp_path, outdir, "-resume")
    assert {row["name"] for row in second if row["status"] == "CACHED"} >= done, second
