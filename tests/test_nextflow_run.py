"""The pipeline run for real by Nextflow (the pinned runtime of tools/nextflow, `make nextflow`).

On a tiny simulated session of two series, TS_02 losing every tilt (profile test's --exclude_tilts):
the good series reaches EXPORT and REPORT, the bad one is reported and skipped; -resume reuses every
task; a changed option for one series re-runs only that series' tasks; the results equal
`tiltflow run`'s; --input as a folder, a quoted glob or one mdoc; -stub-run.

Skipped when the runtime is not installed, except under `make nftest`/CI (TILTFLOW_NFTEST=required or
CI set), where a missing runtime is a failure.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd
import pytest

from tiltflow import star

REPO = Path(__file__).resolve().parents[1]
RUNTIME = REPO / ".tools" / "nextflow" / "lib" / ".verified"
REQUIRED = os.environ.get("TILTFLOW_NFTEST") == "required" or bool(os.environ.get("CI"))
STEPS = ("import", "motioncor", "ctf", "exclude", "stack", "align", "reconstruct", "relion")
EXCLUDE = "TS_02:0-10"  # profile test's: TS_02 loses every tilt
# profile test's settings as a params file, which `tiltflow run` reads too
TEST_PARAMS = {"exclude_tilts": EXCLUDE, "min_ctf_resolution": 40, "rec_pixel_size": 8, "thickness": 100}

if not RUNTIME.is_file() or shutil.which("java") is None:
    if REQUIRED:
        pytest.fail("Nextflow runtime not installed: run `make nextflow` (needs Java 17 and Maven)",
                    pytrace=False)
    pytest.skip("Nextflow runtime not installed (make nextflow)", allow_module_level=True)


def nextflow(args: list[str], cwd: Path, timeout: int = 1500, **env_extra: str) -> subprocess.CompletedProcess:
    """`nextflow ARGS` through the wrapper on PATH, as a user types it (``env_extra`` reaches the tasks)."""
    env = {**os.environ, "PATH": f"{REPO / 'tools' / 'nextflow'}{os.pathsep}{os.environ['PATH']}",
           "OMP_NUM_THREADS": "1", "NXF_ANSI_LOG": "false", **env_extra}
    env.pop("TILTFLOW_NFSCHEMA", None)
    res = subprocess.run(["nextflow", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    res.log = res.stdout + res.stderr  # type: ignore[attr-defined]
    return res


def trace(outdir: Path) -> dict[str, str]:
    """Task name (e.g. 'TILTFLOW:STACK (TS_02)') -> status, from Nextflow's execution trace."""
    with open(outdir / "pipeline_info" / "execution_trace.txt") as fh:
        return {row["name"]: row["status"] for row in csv.DictReader(fh, delimiter="\t")}


def _task(tasks: dict[str, str], process: str, series: str | None = None) -> str:
    hits = [s for n, s in tasks.items() if n.split(" (")[0].endswith(f":{process}")
            and (series is None or n.endswith(f"({series})"))]
    assert len(hits) == 1, f"{process} {series}: {tasks}"
    return hits[0]


