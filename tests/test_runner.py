"""``tiltflow run`` end to end on a tiny simulated session: layout, resume, option changes, kill -9, --jobs.

One simulated session with two tilt series serves every test; the first run (``--jobs 2``) is the
reference the others are compared with. Runs go through ``python -m tiltflow`` in a subprocess, as a user
runs them, so that exit codes, the process pool and a real ``kill -9`` are what is tested.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tiltflow import star
from tiltflow.runner import staging, testhold
from tiltflow.runner.plan import SERIES_STEPS
from tiltflow.runner.resume import RECORD

pytestmark = pytest.mark.slow

NAMES = ("TS_01", "TS_02")
#: the options of every run here (the kill test's run must match the reference run exactly)
#: --keep-tilts: at 8 A pixels the tiny session's CTF fits miss the default 20 A limit on some tilts
OPTIONS = ["--gain-rotate", "1", "--gain-flip", "2", "--device", "cpu", "--thickness", "60",
           "--rec-pixel-size", "16", "--jobs", "2", "--keep-tilts", "TS_01:0-8;TS_02:0-8"]


def _command(source: Path, out: Path, *extra: str) -> list[str]:
    """``tiltflow run`` on a session folder or one mdoc, with the session's gain and OPTIONS."""
    gain = (source if source.is_dir() else source.parent) / "gain.mrc"
    return [sys.executable, "-m", "tiltflow", "run", str(source), "--outdir", str(out), "--gain", str(gain),
            *OPTIONS, *extra]


