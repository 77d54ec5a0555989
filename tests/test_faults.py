"""Faults a facility user meets (../shared/docs/review-faults.md): stale inputs, a failing rerun, bad options,
Ctrl-C/SIGTERM, a full disk, odd path spellings, one bad tilt, and the smaller ones.

A 7-tilt simulated session (128x128, 4 frames: a few seconds per run) serves the end-to-end cases; they go
through ``python -m tiltflow run`` in a subprocess, as a user runs it. Every test here failed on the code
before issue 13.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tiltflow import star
from tiltflow.runner.resume import RECORD

pytestmark = pytest.mark.slow

OPTIONS = ["--keep-tilts", "TS_01:0-6", "--thickness", "60", "--rec-pixel-size", "16", "--device", "cpu"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _command(session: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "tiltflow", "run", str(session), "--outdir", str(out),
            "--gain", str(session / "gain.mrc"), *OPTIONS, *extra]


def _run(session: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(_command(session, out, *extra), capture_output=True, text=True, timeout=1800, env=ENV)


def _simulate(out: Path) -> Path:
    from tiltflow.simulate import make_config, simulate_session

    simulate_session(make_config("tiny", tilt_min=-60.0, tilt_max=60.0, tilt_step=20.0), out)
    return out


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _voxels(path: Path) -> str:
    import mrcfile

    with mrcfile.open(path, permissive=True) as m:
        return hashlib.sha256(m.data.tobytes()).hexdigest()


def _relion_paths_exist(out: Path) -> None:
    """Every file relion/tomograms.star names exists (the export never points at missing files)."""
    table = star.read_tomograms(out / "relion" / "tomograms.star")
    for col in (star.TOMOGRAM, star.TOMOGRAM_HALF1, star.TOMOGRAM_HALF2, star.TS_STAR_FILE):
        for ref in table.get(col, []):
            assert (out / str(ref)).is_file(), ref


@pytest.fixture(scope="module")
def session(tmp_path_factory) -> Path:
    return _simulate(tmp_path_factory.mktemp("sim") / "micro")


@pytest.fixture(scope="module")
def finished(session, tmp_path_factory) -> Path:
    """A finished run of ``session``: the reference the fault cases start from (copied, never changed)."""
    out = tmp_path_factory.mktemp("ref") / "results"
    proc = _run(session, out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


# --- 1. stale results ---------------------------------------------------------------------------------
def test_a_replaced_movie_reruns_motioncor_and_everything_after_it(tmp_path):
    """Nextflow keys raw inputs on path, size and mtime: a movie replaced under the same name is noticed."""
    import numpy as np
    import tifffile

    sess = _simulate(tmp_path / "micro")
    out = tmp_path / "results"
    assert _run(sess, out).returncode == 0
    movie = sess / "TS_01_002_-20.0.tif"
    old_image = _voxels(out / "motioncor" / "TS_01" / "frames" / "TS_01_002_-20_0.mrc")
    frames = tifffile.imread(movie)
    tifffile.imwrite(movie, np.random.default_rng(7).poisson(1.0, frames.shape).astype(frames.dtype),
                     compression="lzw", photometric="minisblack")
    proc = _run(sess, out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "import: skipped (up to date)" in proc.stderr
    assert "TS_01 motioncor: done" in proc.stderr and "TS_01_002_-20.0.tif" in proc.stderr
    assert "TS_01 reconstruct: done" in proc.stderr and "export: done" in proc.stderr
    assert _voxels(out / "motioncor" / "TS_01" / "frames" / "TS_01_002_-20_0.mrc") != old_image
    again = _run(sess, out)
    assert "TS_01 motioncor: skipped (up to date)" in again.stderr and " done in " not in again.stderr


def test_a_replaced_gain_reruns_the_gain_and_what_uses_it(finished, session, tmp_path):
    import mrcfile
    import numpy as np

    sess = _copy(session, tmp_path / "micro")
    out = _copy(finished, tmp_path / "results")
    with mrcfile.open(sess / "gain.mrc", mode="r+") as m:
        m.data[:] = np.flipud(m.data).copy()
    proc = _run(sess, out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "gain: done" in proc.stderr and "TS_01 motioncor: done" in proc.stderr


# --- 2. atomic step replacement --------------------------------------------------------------------------
def _failing_reconstruct(root: Path):
    """The reconstruct call of the finished run with a pixel size its own check refuses."""
    from dataclasses import replace

    from tiltflow.runner.params import RunParams
    from tiltflow.runner.plan import series_call

    params = RunParams(thickness=60, rec_pixel_size=16, device="cpu", keep_tilts="TS_01:0-6")
    call = series_call("reconstruct", "TS_01", params, has_gain=True)
    step, in_star, step_dir, opts = call.args
    return replace(call, args=(step, in_star, step_dir, replace(opts, pixel_size=0.0)), options={"pixel_size": 0.0})


def test_a_failed_rerun_keeps_the_previous_good_result(finished, tmp_path):
    from tiltflow.runner.execute import run_step

    out = _copy(finished, tmp_path / "results")
    folder = out / "reconstruct" / "TS_01"
    kept = {p.name: _digest(p) for p in folder.iterdir() if p.name not in ("console.log", "error.log")}
    outcome = run_step(out, _failing_reconstruct(out), forced=False)
    assert outcome.status == "failed" and "--pixel-size" in (outcome.error or "")
    assert {p.name: _digest(p) for p in folder.iterdir() if p.name not in ("console.log", "error.log")} == kept
    assert not any((out / ".tiltflow-staging").glob("*"))  # the attempt left nothing behind
    _relion_paths_exist(out)


def test_a_step_killed_before_its_swap_leaves_the_old_folder_or_the_new_one(finished, tmp_path):
    """A kill -9 between the two renames of a swap: the next run puts the previous folder back."""
    from tiltflow.runner import staging

    out = _copy(finished, tmp_path / "results")
    real = out / "align" / "TS_01"
    before = _digest(real / "TS_01.star")
    os.replace(real, real.with_name(f".TS_01{staging.OLD}"))  # the first rename happened, the second not
    (out / staging.STAGING / "align__TS_01" / "align" / "TS_01").mkdir(parents=True)
    assert staging.recover(out) == 2
    assert _digest(real / "TS_01.star") == before and not (out / staging.STAGING).exists()


# --- 3. options checked before any work ---------------------------------------------------------------------
@pytest.mark.parametrize("option,value", [("--rec-pixel-size", "0"), ("--thickness", "-60"),
                                          ("--dose-per-tilt", "-3"), ("--mc-bin", "0.5")])
def test_a_bad_option_stops_the_run_before_any_step(session, tmp_path, option, value):
    out = tmp_path / "results"
    proc = _run(session, out, option, value)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith(f"tiltflow: error: {option} {value}")
    assert not (out / "gain").exists() and not (out / "import").exists()


def test_a_bad_value_in_a_params_file_names_the_key_and_the_file(session, tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("thickness: -60\n")
    proc = _run(session, tmp_path / "results", "--params-file", str(params))
    assert proc.returncode == 2 and f"'thickness' in {params}" in proc.stderr, proc.stderr


# --- 4. Ctrl-C and SIGTERM ------------------------------------------------------------------------------
def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _workers(pid: int) -> list[int]:
    """The pool's worker processes (multiprocessing's resource tracker is no worker: it leaves after its parent)."""
    out = []
    for child in _children(pid):
        try:
            cmd = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in cmd:
            out.append(child)
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize("signum,to_group", [(signal.SIGINT, True), (signal.SIGTERM, False)])
def test_a_signal_stops_every_worker_and_says_where_the_run_stopped(session, tmp_path, signum, to_group):
    """Sent once motioncor has finished (the run has steps left): every worker is gone when the run has
    exited, the run says where it stopped, nothing half-written is left and the rerun resumes.
    """
    out = tmp_path / "results"
    proc = subprocess.Popen(_command(session, out), stderr=subprocess.PIPE, text=True, env=ENV,
                            start_new_session=True)
    lines = []
    for line in proc.stderr:  # wait for the event "motioncor finished", then signal
        lines.append(line)
        if "TS_01 motioncor: done" in line:
            break
    workers = _children(proc.pid)
    assert workers and proc.poll() is None
    os.killpg(proc.pid, signum) if to_group else os.kill(proc.pid, signum)
    rest = proc.stderr.read()
    rc = proc.wait(timeout=120)  # a hang guard, not a timing assertion
    assert rc == 128 + signum, rest
    name = signal.Signals(signum).name
    message = [ln for ln in rest.splitlines() if ln.startswith("tiltflow: stopped")]
    assert len(message) == 1 and "resume" in message[0], rest
    # the worker may not have announced its next step yet when the signal came
    assert f"stopped by {name} during TS_01 " in message[0] or f"stopped by {name} after TS_01 motioncor" in message[0]
    assert "Traceback" not in rest and "leaked" not in rest
    deadline = time.monotonic() + 30  # a hang guard: a killed worker may still be on its way out
    while [p for p in workers if _alive(p)] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in workers if _alive(p)]
    assert not list(out.rglob("*.part*")) and not (out / ".tiltflow-staging").exists()
    for rec in out.rglob(RECORD):  # every folder with a record is complete
        assert (rec.parent / f"{rec.parent.name}.star").is_file() or rec.parent.name in ("gain", "import")
    rerun = _run(session, out)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "TS_01 motioncor: skipped (up to date)" in rerun.stderr


# --- 5. disk full -----------------------------------------------------------------------------------------
def test_disk_full_names_the_file_the_space_left_and_that_a_rerun_resumes(tmp_path, monkeypatch):
    from tiltflow import atomic

    def full(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "replace", full)
    target = tmp_path / "ctf" / "TS_01" / "TS_01.star"
    with pytest.raises(Exception) as info:
        atomic.write_text(target, "x")
    text = str(info.value)
    assert type(info.value).__name__ == "TiltflowError" and "\n" not in text
    assert text.startswith(f"{target}: could not be written: no space left on device (")
    assert " free on that file system" in text and "run the same command again to resume" in text
    assert not list(target.parent.glob(".*part*"))


def test_a_log_on_a_full_disk_prints_no_traceback(tmp_path, capfd):
    """console.log on /dev/full: every write fails with ENOSPC, as on a full file system."""
    import logging

    from tiltflow.steplog import step_logs

    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    (tmp_path / "console.log").symlink_to("/dev/full")
    with step_logs("ctf", tmp_path, "TS_01"):
        logging.getLogger("tiltflow").info("x" * 10000)
    assert "Traceback" not in capfd.readouterr().err


def _tmpfs_works() -> bool:
    return shutil.which("unshare") is not None and subprocess.run(
        ["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _tmpfs_works(), reason="no unprivileged mount namespace for a small tmpfs")
def test_a_run_on_a_full_tmpfs_fails_in_one_line(session, tmp_path):
    mnt = tmp_path / "full"
    mnt.mkdir()
    cmd = " ".join(f"'{c}'" for c in _command(session, mnt / "out"))
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=3m tmpfs '{mnt}' && {cmd}"],
                          capture_output=True, text=True, timeout=1800, env=ENV)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "Logging error" not in proc.stderr
    line = next(ln for ln in proc.stderr.splitlines() if ln.startswith("tiltflow run: TS_01 failed"))
    assert "could not be written: no space left on device (" in line and "free on that file system" in line
    assert "run the same command again to resume" in line


# --- 6. paths of any spelling -----------------------------------------------------------------------------
_NAMES = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="/\0"),
    min_size=1, max_size=24)


@settings(max_examples=150, deadline=None)
@given(folder=_NAMES, movie=_NAMES)
def test_every_path_a_star_file_can_hold_round_trips(tmp_path_factory, folder, movie):
    """Any printable or non-ASCII folder and file name, spaces and both quotes included: written and read
    back unchanged, or refused before writing with a message naming the character.
    """
    import pandas as pd

    from tiltflow import startext
    from tiltflow.errors import TiltflowError

    path = f"/data/{folder}/{movie}.tif"
    out = tmp_path_factory.mktemp("star") / "TS_01.star"
    ts = star.TiltSeriesStar("TS_01", {star.TOMO_NAME: "TS_01", "tfMdoc": path},
                             pd.DataFrame({star.MOVIE: [path, "plain.tif"], star.PRE_EXPOSURE: [0.0, 3.0]}))
    why = startext.unrepresentable(path)
    if why is None:
        star.write_tilt_series(ts, out)
        back = star.read_tilt_series(out)
        assert back.globals["tfMdoc"] == path and list(back.tilts[star.MOVIE]) == [path, "plain.tif"]
    else:
        with pytest.raises(TiltflowError, match="cannot write"):
            star.write_tilt_series(ts, out)
        assert not out.exists()


def test_relion_token_rules_from_its_reader():
    """src/strings.cpp nextTokenInSTAR: a quote ends only before whitespace; '#' starts a comment."""
    from tiltflow import startext

    assert startext.tokens("\"a 'q' b\"\t'x \"y\"'\tit's\t# c") == ["a 'q' b", 'x "y"', "it's"]
    assert startext.tokens("'a''\t\"\"") == ["a'", ""]


@pytest.mark.parametrize("name", ["a 'q' b", "'q' b", "sess 'q' $x ;ü", 'sess "q" $x ;ü'])
def test_import_from_a_quoted_session_folder_reads_back(session, tmp_path, name):
    sess = _copy(session, tmp_path / name)
    proc = subprocess.run([sys.executable, "-m", "tiltflow", "import", str(sess), "--outdir", "import"],
                          capture_output=True, text=True, cwd=tmp_path, env=ENV, timeout=300)
    assert proc.returncode == 0, proc.stderr
    table = star.read_tomograms(tmp_path / "import" / "tomograms.star")
    assert star.resolve(table["tfMdoc"][0], tmp_path) == sess / "TS_01.mrc.mdoc"  # relative to the project
    ts = star.read_tilt_series(tmp_path / "import" / "TS_01" / "TS_01.star")
    assert all(star.resolve(m, tmp_path).parent == sess for m in ts.tilts[star.MOVIE])


def test_a_path_no_star_quote_can_hold_is_refused_up_front(session, tmp_path):
    sess = _copy(session, tmp_path / "x 'q' \"d\" y")
    out = tmp_path / "results"
    proc = _run(sess, out)
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"tiltflow: error: {sess}/TS_01.mrc.mdoc: cannot be written into a STAR file")
    assert "both ' and \" followed by a space" in proc.stderr and not out.exists()


# --- 7. one tilt does not stop a series ----------------------------------------------------------------------
def test_a_tilt_the_ctf_fit_fails_on_is_flagged_and_the_series_goes_on(finished, session, tmp_path):
    """A blank micrograph (the CTF fitter refuses it) among 7: that tilt has no fit, with the reason, the
    exclusion drops it and the series reaches the tomogram; a failure of every tilt still stops the series.
    """
    import mrcfile
    import numpy as np

    out = _copy(finished, tmp_path / "results")
    blank = out / "motioncor" / "TS_01" / "frames" / "TS_01_005_60_0.mrc"
    with mrcfile.open(blank, mode="r+") as m:
        m.data[:] = np.zeros_like(m.data)  # same size: motioncor's record still holds
    keep = ["--keep-tilts", "TS_01:0-4,6"]
    proc = subprocess.run([*_command(session, out), *keep, "--force", "ctf"], capture_output=True, text=True,
                          timeout=1800, env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ctf = star.read_tilt_series(out / "ctf" / "TS_01" / "TS_01.star")
    problems = dict(zip(ctf.tilts["tfAcquisitionIndex"].astype(int), ctf.tilts["tfCtfProblem"].astype(str),
                        strict=True))
    assert "blank" in problems[5] and all(v in ("", "nan") for k, v in problems.items() if k != 5)
    exc = star.read_tilt_series(out / "exclude" / "TS_01" / "TS_01.star")
    flagged = exc.tilts[exc.tilts["tfAcquisitionIndex"].astype(int) == 5]
    assert int(flagged["tfExcluded"].iloc[0]) == 1 and "CTF" in str(flagged["tfExcludeReason"].iloc[0])
    assert (out / "reconstruct" / "TS_01" / "rec_TS_01.mrc").is_file()
    _relion_paths_exist(out)


def test_when_every_tilt_fails_the_series_stops_naming_the_first_problem():
    from tiltflow.errors import TiltflowError
    from tiltflow.steps.common import each_tilt

    def fit(t):
        if t == "b":
            raise TiltflowError("fitting band 30-25.3 A is empty")
        return t.upper()

    assert each_tilt(["a", "b", "c"], fit, "TS_01", "CTF fit") == (["A", None, "C"],
                                                                    {1: "fitting band 30-25.3 A is empty"})
    with pytest.raises(TiltflowError, match="TS_01: no tilt could be processed .* fitting band"):
        each_tilt(["b", "b"], fit, "TS_01", "CTF fit")


# --- 8. the smaller ones ------------------------------------------------------------------------------------
DATA = Path(__file__).parent / "data"


@pytest.mark.parametrize("old,new,message", [
    ("PixelSpacing = ", "PixelSpacing = -8 ; ", "PixelSpacing = -8 ; "),
    ("TiltAngle = ", "TiltAngle = banana ; ", "has TiltAngle = banana"),
])
def test_a_bad_mdoc_value_is_named_with_what_it_is(tmp_path, old, new, message):
    from tiltflow.metadata.session import load_session

    text = (DATA / "mdocfile__TS_01.mrc.mdoc").read_text()
    (tmp_path / "TS_01.mrc.mdoc").write_text(text.replace(old, new, 1))
    skipped = load_session(tmp_path).skipped
    assert len(skipped) == 1 and message.strip(" ;") in skipped[0].reason, skipped[0].reason
    assert "no PixelSpacing" not in skipped[0].reason and "has no TiltAngle" not in skipped[0].reason


def test_a_user_kept_tilt_stays_through_align_and_its_warning_reaches_the_summary(finished, session, tmp_path):
    """A blank tilt kept with --keep-tilts: ctf flags it, exclude keeps it, align keeps it too (with a
    warning that the run summary, summary.tsv and the report show).
    """
    import mrcfile
    import numpy as np

    out = _copy(finished, tmp_path / "results")
    blank = out / "motioncor" / "TS_01" / "frames" / "TS_01_005_60_0.mrc"
    with mrcfile.open(blank, mode="r+") as m:
        m.data[:] = np.zeros_like(m.data)
    proc = subprocess.run([*_command(session, out), "--force", "ctf"], capture_output=True, text=True,
                          timeout=1800, env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ali = star.read_tilt_series(out / "align" / "TS_01" / "TS_01.star")
    assert 5 in set(ali.tilts["tfAcquisitionIndex"].astype(int)) and len(ali.tilts) == 7
    assert "warning: TS_01 align: " in proc.stderr and "kept with --keep-tilts" in proc.stderr
    assert "kept with --keep-tilts" in (out / "summary.tsv").read_text()
    assert "kept with --keep-tilts" in (out / "report" / "report.html").read_text()


@pytest.mark.skipif(not _tmpfs_works(), reason="no unprivileged mount namespace for a read-only bind mount")
def test_a_read_only_results_folder_reports_a_finished_run_or_names_the_step_to_run(finished, session, tmp_path):
    out = _copy(finished, tmp_path / "results")
    ok = " ".join(f"'{c}'" for c in _command(session, out))
    changed = " ".join(f"'{c}'" for c in _command(session, out, "--rec-pixel-size", "20"))
    script = (f"mount --bind '{out}' '{out}' && mount -o remount,ro,bind '{out}' '{out}' && {ok}; echo rc=$?; "
              f"{changed}; echo rc=$?")
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, timeout=1800,
                          env=ENV)
    assert "is read-only; every step is up to date" in proc.stderr and "rc=0" in proc.stdout, proc.stderr
    assert "read-only and TS_01 reconstruct is not up to date (options changed (pixel_size))" in proc.stderr
    assert "rc=2" in proc.stdout and "OSError" not in proc.stderr


def test_an_mdoc_still_being_written_is_imported_up_to_its_last_complete_section(tmp_path):
    text = (DATA / "mdocfile__TS_01.mrc.mdoc").read_bytes()
    mdoc = tmp_path / "TS_01.mrc.mdoc"
    mdoc.write_bytes(text[: text.rindex(b"SubFramePath") + 20])  # cut inside the last section, no newline
    proc = subprocess.run([sys.executable, "-m", "tiltflow", "import", str(mdoc), "--outdir", "import",
                           "--dose-per-tilt", "3"], capture_output=True, text=True, cwd=tmp_path, env=ENV, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "still being written" in proc.stderr and "left out [ZValue = 40]" in proc.stderr
    assert len(star.read_tilt_series(tmp_path / "import" / "TS_01" / "TS_01.star").tilts) == 40


def test_align_messages_name_the_series_once(tmp_path, monkeypatch):
    """The aligner's messages already say "tilt series <name>": the step passes the bare name."""
    import mrcfile
    import numpy as np
    import pandas as pd

    from tiltflow.align import pipeline
    from tiltflow.steps import align

    seen = {}
    real = pipeline.align_stack

    def aligner(stack, nominal, axis, px, options, name):
        seen["name"] = name
        return real(stack[:2], nominal[:2], axis, px, options, name=name)  # too few tilts

    monkeypatch.setattr(pipeline, "align_stack", aligner)
    stack = tmp_path / "TS_01.mrc"
    with mrcfile.new(stack) as m:
        m.set_data(np.random.default_rng(1).normal(size=(5, 32, 32)).astype(np.float32))
    from tiltflow.errors import TiltflowError

    with pytest.raises(TiltflowError) as info:
        ts = star.TiltSeriesStar("TS_01", {}, pd.DataFrame({star.NOMINAL_TILT: np.linspace(-40, 40, 5)}))
        align._BuiltinAligner(align.Options(device="cpu")).process(ts, stack, tmp_path, 85.0, 8.0)
    assert seen["name"] == "TS_01" and str(info.value).startswith("tilt series TS_01: only 2 tilts")


