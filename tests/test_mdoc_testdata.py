"""Every real mdoc in tests/data is read as a tilt series with the right values, or set aside with a reason."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tiltflow.metadata.session import load_session

DATA = Path(__file__).parent / "data"

#: file -> (kind, words in the reason)
SET_ASIDE = {
    "cryoCAT__TS_019_0000_8.0.mrc.mdoc": ("frames", "TS_019_0000_8.0.mrc"),
    "mdocfile__frame_set_single.mdoc": ("frames", "s_mmm_00993_33.0_Oct08_07.39.05.tif"),
    "mdocfile__frame_set_multiple.mdoc": ("frame-series", "FrameTSStartEndFrames"),
    "mdocfile__montage_section.mdoc": ("montage", "62 pieces"),
    "mdocfile__montage_section_multiple.mdoc": ("montage", "90 pieces"),
    "pyserialem__gm.mrc.mdoc": ("montage", "25 pieces"),
}

#: name -> n tilts, angle range, first five (ZValue, angle) in acquisition order, {acq index: pre-exposure},
#: tilt axis, order source
SERIES = {
    "Ot2Rec__Position_1_2": (3, (-23.01, -17.01), [(0, -20.01), (1, -17.01), (2, -23.01)], {0: 0.0, 2: 4.61}, -171.35,
                             "DateTime"),
    "cryoCAT__018": (60, (-52.0064, 65.9732), [(30, 7.97729), (31, 9.98604), (32, 11.9893), (29, 5.99103), (28, 3.98928)],
                     {0: 0.0, 4: 4 * 2.23843, 59: 59 * 2.23843}, 82.9, "DateTime"),
    "cryoet-data-portal-backend__foo-TS_run1": (5, (-4.38, 4.28), [(0, -0.00499939), (1, 2.013), (2, -1.98), (3, -4.38),
                                                                   (4, 4.28)], {0: 0.0, 1: 2.35936}, 84.7, "ZValue"),
    "mdocfile__TS_01": (41, (-59.9986, 60.0006), [(0, 0.000999877), (1, 3.00113), (2, -2.99863), (3, -5.99876),
                                                  (4, 6.00126)], {0: 0.0}, 85.3, "DateTime"),
    "mdocfile__tilt_series": (41, (-59.9986, 60.0006), [(0, 0.000999877), (1, 3.00113), (2, -2.99863), (3, -5.99876),
                                                        (4, 6.00126)], {0: 0.0}, 85.3, "DateTime"),
    "python-murfey__test_1_4digit-year-edit": (11, (-12.011, 17.9858), [(0, -0.00949884), (1, 2.98863), (2, 5.98627),
                                                                        (3, -3.00913), (4, -6.00926)],
                                               {0: 0.0, 1: 5.45454 * 1.49179 / 1.94**2}, 83.8, "DateTime"),
    "quoll__L4_ts_03_sort": (41, (-51.0075, 68.9798), [(20, 8.98118), (21, 11.9778), (22, 14.9784), (19, 5.97904),
                                                       (18, 2.98091)], {0: 0.0, 10: 35.5, 40: 142.0}, 175.2962,
                             "DateTime"),
}


@pytest.fixture(scope="module")
def session():
    return load_session(DATA)


def test_every_file_is_read_or_set_aside(session):
    files = {p.name for p in DATA.glob("*.mdoc")}
    read = {ts.mdoc.name for ts in session.series}
    aside = {s.path.name for s in session.skipped}
    assert read | aside == files and not read & aside
    assert {ts.name for ts in session.series} == set(SERIES)
    for s in session.skipped:
        kind, words = SET_ASIDE[s.path.name]
        assert s.kind == kind and words in s.reason and not s.is_problem


@pytest.mark.parametrize("name", sorted(SERIES))
def test_tilt_series_values(session, name):
    n, (lo, hi), first, pre, axis, order = SERIES[name]
    ts = session.get(name)
    assert ts.n_tilts == n
    assert ts.angle_range == pytest.approx((lo, hi))
    got = [(t.z_value, t.tilt_angle) for t in ts.tilts[: len(first)]]
    assert [z for z, _ in got] == [z for z, _ in first]
    assert [a for _, a in got] == pytest.approx([a for _, a in first])
    assert [t.acquisition_index for t in ts.tilts] == list(range(n))
    for i, value in pre.items():
        assert ts.tilts[i].pre_exposure == pytest.approx(value, rel=1e-4), i
    assert ts.tilt_axis == pytest.approx(axis)
    assert ts.order_source == order
    # stacks are ordered by angle later
    assert [t.tilt_angle for t in ts.by_angle] == sorted(t.tilt_angle for t in ts.tilts)


def test_schemes_as_detected(session):
    for name in ("cryoCAT__018", "mdocfile__TS_01", "python-murfey__test_1_4digit-year-edit", "quoll__L4_ts_03_sort"):
        assert session.get(name).scheme == "dose-symmetric", name


def test_quirks(session):
    tomo5 = session.get("Ot2Rec__Position_1_2")
    assert tomo5.writer == "Tomo5" and tomo5.voltage == 300.0 and tomo5.data_mode == 6
    assert any("final newline" in w for w in tomo5.warnings)
    assert any("Tomo5" in w and "tilt axis" in w for w in tomo5.warnings)
    # PriorRecordDose (0, 4.52, 13.58) disagrees with 2.31 e/A^2 per tilt: said, not used
    assert any("PriorRecordDose disagrees" in w for w in tomo5.warnings)
    assert tomo5.tilts[1].movie_name == "Position_1_2_002_-17.00_20230324_121400_EER.eer"  # UNC path

    cc = session.get("cryoCAT__018")
    assert cc.serialem_version == "4.0.20"
    assert {t.dose_source for t in cc.tilts} == {"ExposureDose"}
    assert cc.total_dose == pytest.approx(60 * 2.23843)
    assert any("FrameDosesAndNumber gives 0.32" in w for w in cc.warnings)
    assert not any("PriorRecordDose" in w for w in cc.warnings)  # steps of 2.24 agree with ExposureDose

    murfey = session.get("python-murfey__test_1_4digit-year-edit")
    assert murfey.tilts[0].date_time.year == 2022 and murfey.serialem_version == "4.0.6"
    assert murfey.tilts[0].dose_source == "DoseRate x ExposureTime"  # ExposureDose 0 and frame doses 0
    assert murfey.tilts[0].keys["CtfFind"] == "-5.54383515625"  # PACEtomo key kept

    ts01 = session.get("mdocfile__TS_01")
    assert ts01.tilts[0].date_time.year == 2015 and not ts01.has_dose
    assert ts01.voltage == 300.0 and not ts01.voltage_from_mdoc
    assert any("no dose" in w and "all tilts" in w for w in ts01.warnings)
    assert ts01.tilts[0].frame_count == 8 and ts01.tilts[0].target_defocus == -4.0
    assert ts01.pixel_size == pytest.approx(1.35) and ts01.image_pixel_size == pytest.approx(5.4)

    sparse = session.get("cryoet-data-portal-backend__foo-TS_run1")
    assert any("acquisition order from ZValue" in w for w in sparse.warnings)
    assert any("no dose" in w and "ZValue 1-4" in w for w in sparse.warnings)
    assert sparse.tilts[1].exposure_time == 1.58 and sparse.tilts[2].pre_exposure is None

    quoll = session.get("quoll__L4_ts_03_sort")
    assert quoll.tilt_axis_source == "RotationAngle - 90"
    assert any("no tilt-axis title" in w for w in quoll.warnings)


def test_rotation_angle_fallback_matches_titles(session):
    """SerialEM's RotationAngle is the title's tilt axis + 90 in every titled file."""
    for ts in session.series:
        if ts.writer == "SerialEM":
            rot = float(ts.tilts[0].keys["RotationAngle"])
            assert (rot - 90 - ts.tilt_axis + 180) % 360 - 180 == pytest.approx(0, abs=0.06), ts.name


def test_tomo5_override_duplicate_is_skipped(tmp_path):
    shutil.copy(DATA / "Ot2Rec__Position_1_2.mdoc", tmp_path / "Position_1_2.mdoc")
    shutil.copy(DATA / "Ot2Rec__Position_1_2.mdoc", tmp_path / "Position_1_2_override.mdoc")
    s = load_session(tmp_path)
    assert [ts.name for ts in s.series] == ["Position_1_2"]
    assert [(x.path.name, x.kind) for x in s.skipped] == [("Position_1_2_override.mdoc", "override")]
    assert "duplicate of Position_1_2.mdoc" in s.skipped[0].reason
