"""``tiltflow motioncor`` with the built-in backend: the step contract, RELION's outputs, bad input."""

from __future__ import annotations

from pathlib import Path

import mrcfile
import numpy as np
import pytest

from builders import motion_series as make_series
from builders import rms_error
from tiltflow import star
from tiltflow.cli import main as cli
from tiltflow.errors import TiltflowError
from tiltflow.motion.metadata import read_motion_star
from tiltflow.steps.common import run_star_step
from tiltflow.steps.motioncor import Options, movie_root

DATA = Path(__file__).parent / "data"


@pytest.fixture()
def project(tmp_path):
    return make_series(tmp_path, n_tilts=3, n_frames=8, shape=(96, 128), pixel=2.0, counts=8.0)


def test_cli_writes_what_relion_motioncorr_writes(project, tmp_path):
    before = project["star"].read_bytes()
    rc = cli(["motioncor", "--root", str(tmp_path), str(project["star"]), "--outdir", "motioncor", "--gain", "gain/gain.mrc", "--bin", "2",
              "--device", "cpu"])
    assert rc == 0
    out = (tmp_path / "motioncor/TS_01/TS_01.star")
    ts = star.read_tilt_series(out)
    assert project["star"].read_bytes() == before  # the input is only read
    assert ts.globals[star.TS_PIXEL_SIZE] == pytest.approx(4.0)
    assert ts.globals[star.TS_STAR_FILE] == str(out.relative_to(tmp_path))
    # the same per-tilt columns as RELION 5's MotionCorr job (plus tiltflow's tf* columns)
    _, relion = star.read_relion_tilt_table(DATA / "cets-relion__MotionCorr_job002_tilt_series_TS_01.star")
    assert set(relion.columns) <= set(ts.tilts.columns)
    assert list(ts.tilts[star.MOVIE]) == [str(Path(m).relative_to(tmp_path)) for m in project["movies"]]
    for i, row in ts.tilts.iterrows():
        root = f"motioncor/TS_01/frames/{movie_root(row[star.MOVIE])}"
        assert row[star.MICROGRAPH] == root + ".mrc"
        assert row[star.MICROGRAPH_EVEN] == root + "_EVN.mrc" and row[star.MICROGRAPH_ODD] == root + "_ODD.mrc"
        assert row[star.POWER_SPECTRUM] == root + "_PS.mrc" and row[star.MICROGRAPH_METADATA] == root + ".star"
        with mrcfile.open(tmp_path / row[star.MICROGRAPH]) as m:
            assert m.data.shape == (48, 64) and m.data.dtype == np.float32
            assert m.voxel_size.x == pytest.approx(4.0)
        with mrcfile.open(tmp_path / row[star.POWER_SPECTRUM]) as m:
            assert m.data.shape == (512, 512) and m.voxel_size.x == pytest.approx(4.0)
        traj, general = read_motion_star(tmp_path / row[star.MICROGRAPH_METADATA])
        assert general["rlnMicrographMovieName"].endswith(Path(row[star.MOVIE]).name)
        assert general["rlnMicrographGainName"] == "gain/gain.mrc"
        assert general["rlnMicrographDoseRate"] == pytest.approx(3.0 / 8)
        assert general["rlnMicrographPreExposure"] == pytest.approx(3.0 * i)
        assert rms_error(traj.drift(), project["drifts"][i]) < 0.25
        expect = traj.accumulated_motion(2.0, 3.0 / 8, 3.0 * i)
        got = (row[star.MOTION_TOTAL], row[star.MOTION_EARLY], row[star.MOTION_LATE])
        np.testing.assert_allclose(got, expect, rtol=1e-5)
        assert got[0] > 5  # several pixels of drift, in Angstrom
    assert ts.tilts.iloc[0][star.MOTION_EARLY] > 0 and ts.tilts.iloc[2][star.MOTION_EARLY] == 0  # 6 e/A^2 before
    assert "built-in motion correction on cpu" in (tmp_path / "motioncor/TS_01/console.log").read_text()
    assert "global alignment" in (tmp_path / ts.tilts.iloc[0][star.MICROGRAPH].replace(".mrc", ".log")).read_text()


def test_movies_found_by_name_in_frames_dir_and_float16(project, tmp_path):
    (tmp_path / "elsewhere").mkdir()
    for m in project["movies"]:
        m.rename((tmp_path / "elsewhere") / m.name)
    opts = Options(frames=(tmp_path / "elsewhere"), dtype="float16", even_odd=False, device="cpu")
    ts = star.read_tilt_series(run_star_step("motioncor", project["star"], "mc", opts, tmp_path))
    assert star.MICROGRAPH_EVEN not in ts.tilts.columns
    with mrcfile.open(tmp_path / ts.tilts.iloc[0][star.MICROGRAPH]) as m:
        assert m.data.dtype == np.float16 and m.data.shape == (96, 128)
    assert not (tmp_path / ts.tilts.iloc[0][star.MICROGRAPH].replace(".mrc", "_EVN.mrc")).exists()


