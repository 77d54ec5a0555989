"""`tiltflow import` / `inspect`: RELION's Import output reproduced, outputs, and one-line errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tiltflow import star
from tiltflow.cli import main as cli_main
from tiltflow.errors import TiltflowError
from tiltflow.steps.importer import Options, run_session

DATA = Path(__file__).parent / "data"
RELION_TS01 = DATA / "cets-relion__Import_job001_tilt_series_TS_01.star"


@pytest.fixture
def project(tmp_path):
    """A project root holding session/TS_01.mrc.mdoc and its (empty) movies in session/frames."""
    session = tmp_path / "session"
    (session / "frames").mkdir(parents=True)
    shutil.copy(DATA / "mdocfile__TS_01.mrc.mdoc", session / "TS_01.mrc.mdoc")
    _, relion = star.read_relion_tilt_table(RELION_TS01)
    for movie in relion[star.MOVIE]:
        (session / "frames" / Path(movie).name).write_bytes(b"")
    return tmp_path


def test_import_matches_relion_import_job(project):
    result = run_session("session", "import", Options(dose_per_tilt=3.0), project)
    assert result.series_stars == [(project / "import/TS_01/TS_01.star")]
    ts = star.read_tilt_series(project / "import/TS_01/TS_01.star")
    _, relion = star.read_relion_tilt_table(RELION_TS01)
    ours = ts.tilts
    assert len(ours) == len(relion) == 41
    assert ours[star.NOMINAL_TILT].tolist() == pytest.approx(relion[star.NOMINAL_TILT].tolist(), abs=1e-5)
    assert ours[star.PRE_EXPOSURE].tolist() == pytest.approx(relion[star.PRE_EXPOSURE].tolist())
    assert [Path(m).name for m in ours[star.MOVIE]] == [Path(m).name for m in relion[star.MOVIE]]
    assert ours[star.FRAME_COUNT].tolist() == relion[star.FRAME_COUNT].tolist()
    assert ours[star.NOMINAL_DEFOCUS].tolist() == relion[star.NOMINAL_DEFOCUS].tolist()
    # movies under the project root are written relative to it
    assert ours[star.MOVIE].iloc[0] == "session/frames/TS_01_000_0.0.mrc"
    # tiltflow extras
    assert ours["tfAcquisitionIndex"].tolist() == list(range(41))
    assert ours["tfZValue"].tolist() == list(range(41))
    assert set(ours["tfDose"]) == {3.0} and set(ours["tfExposureTime"]) == {0.8}
    assert ours["tfDateTime"].iloc[0] == "2015-11-30T15:21:38"
    assert set(ours[star.NOMINAL_AXIS]) == {85.3}  # from the mdoc title (RELION's job was given 85)
    g = ts.globals
    assert g[star.VOLTAGE] == 300 and g[star.CS] == 2.7 and g[star.AMP_CONTRAST] == 0.1
    assert g[star.HAND] == -1 and g[star.OPTICS_GROUP] == "optics1"
    assert g[star.ORIGINAL_PIXEL_SIZE] == pytest.approx(1.35) and g["tfMdoc"] == "session/TS_01.mrc.mdoc"
    # the global table points at the per-series files
    tomo = star.read_tomograms(project / "import/tomograms.star")
    assert tomo[star.TOMO_NAME].tolist() == ["TS_01"]
    assert tomo[star.TS_STAR_FILE].tolist() == ["import/TS_01/TS_01.star"]
    assert star.read_tomogram_set(project / "import/tomograms.star", project)[0].tilts[star.PRE_EXPOSURE].iloc[-1] == 120.0
    log = (project / "import/TS_01/console.log").read_text()
    assert "41 tilts" in log and "dose-symmetric" in log and "41/41 movies found" in log
    assert "PixelSpacing / Binning" in (project / "import/TS_01/error.log").read_text()


def test_import_options_and_missing_movies(project):
    (project / "session" / "frames" / "TS_01_040_60.0.mrc").unlink()
    run_session(["session/TS_01.mrc.mdoc"], "imp2", Options(kv=200, cs=0.01, amp_contrast=0.07, tilt_axis=-95.0,
                dose_per_tilt=2.5, hand=1, optics_group="krios2", pixel_size=0.675), project)
    ts = star.read_tilt_series(project / "imp2/TS_01/TS_01.star")
    assert ts.globals[star.VOLTAGE] == 200 and ts.globals[star.CS] == 0.01
    assert ts.globals[star.AMP_CONTRAST] == 0.07 and ts.globals[star.HAND] == 1
    assert ts.globals[star.OPTICS_GROUP] == "krios2" and ts.globals[star.ORIGINAL_PIXEL_SIZE] == 0.675
    assert set(ts.tilts[star.NOMINAL_AXIS]) == {-95.0}
    assert ts.tilts[star.PRE_EXPOSURE].iloc[3] == 7.5
    assert ts.tilts[star.MOVIE].iloc[-1] == "TS_01_040_60.0.mrc"  # missing: basename kept
    assert "1 of 41 movies not found: TS_01_040_60.0.mrc" in (project / "imp2/TS_01/error.log").read_text()


def test_import_library_errors_write_nothing(project):
    with pytest.raises(TiltflowError, match="no dose for any tilt.*--dose-per-tilt") as err:
        run_session("session", "out", Options(), project)
    assert "session/TS_01.mrc.mdoc" in str(err.value)
    with pytest.raises(TiltflowError, match="--hand 0"):
        run_session("session", "out", Options(dose_per_tilt=3, hand=0), project)
    assert not (project / "out").exists()


def _cli(args, capsys):
    code = cli_main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_cli_import_and_inspect(project, capsys, monkeypatch):
    monkeypatch.chdir(project)  # inspect names the files relative to the folder it runs in
    code, out, err = _cli(["import", "session", "--outdir", "import", "--dose-per-tilt", "3"], capsys)
    assert code == 0, err
    assert "1 tilt series -> import/tomograms.star" in out
    code, out, _ = _cli(["inspect", "session", "--json", "--dose-per-tilt", "3"], capsys)
    assert code == 0
    data = json.loads(out)
    s = data["series"][0]
    assert s["name"] == "TS_01" and s["mdoc"] == "session/TS_01.mrc.mdoc"
    assert s["pixel_size"] == 1.35 and s["voltage"] == 300 and s["tilt_axis"] == 85.3
    assert s["scheme"] == "dose-symmetric" and s["n_tilts"] == 41 and s["total_dose"] == 123.0
    t = s["tilts"][2]
    assert (t["z_value"], t["tilt_angle"], t["acquisition_index"], t["dose"], t["pre_exposure"]) == (
        2, -2.9986, 2, 3.0, 6.0)
    assert t["movie_found"] and t["movie"].endswith("frames/TS_01_002_-3.0.mrc")
    assert data["skipped"] == []
    code, out, _ = _cli(["inspect", "session"], capsys)
    assert code == 0 and "TS_01" in out and "41/41" in out and "dose-symmetric" in out


def test_cli_inspect_lists_skipped(tmp_path, capsys):
    for name in ("mdocfile__frame_set_single.mdoc", "mdocfile__montage_section.mdoc", "quoll__L4_ts_03_sort.mrc.mdoc"):
        shutil.copy(DATA / name, tmp_path / name)
    code, out, _ = _cli(["inspect", str(tmp_path), "--json"], capsys)
    data = json.loads(out)
    assert code == 0
    assert [s["name"] for s in data["series"]] == ["quoll__L4_ts_03_sort"]
    assert sorted(s["kind"] for s in data["skipped"]) == ["frames", "montage"]
    assert data["series"][0]["movies_found"] == 0 and len(data["series"][0]["movies_missing"]) == 41


def _incomplete(tmp_path):
    text = (DATA / "mdocfile__TS_01.mrc.mdoc").read_bytes()
    path = tmp_path / "TS_01.mrc.mdoc"
    # cut inside the first section: nothing complete to import (a cut last section is imported, with a warning)
    path.write_bytes(text[: text.index(b"[ZValue = 0]") + 40])
    return path


def _frames_only(tmp_path):
    d = tmp_path / "frames_only"
    d.mkdir()
    shutil.copy(DATA / "mdocfile__frame_set_single.mdoc", d / "a.mrc.mdoc")
    shutil.copy(DATA / "cryoCAT__TS_019_0000_8.0.mrc.mdoc", d / "b.mrc.mdoc")
    return d


@pytest.mark.parametrize(
    "case, extra, names, words",
    [
        ("missing", [], "nope.mdoc", "no such file or folder"),
        ("frames", [], "frames_only", "no tilt-series mdoc found (set aside: 2 frames)"),
        ("incomplete", ["--dose-per-tilt", "3"], "TS_01.mrc.mdoc", "incomplete mdoc"),
        ("zero-dose", [], "TS_01.mrc.mdoc", "no dose for any tilt"),
    ],
)
def test_cli_bad_input_one_line_no_output(tmp_path, capsys, case, extra, names, words):
    if case == "missing":
        target = tmp_path / "nope.mdoc"
    elif case == "frames":
        target = _frames_only(tmp_path)
    elif case == "incomplete":
        target = _incomplete(tmp_path)
    else:
        target = tmp_path / "TS_01.mrc.mdoc"
        shutil.copy(DATA / "mdocfile__TS_01.mrc.mdoc", target)
    out_dir = tmp_path / "out"
    code, _, err = _cli(["import", str(target), "--outdir", str(out_dir), *extra], capsys)
    line = _one_error_line(err)
    assert code != 0
    assert names in line and words in line, line
    # nothing written but the error.log that says why (what a Nextflow task leaves to look at)
    assert [p.name for p in out_dir.iterdir()] == ["error.log"] and words in (out_dir / "error.log").read_text()


def test_cli_inspect_incomplete_exits_nonzero(tmp_path, capsys):
    path = _incomplete(tmp_path)
    code, out, _ = _cli(["inspect", str(path), "--json"], capsys)
    assert code == 1
    assert json.loads(out)["skipped"][0]["kind"] == "incomplete"


def test_skip_incomplete_imports_the_rest(tmp_path):
    _incomplete(tmp_path)
    shutil.copy(DATA / "python-murfey__test_1_4digit-year-edit.mdoc", tmp_path / "ts_010.mrc.mdoc")
    with pytest.raises(TiltflowError, match="incomplete"):
        run_session(".", "out", Options(), tmp_path)
    result = run_session(".", "out", Options(skip_incomplete=True), tmp_path)
    assert [p.name for p in result.series_stars] == ["ts_010.star"]
    ts = star.read_tilt_series(result.series_stars[0])
    assert ts.tilts[star.PRE_EXPOSURE].iloc[1] == pytest.approx(5.45454 * 1.49179 / 1.94**2, rel=1e-4)


def test_help_in_a_real_process(tmp_path):
    env = dict(os.environ)
    for cmd in (["import", "--help"], ["inspect", "--help"]):
        r = subprocess.run([sys.executable, "-m", "tiltflow", *cmd], capture_output=True, text=True, env=env,
                           timeout=60)
        assert r.returncode == 0, r.stderr
        assert "--dose-per-tilt" in r.stdout and "--frames" in r.stdout
    r = subprocess.run([sys.executable, "-m", "tiltflow", "import", "/nonexistent/x.mdoc"], capture_output=True,
                       text=True, timeout=60, cwd=tmp_path)  # its import/error.log lands in the folder it runs in
    assert r.returncode == 2 and r.stderr.strip() == "tiltflow: error: /nonexistent/x.mdoc: no such file or folder"
