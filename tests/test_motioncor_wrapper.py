"""``tiltflow motioncor --backend motioncor2/3`` against a fake MotionCor that prints real MotionCor2 logs.

The fake (tests/fakes/motioncor.py) prints the log of a real 28-frame TIFF run (or a real EER run) with only
file names substituted, and writes the sums from the movie it is given. So the movies here have the real
run's frame count, and the trajectory tiltflow stores must be that log's shift table.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import mrcfile
import numpy as np
import pytest
import tifffile

from builders import as_tiff
from builders import motion_series as make_series
from fakes import DATA, install
from fakes import motioncor as fake
from tiltflow import star
from tiltflow.errors import TiltflowError, ToolError
from tiltflow.motion.metadata import read_motion_star
from tiltflow.steps.common import run_star_step
from tiltflow.steps.motioncor import Options

TIFF_LOG = DATA / "appion__29123499.motioncor2.log"
EER_LOG = DATA / "appion__motioncor2_1.5.0_log.txt"


def real_shifts(log: Path) -> np.ndarray:
    """The shift table of a real log, read here line by line (independently of the wrapper's parser)."""
    rows = [ln.split("shift:")[1].split() for ln in log.read_text().splitlines() if "Frame (" in ln and "shift:" in ln]
    return np.array(rows, dtype=float)


@pytest.fixture()
def project(tmp_path, monkeypatch):
    """A 2-tilt series of 28-frame TIFF movies under tmp_path (the project root) and a fake MotionCor2 on PATH."""
    series = as_tiff(make_series(tmp_path, n_tilts=2, n_frames=28, shape=(32, 48)))
    exe = install(tmp_path / "bin", "MotionCor2", "motioncor")
    monkeypatch.setenv("PATH", f"{exe.parent}{os.pathsep}{os.environ['PATH']}")
    record = tmp_path / "calls.jsonl"
    monkeypatch.setenv("FAKE_MC_RECORD", str(record))
    for var in ("FAKE_MC_FAIL", "FAKE_MC_NOOUTPUT", "TILTFLOW_MOTIONCOR2", "RELION_MOTIONCOR2_EXECUTABLE"):
        monkeypatch.delenv(var, raising=False)
    series["record"] = record
    series["exe"] = exe
    return series


def calls(record: Path) -> list[dict]:
    return [json.loads(line) for line in record.read_text().splitlines()]


def test_motioncor2_backend_writes_relion_outputs(project, tmp_path):
    with mrcfile.new(tmp_path / "gain/defects.mrc") as m:  # the gain step's dead-pixel map goes to -DefectMap
        m.set_data(np.zeros((32, 48), np.int8))
    opts = Options(backend="motioncor2", gain=(tmp_path / "gain/gain.mrc"), bin=2, patches=(5, 5))
    out = run_star_step("motioncor", project["star"], "motioncor", root=tmp_path, options=opts)
    assert out == (tmp_path / "motioncor/TS_01/TS_01.star")
    ts = star.read_tilt_series(out)
    assert ts.globals[star.TS_PIXEL_SIZE] == pytest.approx(4.0)
    row = ts.tilts.iloc[1]
    root = "motioncor/TS_01/frames/TS_01_001_3_0"
    assert row[star.MICROGRAPH] == f"{root}.mrc"
    assert row[star.MICROGRAPH_EVEN] == f"{root}_EVN.mrc" and row[star.MICROGRAPH_ODD] == f"{root}_ODD.mrc"
    assert row[star.POWER_SPECTRUM] == f"{root}_PS.mrc" and row[star.MICROGRAPH_METADATA] == f"{root}.star"
    for sfx in (".mrc", "_EVN.mrc", "_ODD.mrc", "_PS.mrc", ".star", ".log", "-Patch-Full.log"):
        assert (tmp_path / (root + sfx)).is_file(), sfx
    with mrcfile.open(tmp_path / f"{root}.mrc") as m:
        assert m.data.shape == (16, 24) and m.voxel_size.x == pytest.approx(4.0)
        total = np.array(m.data)
    with mrcfile.open(tmp_path / f"{root}_EVN.mrc") as e, mrcfile.open(tmp_path / f"{root}_ODD.mrc") as o:
        np.testing.assert_allclose(e.data + o.data, total, rtol=1e-5)  # the fake's halves, moved unchanged
    # the kept log is the real one, our file names in it; the trajectory is its table, unchanged
    kept = (tmp_path / f"{root}.log").read_text()
    movie = str(project["movies"][1].resolve())
    assert f"-InTiff          {movie}" in kept and "m25apr02e_g3_00014gr" not in kept
    assert "...... Frame ( 28) shift:     1.390     -1.610" in kept
    traj, general = read_motion_star(tmp_path / f"{root}.star")
    shifts = real_shifts(TIFF_LOG)
    assert shifts.shape == (28, 2)
    # stored relative to the first frame, as RELION's data_global_shift (the real run used -FmRef -1, the
    # central frame as reference; tiltflow asks for -FmRef 0, where the two are the same)
    np.testing.assert_allclose(traj.shifts, shifts - shifts[0], atol=1e-9)
    assert general["rlnMicrographBinning"] == 2.0 and general["rlnMicrographOriginalPixelSize"] == 2.0
    # accumulated motion (RELION's rule) from those shifts: steps between frames x 2 A/px; tilt 2 starts
    # at 3 e/A^2 and gets 3/28 e/A^2 per frame; the step into frame f is early if f <= (4 - 3) / (3/28)
    steps = np.hypot(*np.diff(shifts, axis=0).T) * 2.0
    early = sum(st for f, st in zip(range(2, 29), steps, strict=True) if f <= (4 - 3) / (3 / 28))
    assert row[star.MOTION_TOTAL] == pytest.approx(steps.sum(), rel=1e-5)
    assert row[star.MOTION_EARLY] == pytest.approx(early, rel=1e-5)
    assert row[star.MOTION_LATE] == pytest.approx(steps.sum() - early, rel=1e-5)
    argv = calls(project["record"])[1]["argv"]
    joined = " ".join(argv)
    assert argv[:2] == ["-InTiff", movie]
    assert f"-Gain {(tmp_path / 'gain/gain.mrc').resolve()}" in joined
    assert f"-DefectMap {(tmp_path / 'gain/defects.mrc').resolve()}" in joined
    for part in ("-PixSize 2", "-kV 300", "-Patch 5 5", "-FtBin 2", "-SplitSum 1", "-FmRef 0", "-Gpu 0"):
        assert part in joined
    assert "-FmDose" not in joined and "-RotGain" not in joined
    assert "MotionCor2 1.2.1" in (tmp_path / "motioncor/TS_01/console.log").read_text()  # the --version line
    assert not list((tmp_path / "motioncor/TS_01/frames").glob("*part*"))  # MotionCor's work folder is gone


def test_dose_weighting_uses_the_dw_sum(project, tmp_path):
    opts = Options(backend="motioncor2", dose_weighting=True, even_odd=False)
    ts = star.read_tilt_series(run_star_step("motioncor", project["star"], "mc", root=tmp_path, options=opts))
    assert star.MICROGRAPH_EVEN not in ts.tilts.columns
    argv = " ".join(calls(project["record"])[1]["argv"])
    assert f"-FmDose {3 / 28:.6g}" in argv and "-InitDose 3" in argv  # tilt 2: 3 e/A^2 before it
    root = "mc/TS_01/frames/TS_01_001_3_0"
    raw = tifffile.imread(project["movies"][1]).astype(np.float32).sum(axis=0)[::-1]  # MotionCor's rows
    np.testing.assert_allclose(mrcfile.read(tmp_path / f"{root}.mrc"), 0.9 * raw, rtol=1e-4)  # the _DW sum is the image


def test_throw_is_passed_with_motioncors_dose_bookkeeping(project, tmp_path):
    """No real log covers -Throw (the fake refuses), but the command line is checked before that."""
    with pytest.raises(ToolError, match="no real transcript for -throw"):
        run_star_step("motioncor", project["star"], "mc", root=tmp_path, options=Options(backend="motioncor2", throw=1, dose_weighting=True))
    argv = " ".join(calls(project["record"])[0]["argv"])
    # MotionCor restarts its dose count after -Throw, so InitDose includes frame 1 (0 + 3/28)
    assert "-Throw 1" in argv and f"-InitDose {3 / 28:.6g}" in argv


def test_real_logs_replayed_with_only_file_names_substituted(tmp_path):
    """The fake's stdout is the real log, line for line, but for the paths of the real run."""
    import subprocess

    exe = install(tmp_path / "bin", "MotionCor2", "motioncor")
    movie = tmp_path / "m.tif"
    tifffile.imwrite(movie, np.ones((28, 8, 8), np.uint16))
    proc = subprocess.run([str(exe), "-InTiff", str(movie), "-OutMrc", str(tmp_path / "o.mrc"), "-PixSize", "1"],
                          capture_output=True, text=True, check=True)
    real = TIFF_LOG.read_text().splitlines()
    got = proc.stdout.splitlines()
    assert len(got) == len(real)
    changed = [(r, g) for r, g in zip(real, got, strict=True) if r != g]
    assert [g.split()[0] for _, g in changed] == ["-InTiff", "-OutMrc"]
    assert fake.frames_in(TIFF_LOG.read_text()) == 28 and fake.frames_in(EER_LOG.read_text()) == 16


def test_tool_failure_names_the_tilt_and_writes_no_star(project, monkeypatch, tmp_path):
    before = project["star"].read_bytes()
    monkeypatch.setenv("FAKE_MC_FAIL", "1")
    with pytest.raises(ToolError, match=r"MotionCor2 failed on tilt 1 \(TS_01_000_0\.0\.tif\).*All GPUs are in use"):
        run_star_step("motioncor", project["star"], "mc", root=tmp_path, options=Options(backend="motioncor2"))
    assert not (tmp_path / "mc/TS_01/TS_01.star").exists()
    assert project["star"].read_bytes() == before
    frames = (tmp_path / "mc/TS_01/frames")
    assert not list(frames.glob("*.mrc")) and not list(frames.glob("*part*"))
    assert "All GPUs are in use" in (frames / "TS_01_000_0_0.log").read_text()  # the log is kept
    assert "MotionCor2 failed on tilt 1" in (tmp_path / "mc/TS_01/error.log").read_text()


def test_tool_that_writes_nothing(project, monkeypatch, tmp_path):
    monkeypatch.setenv("FAKE_MC_NOOUTPUT", "1")
    with pytest.raises(ToolError, match=r"exited normally on tilt 1 .* did not write TS_01_000_0_0\.mrc"):
        run_star_step("motioncor", project["star"], "mc", root=tmp_path, options=Options(backend="motioncor2"))
    assert not (tmp_path / "mc/TS_01/TS_01.star").exists()


def test_missing_motioncor_and_explicit_executable(project, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(TiltflowError, match=r"MotionCor3 not found .*--executable"):
        run_star_step("motioncor", project["star"], "mc", root=tmp_path, options=Options(backend="motioncor3"))
    # an explicit path works without PATH, and MotionCor3's version line is recognised
    run_star_step("motioncor", project["star"], "mc", root=tmp_path, options=Options(backend="motioncor3", executable=str(project["exe"]),
                                                          extra_args="-Iter 10"))
    assert "MotionCor3 version" not in (tmp_path / "mc/TS_01/error.log").read_text()
    assert "MotionCor3 1.2.1" in (tmp_path / "mc/TS_01/console.log").read_text()
    assert calls(project["record"])[-1]["argv"][-2:] == ["-Iter", "10"]


def test_eer_movie_gets_an_fmint_file(tmp_path, monkeypatch, project):
    """The real EER run: 1539 fractions in 16 frames (96 each); its log's 16-row table is the trajectory."""
    from tiltflow.io.eer import write_eer

    rng = np.random.default_rng(1)
    events = (rng.random((1539, 16, 16)) < 0.05).astype(np.uint8)
    write_eer(tmp_path / "frames" / "TS_01_000_0.0.eer", events, pixel_size=2.0)
    ts = star.read_tilt_series(project["star"])
    ts.tilts = ts.tilts.iloc[:1].copy()
    ts.tilts[star.MOVIE] = "frames/TS_01_000_0.0.eer"
    ts.tilts[star.FRAME_COUNT] = 1539
    eer_star = star.write_tilt_series(ts, tmp_path / "eer.star")
    opts = Options(backend="motioncor2", eer_grouping=96, eer_sampling=2, dose_weighting=True)
    out = star.read_tilt_series(run_star_step("motioncor", eer_star, "mc", root=tmp_path, options=opts))
    call = calls(project["record"])[-1]
    joined = " ".join(call["argv"])
    assert call["fmint"] == f"1539 96 {3.0 / 1539:.6g}\n"  # N_raw N_per_frame dose_per_raw_frame
    assert "-InEer" in joined and "-EerSampling 2" in joined
    assert f"-FmDose {96 * 3.0 / 1539:.6g}" in joined and "-InitDose 0" in joined
    traj, general = read_motion_star(tmp_path / out.tilts.iloc[0][star.MICROGRAPH_METADATA])
    assert traj.n_frames == 16 and general["rlnImageSizeX"] == 32  # 8k rendering of a 16-pixel sensor
    eer = real_shifts(EER_LOG)
    np.testing.assert_allclose(traj.shifts, eer - eer[0], atol=1e-9)


def test_a_dotted_folder_does_not_redirect_the_outputs(tmp_path, monkeypatch, project):
    """MotionCor cuts -OutMrc at the first '.st'/'.mrc' anywhere in the path: run it in its own folder."""
    root = tmp_path / "run.stage2"
    root.mkdir()
    series = as_tiff(make_series(root, n_tilts=1, n_frames=28, shape=(32, 32)))
    out = star.read_tilt_series(run_star_step("motioncor", series["star"], "mc", Options(backend="motioncor2"), root))
    assert (root / out.tilts.iloc[0][star.MICROGRAPH]).is_file()
    assert not list(tmp_path.glob("run*_EVN.mrc")) and not list(tmp_path.glob("run*.mrc"))
