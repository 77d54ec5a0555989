"""Session discovery, acquisition order, retakes, dose sources and movie lookup."""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path

import pytest

from tiltflow import star
from tiltflow.errors import TiltflowError
from tiltflow.metadata import dose as dose_mod
from tiltflow.metadata.discover import series_name
from tiltflow.metadata.mdoc import write_mdoc
from tiltflow.metadata.models import Tilt
from tiltflow.metadata.movies import MovieIndex, windows_basename
from tiltflow.metadata.order import detect_scheme, dose_symmetric_group_size, parse_datetime
from tiltflow.metadata.session import load_session

DATA = Path(__file__).parent / "data"


def _series(path, angles, times=None, dose=2.0, extra=None, titles=None):
    sections = []
    for z, a in enumerate(angles):
        keys = {"TiltAngle": a, "ExposureDose": dose, "ExposureTime": 1.0, "NumSubFrames": 10,
                "TargetDefocus": -3, "SubFramePath": rf"X:\frames\{Path(path).name.split('.')[0]}_{z:03d}_{a}.tif"}
        if times is not None:
            keys["DateTime"] = times[z]
        keys.update((extra or {}).get(z, {}))
        sections.append(("ZValue", z, keys))
    return write_mdoc(path, {"PixelSpacing": 1.5, "Voltage": 300, "ImageSize": (100, 100), "DataMode": 1},
                      titles if titles is not None else ["SerialEM: t", "Tilt axis angle = -95.0, binning = 1"],
                      sections)


def test_series_name_strips_all_suffixes():
    assert series_name("a/TS_01.mrc.mdoc") == "TS_01"
    assert series_name("Position_1_2.mdoc") == "Position_1_2"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("30-Nov-15  15:21:38", datetime(2015, 11, 30, 15, 21, 38)),
        ("01-Aug-2022  18:58:35", datetime(2022, 8, 1, 18, 58, 35)),
        ("24-Mar-2023 12:13:13", datetime(2023, 3, 24, 12, 13, 13)),
        ("  06-Jun-23   23:19:46 ", datetime(2023, 6, 6, 23, 19, 46)),
        ("", None),
        ("   ", None),
        ("yesterday", None),
    ],
)
def test_parse_datetime(text, expected):
    assert parse_datetime(text) == expected


def test_order_by_datetime_not_zvalue_nor_file_name(tmp_path):
    # sections sorted by angle (PACEtomo style), names suggesting another order: the clock decides
    angles = [-6.0, -3.0, 0.0, 3.0, 6.0]
    times = ["01-Aug-2022  10:00:30", "01-Aug-2022  10:00:20", "01-Aug-2022  10:00:00", "01-Aug-22  10:00:10",
             "01-Aug-2022  10:00:40"]
    _series(tmp_path / "TS_1.mrc.mdoc", angles, times)
    ts = load_session(tmp_path).series[0]
    assert [t.tilt_angle for t in ts.tilts] == [0.0, 3.0, -3.0, -6.0, 6.0]
    assert [t.z_value for t in ts.tilts] == [2, 3, 1, 0, 4]
    assert [t.pre_exposure for t in ts.tilts] == [0.0, 2.0, 4.0, 6.0, 8.0]
    assert ts.order_source == "DateTime" and ts.tilt_axis == -95.0


def test_empty_datetime_falls_back_to_zvalue(tmp_path):
    _series(tmp_path / "TS_1.mrc.mdoc", [0.0, 3.0, -3.0], ["01-Aug-2022  10:00:30", "", "01-Aug-2022  10:00:00"])
    ts = load_session(tmp_path).series[0]
    assert [t.z_value for t in ts.tilts] == [0, 1, 2]
    assert ts.order_source == "ZValue"
    assert any("no usable DateTime for 1 of 3" in w for w in ts.warnings)


def test_retake_keeps_newest_and_counts_its_dose(tmp_path):
    angles = [0.0, 3.0, -3.0, 3.1, -6.0]
    times = [f"01-Aug-22  10:00:{s:02d}" for s in (0, 10, 20, 30, 40)]
    _series(tmp_path / "TS_1.mrc.mdoc", angles, times)
    ts = load_session(tmp_path).series[0]
    assert [t.tilt_angle for t in ts.tilts] == [0.0, -3.0, 3.1, -6.0]
    assert [t.acquisition_index for t in ts.tilts] == [0, 1, 2, 3]
    assert [t.z_value for t in ts.dropped] == [1]
    # the dropped exposure still irradiated the sample
    assert [t.pre_exposure for t in ts.tilts] == [0.0, 4.0, 6.0, 8.0]
    assert ts.total_dose == pytest.approx(10.0)
    assert any("retake: dropped ZValue 1" in w and "TS_1_001_3.0.tif" in w and "ZValue 3" in w for w in ts.warnings)