def test_the_default_ctf_limit_follows_the_sampling_so_a_simulated_session_runs_with_the_defaults():
    """The tiny preset (8 A pixels, Nyquist 16 A) fits its rings to about 25 A: the default 20 A limit excluded
    every tilt. The default now stays 5 pixels or coarser; a limit the user gives is used as given.
    """
    from tiltflow.qc.exclusion import Thresholds
    from tiltflow.steps.exclude import ctf_limit_for

    def series(px: float) -> star.TiltSeriesStar:
        return star.TiltSeriesStar("TS_01", {star.TS_PIXEL_SIZE: px})

    assert ctf_limit_for(series(8.0), Thresholds()).min_ctf_resolution == 40.0
    assert ctf_limit_for(series(1.35), Thresholds()).min_ctf_resolution == 20.0
    assert ctf_limit_for(series(8.0), Thresholds(min_ctf_resolution=15.0)).min_ctf_resolution == 15.0


# --- 9. a bad movie: stops the series, or with --skip-bad-movies flags its tilt ------------------------------
def _movie_series(root: Path, fmt: str) -> tuple[Path, list[Path]]:
    """3 tilts of 28-frame TIFF movies (the fake MotionCor2 replays a real 28-frame run) or 64-fraction EER
    movies, with the STAR file and gain under ``root``.
    """
    import numpy as np

    from builders import as_tiff
    from builders import motion_series as make_series
    from tiltflow.io.eer import write_eer

    series = make_series(root, n_tilts=3, n_frames=28, shape=(32, 48))
    if fmt == "tiff":
        series = as_tiff(series)
    else:
        ts = star.read_tilt_series(series["star"])
        for i, movie in enumerate(series["movies"]):
            events = np.random.default_rng(i).random((64, 32, 48)) < 0.2
            write_eer(movie.with_suffix(".eer"), events.astype(np.uint8), pixel_size=2.0)
            movie.unlink()
            ts.tilts.loc[i, star.MOVIE] = str(Path(ts.tilts[star.MOVIE].iloc[i]).with_suffix(".eer"))
            ts.tilts.loc[i, star.FRAME_COUNT] = 64
            series["movies"][i] = movie.with_suffix(".eer")
        star.write_tilt_series(ts, series["star"])
    return series["star"], series["movies"]