def _run(source: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(_command(source, out, *extra), capture_output=True, text=True, timeout=600)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _result_hashes(out: Path, names=NAMES) -> dict[str, str]:
    """Every series' STAR file of every step (bytes), and its tomogram (voxels and pixel size: the MRC
    header also holds mrcfile's creation time, which a re-made file cannot share).
    """
    import mrcfile

    files = [out / step / n / f"{n}.star" for step in ("import", *SERIES_STEPS) for n in names]
    hashes = {str(f.relative_to(out)): _digest(f) for f in files}
    for n in names:
        with mrcfile.open(out / "reconstruct" / n / f"rec_{n}.mrc", permissive=True) as m:
            h = hashlib.sha256(m.data.tobytes())
            h.update(str(m.voxel_size).encode())
            hashes[f"reconstruct/{n}/rec_{n}.mrc"] = h.hexdigest()
    return hashes


@pytest.fixture(scope="module")
def session(tmp_path_factory) -> Path:
    from tiltflow.simulate import make_config, simulate_session

    out = tmp_path_factory.mktemp("sim") / "session"
    simulate_session(make_config("tiny", n_series=2, tilt_min=-40.0, tilt_max=40.0, gain_rotate=1, gain_flip=2), out)
    return out


@pytest.fixture(scope="module")
def first(session, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "results"
    t0 = time.perf_counter()
    proc = _run(session, out)
    seconds = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc, _result_hashes(out), seconds


def test_full_run_writes_the_nextflow_layout_and_relion_files(first, session):
    out, proc, _, seconds = first
    print(f"first run: {seconds:.1f} s")
    assert "2 worker(s) x" in proc.stderr  # --jobs 2: two series at a time
    assert (out / "gain" / "gain.mrc").is_file()
    assert json.loads((out / "gain" / "gain.json").read_text())["rotate"] == 1
    assert (out / "import" / "tomograms.star").is_file() and (out / "import" / RECORD).is_file()
    for n in NAMES:
        assert (out / "import" / n / f"{n}.star").is_file()
        for step in SERIES_STEPS:
            d = out / step / n
            assert (d / f"{n}.star").is_file() and (d / "console.log").is_file() and (d / RECORD).is_file()
        assert (out / "stack" / n / f"{n}.mrc").is_file()
        assert (out / "reconstruct" / n / f"rec_{n}.mrc").is_file()
        assert f"{n} reconstruct: done" in proc.stderr
    # paths inside STAR files are relative to the results folder, as in Nextflow's task folders
    ts = star.read_tilt_series(out / "reconstruct" / "TS_01" / "TS_01.star")
    assert ts.globals[star.TOMOGRAM] == "reconstruct/TS_01/rec_TS_01.mrc"
    series = star.read_tomogram_set(out / "relion" / "tomograms.star")
    assert [s.name for s in series] == list(NAMES)
    assert all(not c.startswith("tf") for s in series for c in s.tilts.columns)
    rows = (out / "summary.tsv").read_text().splitlines()
    assert len(rows) == 3 and rows[1].startswith("TS_01\tok\t")
    assert proc.stdout.strip().endswith("relion/tomograms.star")
    assert not list(out.rglob("*.part*"))


def test_demo_summary_reports_the_truth_comparison(first, session):
    out = first[0]
    proc = subprocess.run([sys.executable, "-m", "tiltflow.testing.demo_summary", str(session), str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "relion/tomograms.star" in proc.stdout and "rec_TS_02.mrc" in proc.stdout
    from tiltflow.simulate.compare import compare

    rows = compare(session, out, with_tomogram=False)
    assert [r.name for r in rows] == list(NAMES)
    assert all(r.motion_rms_px is not None and r.motion_rms_px < 1.0 for r in rows)


def test_second_run_skips_every_step_and_changes_nothing(first, session):
    out, _, hashes, _ = first
    records = {p: p.read_bytes() for p in out.rglob(RECORD)}
    proc = _run(session, out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert " done in " not in proc.stderr
    for n in NAMES:
        for step in SERIES_STEPS:
            assert f"{n} {step}: skipped (up to date)" in proc.stderr
    assert "import: skipped" in proc.stderr and "export: skipped" in proc.stderr
    assert _result_hashes(out) == hashes
    assert {p: p.read_bytes() for p in out.rglob(RECORD)} == records


@pytest.mark.parametrize("moment", testhold.MOMENTS)
def test_kill_9_then_rerun_finishes_with_the_same_result(first, session, tmp_path, moment):
    """A copy of the reference results re-made from ``align`` on is killed (the parent, with SIGKILL) while
    both series' align workers hold at ``moment`` (runner/testhold.py); the rerun gives the reference result
    byte for byte.
    """
    import shutil

    out = tmp_path / "results"
    shutil.copytree(first[0], out)
    marks = tmp_path / "held"
    marks.mkdir()
    old = {n: (out / "align" / n / RECORD).stat().st_ino for n in NAMES}
    env = {**os.environ, testhold.HOLD: f"align:{moment}", testhold.HOLD_DIR: str(marks)}
    log = tmp_path / "killed_run.txt"
    with log.open("w") as fh:
        proc = subprocess.Popen(_command(session, out, "--force", "align"), stdout=fh, stderr=fh, env=env)
    held = [marks / f"align__{n}.{moment}" for n in NAMES]
    try:
        while not all(m.exists() for m in held) and proc.poll() is None:
            time.sleep(0.02)  # waiting for an event (both markers), not for a time
        assert proc.poll() is None, f"the run ended without reaching {moment}: {log.read_text()[-2000:]}"
        # the moment is what it says: where each series' align folder is when the kill comes
        for n in NAMES:
            real, staged = out / "align" / n, out / staging.STAGING / f"align__{n}" / "align" / n
            if moment == "staged":
                assert (staged / RECORD).is_file() and (real / RECORD).stat().st_ino == old[n]
            elif moment == "promoting":
                assert not real.exists() and (staged / RECORD).is_file()
            else:
                assert (real / RECORD).stat().st_ino != old[n] and not staged.exists()
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    rerun = _run(session, out)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "TS_01 motioncor: skipped (up to date)" in rerun.stderr
    # a killed forced step left its previous, complete folder (runner/staging.py; a promotion cut in two is
    # undone), or its new one, which is up to date: nothing is half-done, and the result is the reference's
    assert not list(out.rglob("*.part*")) and not list(out.rglob(f"*{staging.OLD}"))
    assert not (out / staging.STAGING).exists()
    assert _result_hashes(out) == first[2]


def test_changed_option_reruns_only_the_affected_steps(first, session):
    out, _, hashes, _ = first
    proc = _run(session, out, "--rec-pixel-size", "24")
    assert proc.returncode == 0, proc.stderr[-3000:]
    for n in NAMES:
        for step in ("motioncor", "ctf", "exclude", "stack", "align"):
            assert f"{n} {step}: skipped (up to date)" in proc.stderr
        assert f"{n} reconstruct: done" in proc.stderr and "options changed (pixel_size)" in proc.stderr
    assert "export: done" in proc.stderr
    now = _result_hashes(out)
    assert {k: v for k, v in now.items() if not k.startswith("reconstruct")} == {
        k: v for k, v in hashes.items() if not k.startswith("reconstruct")}
    assert now["reconstruct/TS_01/rec_TS_01.mrc"] != hashes["reconstruct/TS_01/rec_TS_01.mrc"]
    import mrcfile

    with mrcfile.open(out / "reconstruct" / "TS_01" / "rec_TS_01.mrc", header_only=True) as m:
        assert abs(float(m.voxel_size.x) - 24.0) < 1.0


def test_a_failing_series_is_reported_and_the_others_finish(first, session):
    """All of TS_02's tilts excluded by the user: its stack step fails, TS_01 still reaches the end."""
    out = first[0]
    proc = _run(session, out, "--exclude-tilts", "TS_02:0-8", "--keep-tilts", "TS_01:0-8")
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "TS_02 failed at stack" in proc.stderr
    assert "TS_01 exclude: skipped (up to date)" in proc.stderr  # its own exclusions did not change
    rows = {r.split("\t")[0]: r for r in (out / "summary.tsv").read_text().splitlines()[1:]}
    assert "failed at stack" in rows["TS_02"] and "\tok\t" in rows["TS_01"]
    assert [s.name for s in star.read_tomogram_set(out / "relion" / "tomograms.star")] == ["TS_01"]
