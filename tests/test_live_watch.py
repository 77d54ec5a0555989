"""``tiltflow watch`` on a tiny session played back at speed, against ``tiltflow run`` on the finished session.

One played-back session (three series collected interleaved, PACEtomo-style) serves every test, and
carries the awkward cases a real session has:

- TS_01's third tilt: its mdoc section is written before its movie (a movie that arrives late);
- TS_02's fourth section is written in two parts, seconds apart (a section still being written);
- TS_03 is abandoned after three of its seven tilts;
- the first watch is killed with SIGKILL after TS_01's second tilt, and a second watch (polling, as on an
  NFS share) continues on the same outdir while the playback goes on.

The reference is ``tiltflow run`` on the finished session with the same options. Runs go through
``python -m tiltflow`` in a subprocess, as a facility runs them.
"""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tiltflow import star
from tiltflow.runner.plan import SERIES_STEPS

pytestmark = pytest.mark.slow

DONE = ("TS_01", "TS_02")
TILTS = 7
#: as tests/test_runner.py: at 8 A pixels the tiny session's CTF fits miss the default exclusion limit
RUN_OPTIONS = ["--gain-rotate", "1", "--gain-flip", "2", "--device", "cpu", "--thickness", "60",
               "--rec-pixel-size", "16", "--jobs", "2", "--keep-tilts", "TS_01:0-6;TS_02:0-6"]
WATCH_OPTIONS = ["--tilts", str(TILTS), "--movie-stable", "1", "--idle", "10"]


def _tiltflow(*args: str) -> list[str]:
    return [sys.executable, "-m", "tiltflow", *args]


def _events(staging: Path):
    """SerialEM's order, with the late movie, the section in two parts and the abandoned series."""
    from tiltflow.simulate.playback import Event, plan_events
    from tiltflow.simulate.truth import load_truth

    truth = load_truth(staging / "ground_truth.json")
    events = plan_events(truth, staging, interleave=3)
    movies = {(s.name, t.acquisition_index): t.movie for s in truth.series for t in s.tilts}

    def at(series: str, k: int) -> int:
        return next(i for i, e in enumerate(events) if e.series == series and e.target == movies[series, k])

    i = at("TS_01", 2)  # late movie: the section first, the movie 2 s later
    events[i], events[i + 1] = dataclasses.replace(events[i + 1], pause=2.0), events[i]
    i = at("TS_02", 3) + 1  # the section in two parts, 3 s apart (longer than --movie-stable)
    text = events[i].text
    half = len(text) // 2
    events[i:i + 1] = [Event("TS_02", events[i].target, text=text[:half], pause=3.0),
                       dataclasses.replace(events[i], text=text[half:])]
    abandoned = {movies["TS_03", k] for k in range(3, TILTS)}
    keep, drop_section = [], False
    for e in events:  # TS_03 stops after three tilts: neither its later movies nor their sections come
        if e.series == "TS_03" and (e.target in abandoned or drop_section):
            drop_section = e.target in abandoned
            continue
        drop_section = False
        keep.append(e)
    return keep