def _break(movie: Path, kind: str) -> None:
    """A movie as facilities meet them: gone, cut short mid-file, cut at a frame boundary, or one corrupt strip."""
    import numpy as np
    import tifffile

    from tiltflow.io.eer import write_eer

    if kind == "missing":
        movie.unlink()
    elif kind == "truncated":
        data = movie.read_bytes()
        movie.write_bytes(data[: len(data) * 6 // 10])
    elif kind == "fewer frames":  # a copy that stopped at a frame boundary: every frame it has reads
        if movie.suffix == ".eer":
            events = np.random.default_rng(9).random((40, 32, 48)) < 0.2
            write_eer(movie, events.astype(np.uint8), pixel_size=2.0)
        else:
            tifffile.imwrite(movie, tifffile.imread(movie)[:20])
    else:  # "corrupt": bytes inside one LZW strip (the TIFF structure itself is intact)
        tifffile.imwrite(movie, tifffile.imread(movie), compression="lzw", photometric="minisblack")
        with tifffile.TiffFile(movie) as tif:
            page = tif.pages[10]
            offset, size = page.dataoffsets[0], page.databytecounts[0]
        raw = bytearray(movie.read_bytes())
        raw[offset + size // 3: offset + size // 3 + 40] = bytes(range(200, 240))
        movie.write_bytes(bytes(raw))


MOVIE_PROBLEMS = {"missing": "movie not found", "truncated": "truncated", "fewer frames": "truncated movie",
                  "corrupt": "cannot read frame"}


def _backend_options(backend: str, tmp_path: Path, monkeypatch) -> dict:
    if backend == "motioncor2":
        from fakes import install

        exe = install(tmp_path / "bin", "MotionCor2", "motioncor")
        monkeypatch.setenv("PATH", f"{exe.parent}{os.pathsep}{os.environ['PATH']}")
        for var in ("FAKE_MC_FAIL", "FAKE_MC_NOOUTPUT", "TILTFLOW_MOTIONCOR2", "RELION_MOTIONCOR2_EXECUTABLE"):
            monkeypatch.delenv(var, raising=False)
        return {"backend": "motioncor2"}
    if backend == "relion":
        if shutil.which("relion_run_motioncorr") is None:
            from programs import missing

            missing("RELION (relion_run_motioncorr) is not installed (make test installs Debian's relion)")
        return {"backend": "relion", "even_odd": False}
    return {"device": "cpu"}


@pytest.mark.parametrize("fmt,kind,backend", [
    *[("tiff", kind, "builtin") for kind in ("missing", "truncated", "fewer frames", "corrupt")],
    *[("tiff", kind, backend) for kind in ("missing", "truncated", "fewer frames") for backend in ("motioncor2", "relion")],
    *[("eer", kind, "builtin") for kind in ("missing", "truncated", "fewer frames")],
])
def test_a_bad_movie_stops_the_series_or_with_skip_bad_movies_flags_only_its_tilt(tmp_path, monkeypatch, fmt, kind,
                                                                                   backend):
    """Every backend follows one rule: by default the series stops with one line naming the movie and the
    problem; with --skip-bad-movies that tilt gets tfMovieProblem (and no image), the others are corrected.
    """
    from tiltflow.errors import TiltflowError
    from tiltflow.steps.common import run_star_step
    from tiltflow.steps.motioncor import Options

    in_star, movies = _movie_series(tmp_path, fmt)
    _break(movies[1], kind)
    opts = {**_backend_options(backend, tmp_path, monkeypatch), "gain": Path("gain/gain.mrc")}
    if fmt == "eer":
        opts["eer_grouping"] = 8
    with pytest.raises(TiltflowError) as err:
        run_star_step("motioncor", in_star, "mc", Options(**opts), tmp_path)
    assert movies[1].name in str(err.value) and MOVIE_PROBLEMS[kind] in str(err.value)
    assert "\n" not in str(err.value) and not (tmp_path / "mc/TS_01/TS_01.star").exists()

    written = run_star_step("motioncor", in_star, "mc", Options(**opts, skip_bad_movies=True), tmp_path)
    ts = star.read_tilt_series(written)
    problems = list(ts.tilts[star.TF_MOVIE_PROBLEM].fillna("").astype(str))
    assert problems[0] == problems[2] == "" and MOVIE_PROBLEMS[kind] in problems[1]
    assert movies[1].name in problems[1]
    images = list(ts.tilts[star.MICROGRAPH].fillna("").astype(str))
    assert images[1] == "" and all((tmp_path / images[i]).is_file() for i in (0, 2))
    assert MOVIE_PROBLEMS[kind] in (tmp_path / "mc/TS_01/error.log").read_text()


def test_skip_bad_movies_still_stops_a_series_whose_every_movie_is_bad(tmp_path):
    from tiltflow.errors import TiltflowError
    from tiltflow.steps.common import run_star_step
    from tiltflow.steps.motioncor import Options

    in_star, movies = _movie_series(tmp_path, "tiff")
    for m in movies:
        _break(m, "truncated")
    with pytest.raises(TiltflowError, match="TS_01: no tilt could be processed .*truncated"):
        run_star_step("motioncor", in_star, "mc", Options(device="cpu", skip_bad_movies=True), tmp_path)
    assert not (tmp_path / "mc/TS_01/TS_01.star").exists()


def test_a_truncated_movie_with_skip_bad_movies_is_excluded_with_its_reason_and_shown(session, tmp_path):
    """A tiltflow run end to end: without the option the run fails naming the movie; with it the tilt is
    excluded (even though --keep-tilts names it: there is no image to keep), the tomogram is made from the
    other six, and the run summary, summary.tsv and the report say why.
    """
    sess = _copy(session, tmp_path / "micro")
    movie = sess / "TS_01_003_-40.0.tif"
    movie.write_bytes(movie.read_bytes()[: movie.stat().st_size // 2])
    out = tmp_path / "results"
    proc = _run(sess, out)
    assert proc.returncode == 1
    assert f"TS_01 failed at motioncor: TS_01 tilt 4 (TS_01_003_-40.0.tif): {movie}: truncated" in proc.stderr, proc.stderr
    proc = _run(sess, out, "--skip-bad-movies")
    assert proc.returncode == 0, proc.stderr[-3000:]
    exc = star.read_tilt_series(out / "exclude" / "TS_01" / "TS_01.star")
    row = exc.tilts[exc.tilts["tfAcquisitionIndex"].astype(int) == 3].iloc[0]
    assert int(row["tfExcluded"]) == 1 and "no motion-corrected image" in row["tfExcludeReason"]
    assert "TS_01_003_-40.0.tif" in row["tfExcludeReason"] and "truncated" in row["tfExcludeReason"]
    assert len(star.read_tilt_series(out / "align" / "TS_01" / "TS_01.star").tilts) == 6
    assert (out / "reconstruct" / "TS_01" / "rec_TS_01.mrc").is_file()
    assert "warning: TS_01 motioncor: " in proc.stderr and "TS_01_003_-40.0.tif" in proc.stderr
    assert "TS_01_003_-40.0.tif" in (out / "summary.tsv").read_text()
    assert "no motion-corrected image" in (out / "report" / "report.html").read_text()
    _relion_paths_exist(out)


# --- 10. error.log says why, also when a step fails before its first log line ----------------------------------
@pytest.mark.parametrize("argv,folder,message", [
    (["ctf", "bad/TS_01/TS_01.star", "--outdir", "ctf"], "ctf/TS_01", "not a readable STAR file"),
    (["ctf", "bad/TS_01/TS_01.star", "--backend", "gctf"], "ctf/TS_01", "--backend must be one of"),
    (["ctf", "bad/TS_01/TS_01.star", "--box", "big", "--outdir=c2"], "c2/TS_01", "Invalid value for '--box'"),
    (["motioncor", "bad/TS_01/TS_01.star", "--outdir", "mc"], "mc/TS_01", "not a readable STAR file"),
    (["gain", "no_such_gain.mrc", "--outdir", "gain"], "gain", "no_such_gain.mrc"),
    (["export", "bad/TS_01/TS_01.star", "--outdir", "relion"], "relion", "not a readable STAR file"),
])
def test_a_step_command_that_fails_before_it_logs_says_why_in_its_error_log(tmp_path, monkeypatch, argv, folder,
                                                                            message):
    """What a Nextflow task leaves: the step folder's error.log has the one-line error the terminal had."""
    from tiltflow.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad" / "TS_01").mkdir(parents=True)
    (tmp_path / "bad" / "TS_01" / "TS_01.star").write_text("data_global\nloop_\n_rlnTomoName #1\n'a b\n")
    assert main(argv) == 2
    log = (tmp_path / folder / "error.log").read_text()
    assert message in log and len(log.strip().splitlines()) == 1, log


def test_a_step_that_fails_before_it_logs_under_tiltflow_run_says_why_in_its_error_log(finished, tmp_path,
                                                                                       monkeypatch):
    from tiltflow.runner.execute import run_step

    out = _copy(finished, tmp_path / "results")
    monkeypatch.chdir(tmp_path)
    log = out / "reconstruct" / "TS_01" / "error.log"
    before = log.read_text()
    outcome = run_step(out, _failing_reconstruct(out), forced=True)
    assert outcome.status == "failed"
    added = log.read_text()[len(before):]
    assert f"reconstruct TS_01 failed: {outcome.error}" in added and added.count(outcome.error) == 1


# --- 11. the "also check" list ------------------------------------------------------------------------------
def test_two_series_of_one_name_in_different_folders_are_refused_before_any_output(tmp_path, monkeypatch):
    """grid1/TS_01.mrc.mdoc and grid2/TS_01.mrc.mdoc given together would write the same import/TS_01/: one would be lost
    (it was set aside with a debug line). Now one line names both, and nothing is written.
    """
    from tiltflow.cli import main

    for grid in ("grid1", "grid2"):
        (tmp_path / "session" / grid).mkdir(parents=True)
        shutil.copy(DATA / "mdocfile__TS_01.mrc.mdoc", tmp_path / "session" / grid / "TS_01.mrc.mdoc")
    monkeypatch.chdir(tmp_path)  # the command's default root: the folder it is started in
    assert main(["import", "session/grid1/TS_01.mrc.mdoc", "session/grid2/TS_01.mrc.mdoc", "--outdir", "import"]) == 2
    log = (tmp_path / "import" / "error.log").read_text()
    assert "session/grid2/TS_01.mrc.mdoc: tilt-series name TS_01 already taken by " in log
    assert "session/grid1/TS_01.mrc.mdoc (import the two folders into different --outdir)" in log
    assert not (tmp_path / "import" / "tomograms.star").exists() and not (tmp_path / "import" / "TS_01").exists()


def test_an_outdir_inside_the_session_is_not_session_data_and_resumes(session, tmp_path):
    """results/ inside the session folder: accepted, never read as a session (its stack mdoc is tiltflow's
    own), a rerun is up to date (the results do not change the session's keys), raw files untouched.
    """
    from tiltflow.metadata.session import load_session

    sess = _copy(session, tmp_path / "micro")
    raw = {p.relative_to(sess): _digest(p) for p in sorted(sess.rglob("*")) if p.is_file()}
    out = sess / "results"
    assert _run(sess, out).returncode == 0
    again = _run(sess, out)
    assert again.returncode == 0 and " done in " not in again.stderr, again.stderr[-3000:]
    assert "TS_01 reconstruct: skipped (up to date)" in again.stderr
    found = load_session(sess)  # discovery reads the session's top-level mdocs only, never results/**
    assert [s.name for s in found.series] == ["TS_01"]
    assert not [s for s in found.skipped if out in Path(s.path).parents]
    assert {p.relative_to(sess): _digest(p) for p in sorted(sess.rglob("*"))
            if p.is_file() and out not in p.parents} == raw