@pytest.fixture(scope="module")
def session(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("nf_session")
    subprocess.run([str(REPO / ".venv" / "bin" / "tiltflow"), "simulate", str(root / "session"), "--preset", "tiny",
                    "--n-series", "2"], check=True, capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return root / "session"


@pytest.fixture(scope="module")
def launch(tmp_path_factory) -> Path:
    """The launch folder (work/, .nextflow/) shared by the real runs, so that -resume finds the cache."""
    return tmp_path_factory.mktemp("nf_launch")


def _profile_test(session: Path, outdir: Path, *extra: str) -> list[str]:
    return ["run", str(REPO), "-profile", "test", "--input", str(session), "--gain", str(session / "gain.mrc"),
            "--outdir", str(outdir), *extra]


@pytest.fixture(scope="module")
def first_run(session: Path, launch: Path) -> tuple[subprocess.CompletedProcess, Path]:
    outdir = launch / "results"
    return nextflow(_profile_test(session, outdir), launch), outdir


def test_profile_test_runs_the_good_series_to_the_end_and_skips_the_bad_one(first_run, session):
    res, outdir = first_run
    assert res.returncode == 0, res.log[-3000:]
    tasks = trace(outdir)
    assert _task(tasks, "STACK", "TS_02") == "FAILED"  # no usable tilt: tiltflow stack exits 2
    for step in ("MOTIONCOR", "CTF", "EXCLUDE", "STACK", "ALIGN", "RECONSTRUCT"):
        assert _task(tasks, step, "TS_01") == "COMPLETED"
    assert _task(tasks, "EXPORT") == "COMPLETED" and _task(tasks, "REPORT") == "COMPLETED"
    assert list(star.read_tomograms(outdir / "relion" / "tomograms.star")[star.TOMO_NAME]) == ["TS_01"]
    assert (outdir / "reconstruct" / "TS_01" / "rec_TS_01.mrc").is_file()
    assert not (outdir / "reconstruct" / "TS_02").exists()
    assert "TS_02: skipped after a failed step" in res.log
    report = (outdir / "report" / "report.html").read_text()
    assert "TS_02" in report and "Not run (yet): import" not in report
    # the published STAR files point at files that exist (no task-local staging names)
    tomograms = star.read_blocks(outdir / "import" / "tomograms.star")["global"]
    assert all(Path(p).is_file() for p in tomograms["tfMdoc"])
    _, tilts = star.read_relion_tilt_table(outdir / "relion" / "tilt_series" / "TS_01.star")
    assert all(Path(p).is_file() for p in tilts[star.MOVIE])
    listed = (outdir / "import" / "TS_01" / "movies.txt").read_text().split()
    assert sorted(listed) == sorted(str(p.resolve()) for p in session.glob("TS_01_*.tif"))
    versions = (outdir / "pipeline_info" / "software_versions.yml").read_text()
    assert versions.count('"TILTFLOW:MOTIONCOR":') == 1  # one block for two series


def test_resume_reuses_every_finished_task(first_run, session, launch):
    _, outdir = first_run
    res = nextflow([*_profile_test(session, outdir), "-resume"], launch)
    assert res.returncode == 0, res.log[-3000:]  # the trace/report/timeline files are overwritten
    tasks = trace(outdir)
    failed = {n for n, s in tasks.items() if s != "CACHED"}
    # a failed (ignored) task has no result to reuse: Nextflow runs it again, and it fails again
    assert failed == {n for n in tasks if "STACK (TS_02)" in n}, tasks
    assert _task(tasks, "STACK", "TS_02") == "FAILED"


def _star_tables(path: Path) -> dict[str, pd.DataFrame]:
    return {k: (v if isinstance(v, pd.DataFrame) else pd.DataFrame([v])) for k, v in star.read_blocks(path).items()}


def _same_star_files(ours: Path, theirs: Path, at_least: int = 14, skip: tuple[str, ...] = ()) -> None:
    """Every STAR file of ``theirs`` (the reference run; ``skip`` left out) is in ``ours`` with the same tables."""
    stars = sorted(p.relative_to(theirs) for step in STEPS for p in (theirs / step).rglob("*.star")
                   if str(p.relative_to(theirs)) not in skip)
    assert len(stars) >= at_least
    for rel in stars:
        assert (ours / rel).is_file(), f"{rel} missing from {ours}"
        a, b = _star_tables(ours / rel), _star_tables(theirs / rel)
        assert a.keys() == b.keys(), rel
        for block in a:
            pd.testing.assert_frame_equal(a[block], b[block], check_exact=False, rtol=1e-5, obj=str(rel))


def test_outputs_equal_the_local_runner(first_run, session, tmp_path):
    _, nf_out = first_run
    run_out = tmp_path / "run"
    params = tmp_path / "params.json"
    params.write_text(json.dumps(TEST_PARAMS))
    res = subprocess.run([str(REPO / ".venv" / "bin" / "tiltflow"), "run", str(session), "--gain",
                          str(session / "gain.mrc"), "--outdir", str(run_out), "--params-file", str(params)],
                         capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode != 0 and "TS_02 failed at stack" in res.stdout + res.stderr  # the same series fails
    _same_star_files(nf_out, run_out)
    for rec in sorted((run_out / "reconstruct").rglob("*.mrc")):
        with mrcfile.open(rec, permissive=True) as a, mrcfile.open(nf_out / rec.relative_to(run_out)) as b:
            assert a.data.shape == b.data.shape
            np.testing.assert_allclose(b.data, a.data, rtol=1e-4, atol=1e-4 * float(np.abs(a.data).max()))
            assert np.allclose(a.voxel_size.tolist(), b.voxel_size.tolist())


def test_a_changed_option_for_one_series_reruns_only_that_series(first_run, session, launch):
    _, outdir = first_run
    again = launch / "results_changed"
    # TS_02's entry stays as it was; TS_01 gets one
    res = nextflow([*_profile_test(session, again, "--exclude_tilts", f"{EXCLUDE};TS_01:10"), "-resume"], launch)
    assert res.returncode == 0, res.log[-3000:]
    tasks = trace(again)
    for step in ("EXCLUDE", "STACK", "ALIGN", "RECONSTRUCT"):
        assert _task(tasks, step, "TS_01") == "COMPLETED", step
    assert _task(tasks, "EXPORT") == "COMPLETED"
    for step in ("MOTIONCOR", "CTF"):
        assert _task(tasks, step, "TS_01") == "CACHED" and _task(tasks, step, "TS_02") == "CACHED"
    assert _task(tasks, "EXCLUDE", "TS_02") == "CACHED"  # its own entry did not change
    assert _task(tasks, "IMPORT") == "CACHED" and _task(tasks, "GAIN") == "CACHED"


# ---- -stub-run: the wiring, in seconds; input forms ------------------------------------------------------

def _stub(session: Path, outdir: Path, input_: str, *extra: str) -> subprocess.CompletedProcess:
    # no profile: the defaults, with the resource caps a small machine needs (resourceLimits)
    return nextflow(["run", str(REPO), "-stub-run", "--input", input_, "--max_cpus", "1", "--max_memory", "2.GB",
                     "--outdir", str(outdir), *extra], outdir.parent)


@pytest.mark.parametrize("form, imported", [("glob", ["TS_01", "TS_02"]), ("mdoc", ["TS_01"])])
def test_stub_run_with_input_as_glob_or_one_mdoc(session, tmp_path, form, imported):
    input_ = str(session / "*.mdoc") if form == "glob" else str(session / "TS_01.mrc.mdoc")
    res = _stub(session, tmp_path / "results", input_)
    assert res.returncode == 0, res.log[-3000:]
    out = tmp_path / "results"
    assert sorted(p.name for p in (out / "import").iterdir() if p.is_dir()) == imported
    for name in imported:
        assert (out / "reconstruct" / name / f"rec_{name}.mrc").is_file()
    assert (out / "relion" / "tomograms.star").is_file() and (out / "report" / "report.html").is_file()


def test_a_misspelt_series_in_exclude_tilts_stops_the_run(session, tmp_path):
    res = _stub(session, tmp_path / "results", str(session), "--exclude_tilts", "TS_02:1;TS_03:1")
    assert res.returncode != 0
    assert "--exclude_tilts: no tilt series named TS_03 (series: TS_01, TS_02)" in res.log
    assert ":MOTIONCOR" not in res.log  # stopped before any per-series task


def test_an_input_that_is_not_a_session_stops_the_run(session, tmp_path):
    res = _stub(session, tmp_path / "results", str(session / "gain.mrc"))
    assert res.returncode != 0
    assert "not a session folder, an .mdoc file or a glob of mdoc files" in res.log


def test_stub_run_under_profile_gpu_creates_every_gpu_task(session, tmp_path):
    """Profile gpu's directives (accelerator, maxForks from --max_gpus, containerOptions) are accepted when the
    processes are created; a closure as maxForks used to fail here.
    """
    res = _stub(session, tmp_path / "results", str(session), "-profile", "gpu", "--align_backend", "aretomo3")
    assert res.returncode == 0, res.log[-3000:]
    tasks = trace(tmp_path / "results")
    for step in ("MOTIONCOR", "CTF", "ALIGN", "RECONSTRUCT"):
        assert _task(tasks, step, "TS_01") == "COMPLETED"


def test_an_external_gpu_tool_without_profile_gpu_stops_before_any_task(session, tmp_path):
    res = nextflow(["run", str(REPO), "--input", str(session), "--align_backend", "aretomo3", "--outdir",
                    str(tmp_path / "results")], tmp_path)
    assert res.returncode != 0
    assert "runs on a GPU: add -profile gpu" in res.log and "Submitted process" not in res.log


# ---- faults: a task killed by the scheduler and retried; a lost work folder (scratch) and -resume --------------

def _trace_rows(outdir: Path) -> list[dict[str, str]]:
    with open(outdir / "pipeline_info" / "execution_trace.txt") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))




def test_a_task_killed_mid_write_is_retried_and_its_half_written_outputs_never_reach_the_results(
        first_run, session, tmp_path):
    """SIGKILL of a MOTIONCOR task once it has written its first image (what SLURM does at a limit): the
    task exits 137, Nextflow retries it in a fresh work folder, and the results equal the clean run's.
    """
    _, clean = first_run
    marker = tmp_path / "killed"
    outdir = tmp_path / "results"
    res = nextflow(_profile_test(session, outdir), tmp_path, PYTHONPATH=str(REPO / "tests" / "killonce"),
                   TILTFLOW_KILL_STEP="motioncor", TILTFLOW_KILL_MARKER=str(marker))
    assert res.returncode == 0, res.log[-3000:]
    killed_dir = Path(marker.read_text())  # the task folder the kill hit: half written, no STAR file
    assert list(killed_dir.glob("motioncor/*/frames/*")) and not list(killed_dir.glob("motioncor/*/*.star"))
    rows = [r for r in _trace_rows(outdir) if r["name"].split(" (")[0].endswith(":MOTIONCOR")]
    assert sorted((r["status"], r["exit"]) for r in rows) == [("COMPLETED", "0"), ("COMPLETED", "0"),
                                                              ("FAILED", "137")], rows
    _same_star_files(outdir, clean)


def test_a_lost_task_folder_is_recomputed_on_resume(first_run, session, launch):
    """A node lost the work folder of a finished task (scratch wiped) and a publish copy was cut short: -resume
    runs that task again (and what depends on its new outputs), reuses the rest, publishes every output
    again (a cut copy is replaced) and the results are those of the first run.
    """
    _, outdir = first_run
    before = outdir.parent / "results_before_loss"
    shutil.copytree(outdir, before)
    motioncor = next(r for r in _trace_rows(outdir) if r["name"].endswith(":MOTIONCOR (TS_01)")
                     and r["status"] in ("COMPLETED", "CACHED"))
    lost = next((launch / "work").glob(f"{motioncor['hash']}*"))
    shutil.rmtree(lost)
    for name in ("TS_01", "TS_02"):  # and a publish copy cut short, of the lost task and of a cached one
        published = outdir / "motioncor" / name / f"{name}.star"
        published.write_bytes(published.read_bytes()[:200])
    res = nextflow([*_profile_test(session, outdir), "-resume"], launch)
    assert res.returncode == 0, res.log[-3000:]
    tasks = trace(outdir)
    assert _task(tasks, "MOTIONCOR", "TS_01") == "COMPLETED" and _task(tasks, "MOTIONCOR", "TS_02") == "CACHED"
    assert _task(tasks, "IMPORT") == "CACHED" and _task(tasks, "GAIN") == "CACHED"
    _same_star_files(outdir, before)

# ---- --watch: the pipeline follows a session while it is being written --------------------------------

def _wait_for(pred, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    """Poll ``pred`` until true; fail naming ``what`` at the deadline or when ``proc`` has died."""
    import time

    deadline = time.monotonic() + timeout
    while not pred():
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"{what}: the process ended first ({proc.returncode}): {proc.stdout.read()[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.5)


def test_watch_follows_a_playback_session_and_gives_the_batch_results(tmp_path):
    """`--watch true` launched on an empty session folder; once FOLLOW runs, a tiny 2-series session is played
    back into it as SerialEM and PACEtomo write one (tiltflow.simulate.playback, what `tiltflow simulate
    --playback --pace 1 --interleave 2` does: movie, then its mdoc section, the two series in turn, one tilt a
    second). Both series are processed, the run ends by itself --watch_until s after the last file, and its
    STAR files and tomograms equal `tiltflow run`'s on the finished session.
    """
    from tiltflow.simulate import make_config
    from tiltflow.simulate.playback import plan_events, play
    from tiltflow.simulate.session import simulate_session
    from tiltflow.simulate.truth import load_truth

    staging, played, launch, outdir = (tmp_path / d for d in ("staging", "session", "launch", "results"))
    played.mkdir()
    launch.mkdir()
    # simulated before the launch, so that the playback starts as soon as FOLLOW runs and is not slower than
    # --watch_until; the staging folder's gain is the played one's, byte for byte, and is there at launch
    simulate_session(make_config("tiny", n_series=2, session_name="session"), staging)
    events = plan_events(load_truth(staging / "ground_truth.json"), staging, interleave=2)
    gain = staging / "gain.mrc"
    watch_params = {k: v for k, v in TEST_PARAMS.items() if k != "exclude_tilts"}
    env = {**os.environ, "PATH": f"{REPO / 'tools' / 'nextflow'}{os.pathsep}{os.environ['PATH']}",
           "OMP_NUM_THREADS": "1", "NXF_ANSI_LOG": "false"}
    env.pop("TILTFLOW_NFSCHEMA", None)
    args = ["nextflow", "run", str(REPO), "--watch", "true", "--watch_tilts", "11", "--watch_until", "30",
            "--input", str(played), "--gain", str(gain), "--outdir", str(outdir), "--max_cpus", "1",
            "--max_memory", "6.GB", *[x for k, v in watch_params.items() for x in (f"--{k}", str(v))]]
    pipeline = subprocess.Popen(args, cwd=launch, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for(lambda: any("tiltflow follow" in p.read_text() for p in launch.glob("work/*/*/.command.sh")
                              if (p.parent / ".command.begin").is_file()), 600, "FOLLOW started", pipeline)
        assert play(events, played, pace=1.0) == 22
        log, _ = pipeline.communicate(timeout=1500)  # ends by itself: --watch_until after the last section
    finally:
        if pipeline.poll() is None:
            pipeline.kill()
            pipeline.communicate()
    assert pipeline.returncode == 0, log[-3000:]
    tasks = trace(outdir)
    for step in ("MOTIONCOR", "CTF", "EXCLUDE", "STACK", "ALIGN", "RECONSTRUCT"):
        for name in ("TS_01", "TS_02"):
            assert _task(tasks, step, name) == "COMPLETED", (step, name)
    imports = [n for n, s in tasks.items() if n.split(" (")[0].endswith(":IMPORT") and s == "COMPLETED"]
    assert sorted(imports) == ["TILTFLOW:IMPORT (TS_01.mrc.mdoc)", "TILTFLOW:IMPORT (TS_02.mrc.mdoc)"], tasks
    assert _task(tasks, "EXPORT") == "COMPLETED" and _task(tasks, "REPORT") == "COMPLETED"
    follow = next(launch.glob("work/*/*/follow.log")).read_text()
    assert "stopped by idle; complete: TS_01, TS_02" in follow, follow
    assert not (outdir / "import" / "tomograms.star").exists()  # one per IMPORT task: not published

    ref = tmp_path / "run"
    params = tmp_path / "params.json"
    params.write_text(json.dumps(watch_params))
    res = subprocess.run([str(REPO / ".venv" / "bin" / "tiltflow"), "run", str(played), "--gain", str(gain),
                          "--outdir", str(ref), "--params-file", str(params)],
                         capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    _same_star_files(outdir, ref, at_least=17, skip=("import/tomograms.star",))  # one-series imports under --watch
    assert {p.name for p in (ref / "reconstruct").rglob("*.mrc")} >= {"rec_TS_01.mrc", "rec_TS_02.mrc"}
    for rec in sorted((ref / "reconstruct").rglob("*.mrc")):
        with mrcfile.open(rec, permissive=True) as a, mrcfile.open(outdir / rec.relative_to(ref)) as b:
            assert a.data.shape == b.data.shape
            np.testing.assert_allclose(b.data, a.data, rtol=1e-4, atol=1e-4 * float(np.abs(a.data).max()))