def test_dose_sources_in_order_and_disagreement():
    keys = {"ExposureDose": "2.24", "FrameDosesAndNumber": "0.023687 3  0.035531 7", "DoseRate": "4.0",
            "ExposureTime": "0.5", "PixelSpacing": "2.0", "Binning": "1"}
    src = dose_mod.dose_sources(keys, None, None)
    assert list(src) == ["ExposureDose", "FrameDosesAndNumber", "DoseRate x ExposureTime"]
    assert src["FrameDosesAndNumber"] == pytest.approx(0.023687 * 3 + 0.035531 * 7)
    assert src["DoseRate x ExposureTime"] == pytest.approx(4.0 * 0.5 / 2.0**2)
    # help-page spelling, super-resolution binning 0.5: the physical pixel is twice PixelSpacing
    alt = {"FrameDosesAndNumbers": "0.5 4", "DoseRate": "8", "ExposureTime": "1", "PixelSpacing": "1", "Binning": "0.5"}
    src = dose_mod.dose_sources(alt, None, None)
    assert src == {"FrameDosesAndNumber": 2.0, "DoseRate x ExposureTime": 2.0}
    tilts = [Tilt(z, 0.0, keys=dict(keys)) for z in range(3)]
    warnings = dose_mod.assign_doses(tilts, 2.0, 1.0)
    assert all(t.dose == 2.24 and t.dose_source == "ExposureDose" for t in tilts)
    assert len(warnings) == 2 and "FrameDosesAndNumber gives 0.32" in warnings[0]
    tilts = [Tilt(z, 0.0, keys={"ExposureDose": "0"}) for z in range(2)]
    assert dose_mod.assign_doses(tilts, 1.0, 1.0, user_dose=3.0) == []
    assert [t.dose_source for t in tilts] == ["user", "user"]


def test_user_dose_and_axis_override(tmp_path):
    _series(tmp_path / "TS_1.mrc.mdoc", [0.0, 3.0], ["01-Aug-22  10:00:00", "01-Aug-22  10:00:10"], dose=0)
    ts = load_session(tmp_path).series[0]
    assert not ts.has_dose and any("no dose" in w for w in ts.warnings)
    ts = load_session(tmp_path, dose_per_tilt=3.5, tilt_axis=84.0).series[0]
    assert [t.pre_exposure for t in ts.tilts] == [0.0, 3.5]
    assert ts.tilt_axis == 84.0 and ts.tilt_axis_source == "user"


def test_scheme_detection():
    hagen = [0, 3, -3, -6, 6, 9, -9, -12, 12]
    assert detect_scheme(hagen) == "dose-symmetric" and dose_symmetric_group_size(hagen) == 2
    assert detect_scheme([0, 3, 6, -3, -6, 9, 12, -9, -12]) == "dose-symmetric"
    assert detect_scheme([-60, -57, -54, -51]) == "unidirectional"
    assert detect_scheme([-20, -17, -14, -11, -23, -26, -29]) == "bidirectional"
    assert detect_scheme([0, 3, 6, 2, -3]) == "irregular"
    assert detect_scheme([5]) == "single"


def test_discovery_sets_aside_frames_montage_duplicates(tmp_path):
    shutil.copy(DATA / "mdocfile__TS_01.mrc.mdoc", tmp_path / "TS_01.mrc.mdoc")
    shutil.copy(DATA / "mdocfile__tilt_series.mdoc", tmp_path / "TS_01.mdoc")  # same name TS_01
    shutil.copy(DATA / "mdocfile__frame_set_single.mdoc", tmp_path / "TS_01_000_0.0.mrc.mdoc")  # frames beside
    (tmp_path / "frames").mkdir()  # sub-folders are not the session (metadata/discover.py MDOC_GLOB)
    shutil.copy(DATA / "mdocfile__frame_set_single.mdoc", tmp_path / "frames" / "TS_01_001_3.0.mrc.mdoc")
    shutil.copy(DATA / "pyserialem__gm.mrc.mdoc", tmp_path / "gm.mrc.mdoc")
    s = load_session(tmp_path)
    assert [ts.name for ts in s.series] == ["TS_01"]
    kinds = {x.path.name: x.kind for x in s.skipped}
    assert kinds == {"TS_01.mrc.mdoc": "duplicate", "TS_01_000_0.0.mrc.mdoc": "frames", "gm.mrc.mdoc": "montage"}
    assert s.series[0].mdoc.name == "TS_01.mdoc"  # sorted first; the other one names it