def test_missing_movie_names_the_tilts_and_writes_nothing(project, tmp_path):
    project["movies"][1].unlink()
    with pytest.raises(TiltflowError, match=r"TS_01: movie not found for tilt 2 \(TS_01_001_3\.0\.mrc\).*--frames"):
        run_star_step("motioncor", project["star"], "mc", root=tmp_path, options=Options(device="cpu"))
    assert not (tmp_path / "mc/TS_01/TS_01.star").exists()
    assert not list((tmp_path / "mc").rglob("*.mrc"))  # checked before any movie was read


def test_gain_of_the_wrong_shape(project, tmp_path):
    with mrcfile.new(tmp_path / "gain/small.mrc") as m:
        m.set_data(np.ones((128, 96), np.float32))
    assert cli(["motioncor", "--root", str(tmp_path), str(project["star"]), "--outdir", "mc", "--gain", "gain/small.mrc"]) == 2
    with pytest.raises(TiltflowError, match=r"tilt 1 \(TS_01_000_0\.0\.mrc\): movie frames are 128x96 but the gain"):
        run_star_step("motioncor", project["star"], "mc", root=tmp_path, options=Options(gain=(tmp_path / "gain/small.mrc"), device="cpu"))
    assert not (tmp_path / "mc/TS_01/TS_01.star").exists()


def test_corrupt_movie_stops_at_that_tilt(project, tmp_path):
    bad = project["movies"][2]
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) - 5000])  # truncated: the header promises more frames
    with pytest.raises(TiltflowError, match=r"TS_01 tilt 3 \(TS_01_002_-3\.0\.mrc\): .*truncated"):
        run_star_step("motioncor", project["star"], "mc", root=tmp_path, options=Options(device="cpu"))
    assert not (tmp_path / "mc/TS_01/TS_01.star").exists()
    frames = (tmp_path / "mc/TS_01/frames")
    assert not list(frames.glob("TS_01_002*")) and not list(frames.glob("*part*"))
    assert "truncated" in (tmp_path / "mc/TS_01/error.log").read_text()


def test_dose_weighting_needs_a_dose(project, tmp_path):
    ts = star.read_tilt_series(project["star"])
    ts.tilts["tfDose"] = 0.0
    ts.tilts[star.PRE_EXPOSURE] = 0.0
    nodose = star.write_tilt_series(ts, (tmp_path / "nodose.star"))
    with pytest.raises(TiltflowError, match=r"dose weighting needs each tilt's dose \(tfDose\)"):
        run_star_step("motioncor", nodose, "mc", root=tmp_path, options=Options(dose_weighting=True, device="cpu"))
    # without tfDose the dose falls back to the pre-exposure steps (RELION's rule)
    ts = star.read_tilt_series(project["star"])
    ts.tilts = ts.tilts.drop(columns=["tfDose"])
    ts.tilts = ts.tilts.iloc[:2]
    fallback = star.write_tilt_series(ts, (tmp_path / "fallback.star"))
    out = star.read_tilt_series(run_star_step("motioncor", fallback, "mc2", root=tmp_path, options=Options(dose_weighting=True, throw=1,
                                                                                  device="cpu")))
    _, general = read_motion_star(tmp_path / out.tilts.iloc[1][star.MICROGRAPH_METADATA])
    assert general["rlnMicrographDoseRate"] == pytest.approx(3.0 / 8)
    assert general["rlnMicrographStartFrame"] == 2


def test_bad_options():
    for bad, msg in [(dict(backend="unblur"), "--backend"), (dict(dtype="int8"), "--dtype"),
                     (dict(bin=0.5), "--bin"), (dict(patches=(0, 3)), "--patches"),
                     (dict(eer_sampling=3), "--eer-sampling"), (dict(throw=-1), "--throw")]:
        with pytest.raises(TiltflowError, match=msg):
            Options(**bad).validate()


def test_movie_root_follows_relion():
    assert movie_root("frames/TS_01_000_0.0.mrc") == "TS_01_000_0_0"
    assert movie_root(r"X:\data\TS_01_002_-3.0.tif") == "TS_01_002_-3_0"
    assert movie_root("a.frames.eer") == "a_frames"