def _wait_for(pred, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"watch exited ({proc.returncode}) before {what}: {proc.stderr.read()[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    from tiltflow.simulate import make_config
    from tiltflow.simulate.playback import play
    from tiltflow.simulate.session import simulate_session

    base = tmp_path_factory.mktemp("live")
    staging, session, out = base / "staging", base / "session", base / "watch"
    cfg = make_config("tiny", n_series=3, tilt_min=-30.0, tilt_max=30.0, gain_rotate=1, gain_flip=2,
                      session_name="session")
    simulate_session(cfg, staging)
    session.mkdir()
    events = _events(staging)
    watch = _tiltflow("watch", str(session), "--outdir", str(out), "--gain", str(session / "gain.mrc"),
                      *RUN_OPTIONS, *WATCH_OPTIONS)
    first = subprocess.Popen(watch, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    player = threading.Thread(target=play, args=(events, session, 0.3), daemon=True)
    player.start()
    tilts = out / "live" / "TS_01" / "tilts"
    _wait_for(lambda: len(list(tilts.glob("*.ctf.star"))) >= 2, 600, "TS_01's second tilt", first)
    os.kill(first.pid, signal.SIGKILL)
    first.communicate(timeout=60)
    done_at_kill = sorted(p.name.removesuffix(".ctf.star") for p in tilts.glob("*.ctf.star"))
    second = subprocess.run(watch + ["--poll"], capture_output=True, text=True, timeout=1500)
    player.join(timeout=60)
    assert not player.is_alive()
    ref = base / "run"
    batch = subprocess.run(_tiltflow("run", str(session), "--outdir", str(ref), "--gain", str(session / "gain.mrc"),
                                     *RUN_OPTIONS), capture_output=True, text=True, timeout=1500)
    return {"out": out, "ref": ref, "session": session, "first": first, "second": second, "batch": batch,
            "done_at_kill": done_at_kill}


def test_watch_gives_the_batch_runs_star_files_and_tomograms(scenario):
    import mrcfile
    import numpy as np
    import pandas as pd

    out, ref = scenario["out"], scenario["ref"]
    assert scenario["second"].returncode == 0, scenario["second"].stderr[-3000:]
    # the batch run fails on TS_03 (three tilts cannot make a stack) and finishes the others
    assert all((ref / "reconstruct" / n / f"rec_{n}.mrc").is_file() for n in DONE), scenario["batch"].stderr[-3000:]
    for name in DONE:
        for step in ("import", *SERIES_STEPS):
            a = star.read_tilt_series(out / step / name / f"{name}.star")
            b = star.read_tilt_series(ref / step / name / f"{name}.star")
            assert a.globals == b.globals, (step, name)
            pd.testing.assert_frame_equal(a.tilts, b.tilts, check_exact=True, obj=f"{step}/{name}")
        with mrcfile.open(out / "reconstruct" / name / f"rec_{name}.mrc") as w, \
                mrcfile.open(ref / "reconstruct" / name / f"rec_{name}.mrc") as r:
            assert np.array_equal(w.data, r.data) and w.voxel_size == r.voxel_size
        for rel in (f"relion/tilt_series/{name}.star",):
            assert star.read_blocks(out / rel).keys() == star.read_blocks(ref / rel).keys()
            for k, v in star.read_blocks(ref / rel).items():
                pd.testing.assert_frame_equal(pd.DataFrame(star.read_blocks(out / rel)[k]), pd.DataFrame(v))
    a, b = star.read_tomograms(out / "relion" / "tomograms.star"), star.read_tomograms(ref / "relion" / "tomograms.star")
    pd.testing.assert_frame_equal(a, b)
    assert sorted(a[star.TOMO_NAME]) == list(DONE)


def test_abandoned_series_is_reported_incomplete_and_the_others_finish(scenario):
    out, second = scenario["out"], scenario["second"]
    assert re.search(r"incomplete.*TS_03", second.stderr), second.stderr[-2000:]
    rows = [line.split("\t") for line in (out / "summary.tsv").read_text().splitlines()]
    status = {r[0]: r[rows[0].index("status")] for r in rows[1:]}
    assert status == {"TS_01": "ok", "TS_02": "ok", "TS_03": "incomplete"}
    assert not (out / "reconstruct" / "TS_03").exists() and not (out / "import" / "TS_03").exists()
    assert len(list((out / "live" / "TS_03" / "tilts").glob("*.ctf.star"))) == 3  # its tilts were processed
    assert "incomplete: 3 section(s)" in (out / "live" / "index.html").read_text()


def test_late_movie_and_split_section_are_waited_for(scenario):
    out, session = scenario["out"], scenario["session"]
    partial = star.read_tilt_series(out / "live" / "TS_01" / "import.star")
    assert len(partial.tilts) == TILTS
    assert all(Path(m).is_absolute() and Path(m).is_file() for m in partial.tilts[star.MOVIE])  # found once it landed
    for name in DONE + ("TS_03",):
        errors = (out / "live" / name / "error.log").read_text() if (out / "live" / name / "error.log").exists() else ""
        assert "ERROR" not in errors, errors[-2000:]
    assert (session / "TS_02.mrc.mdoc").read_text().count("[ZValue") == TILTS


def test_killed_watch_restarts_where_it_stopped(scenario):
    out = scenario["out"]
    assert scenario["first"].returncode == -signal.SIGKILL
    log = (out / "live" / "TS_01" / "console.log").read_text()
    # motion correction per tilt over both watches, by the tilt's result name (TS_01_004_20.0.tif -> TS_01_004_20_0)
    corrected: dict[str, int] = {}
    for movie in re.findall(r"TS_01: tilt 1 \((\S+)\.tif\) total motion", log):
        corrected[movie.replace(".", "_")] = corrected.get(movie.replace(".", "_"), 0) + 1
    assert len(corrected) == TILTS, corrected
    # the restart took every tilt whose result the first watch had written as done (a tilt still running at
    # the kill, or written after its motion line but before its CTF result, is corrected again)
    assert len(scenario["done_at_kill"]) >= 2
    assert {t: corrected[t] for t in scenario["done_at_kill"]} == dict.fromkeys(scenario["done_at_kill"], 1), corrected
    assert len(list((out / "live" / "TS_01" / "tilts").glob("*.ctf.star"))) == TILTS
    assert not list(out.rglob("*.part*"))


def test_live_page_in_chromium(scenario, tmp_path):
    from programs import chromium, run_chromium

    exe = chromium()
    page = scenario["out"] / "live" / "index.html"
    n_img = len(re.findall(r"<img ", page.read_text()))
    dom = run_chromium(exe, tmp_path / "profile", "--virtual-time-budget=10000", "--dump-dom", page.resolve().as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    tag = re.search(r"<body[^>]*>", dom.stdout).group(0)
    assert 'data-loaded="1"' in tag and f'data-images="{n_img}"' in tag and n_img >= 9, tag
    assert 'data-broken-images="0"' in tag, tag
    for name in ("TS_01", "TS_02", "TS_03"):
        assert name in dom.stdout
    assert "stopped (idle)" in dom.stdout and "report.html" in dom.stdout


def _start_empty_watch(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen, Path]:
    session, out = tmp_path / "session", tmp_path / "out"
    session.mkdir()
    proc = subprocess.Popen(_tiltflow("watch", str(session), "--outdir", str(out), "--idle", "600", *extra),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    _wait_for(lambda: (out / "live" / "index.html").is_file(), 300, "the first live page", proc)
    return proc, out


def test_stop_file_ends_watch_cleanly_and_is_consumed(tmp_path):
    proc, out = _start_empty_watch(tmp_path)
    (out / "STOP").touch()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    assert "STOP found" in err and not (out / "STOP").exists()
    assert "stopped (stop file)" in (out / "live" / "index.html").read_text()


def test_ctrl_c_stops_watch_with_130(tmp_path):
    proc, out = _start_empty_watch(tmp_path, "--poll")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "interrupted" in err, err[-2000:]
    assert "stopped (interrupt)" in (out / "live" / "index.html").read_text()