def test_an_mdoc_still_being_written_gives_its_complete_sections_with_a_warning(tmp_path):
    text = (DATA / "mdocfile__TS_01.mrc.mdoc").read_bytes()
    (tmp_path / "TS_01.mrc.mdoc").write_bytes(text[: text.rindex(b"SubFramePath")])
    s = load_session(tmp_path)
    assert s.skipped == [] and len(s.series[0].tilts) == 40  # ZValue 0-39 of the 41
    assert "still being written" in s.series[0].warnings[0] and "[ZValue = 40] is partial" in s.series[0].warnings[0]
    s = load_session(tmp_path, expected_tilts=41)  # a definite count: still refused as a whole
    assert s.series == [] and s.skipped[0].kind == "incomplete" and s.skipped[0].is_problem


def test_missing_path_is_an_error(tmp_path):
    with pytest.raises(TiltflowError, match="no such file or folder"):
        load_session(tmp_path / "nope")
    with pytest.raises(TiltflowError, match="frames folder not found"):
        load_session(tmp_path, frames_dir=tmp_path / "nope")


def test_windows_and_unc_basenames():
    assert windows_basename(r"D:\DATA\Flo\frames\TS_01_000_0.0.mrc") == "TS_01_000_0.0.mrc"
    assert windows_basename(r"\\192.168.10.81\StorageServer\OffloadData\\TemScripting\a b.eer") == "a b.eer"
    assert windows_basename("TS_run1_1.tiff") == "TS_run1_1.tiff"


def test_movies_resolved_by_basename(tmp_path):
    session = tmp_path / "session"
    (session / "frames").mkdir(parents=True)
    other = tmp_path / "elsewhere"
    other.mkdir()
    _series(session / "TS_1.mrc.mdoc", [0.0, 3.0, -3.0],
            ["01-Aug-22  10:00:00", "01-Aug-22  10:00:10", "01-Aug-22  10:00:20"])
    (session / "frames" / "TS_1_000_0.0.tif").write_bytes(b"x")
    (other / "TS_1_001_3.0.tif").write_bytes(b"x")
    ts = load_session(session).series[0]
    assert [t.movie_found for t in ts.tilts] == [True, False, False]
    assert ts.missing_movies == ["TS_1_001_3.0.tif", "TS_1_002_-3.0.tif"]
    assert any("2 of 3 movies not found: TS_1_001_3.0.tif, TS_1_002_-3.0.tif" in w for w in ts.warnings)
    ts = load_session(session, frames_dir=other).series[0]
    assert ts.tilts[1].movie == other / "TS_1_001_3.0.tif"
    assert star.relative_to_root(ts.tilts[0].movie, session) == "frames/TS_1_000_0.0.tif"
    assert star.relative_to_root(ts.tilts[1].movie, session) == str(other / "TS_1_001_3.0.tif")
    assert MovieIndex().find(None, session) is None


def test_skipped_lines_group_frame_mdocs_but_list_problems(tmp_path):
    from tiltflow.metadata.summary import skipped_lines

    for i in range(7):
        shutil.copy(DATA / "mdocfile__frame_set_single.mdoc", tmp_path / f"m_{i}.tif.mdoc")
    text = (DATA / "mdocfile__TS_01.mrc.mdoc").read_bytes()
    (tmp_path / "TS_01.mrc.mdoc").write_bytes(text[:-40])
    rows = skipped_lines(load_session(tmp_path, expected_tilts=41))  # a definite count: still incomplete
    assert len(rows) == 2
    assert rows[0][:2] == (str(tmp_path / "TS_01.mrc.mdoc"), "incomplete")  # problems first
    assert rows[1][0] == f"7 files like {tmp_path / 'm_0.tif.mdoc'}" and rows[1][1] == "frames"
