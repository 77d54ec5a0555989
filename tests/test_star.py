"""RELION 5 STAR contract (tiltflow.star): round trips and every real RELION tomography STAR file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tiltflow import star
from tiltflow.errors import TiltflowError

DATA = Path(__file__).parent / "data"

#: global tables (data_global) -> number of tilt series
GLOBAL_FILES = {
    "cets-relion__AlignTiltSeries_job005_aligned_tilt_series.star": 5,
    "cets-relion__CtfFind_job003_tilt_series_ctf.star": 5,
    "cets-relion__Denoise_job008_tomograms.star": 5,
    "cets-relion__ExcludeTiltImages_job004_selected_tilt_series.star": 5,
    "cets-relion__Import_job001_tilt_series.star": 5,
    "cets-relion__MotionCorr_job002_corrected_tilt_series.star": 5,
    "cets-relion__Polish_job030_tomograms.star": 5,
    "cets-relion__Tomograms_job006_tomograms.star": 5,
    "cryoCAT__motl_warp2_b1_TM_nucleo_Trest_99percyto_2Dparticles_R5_tomograms.star": 14,
    "cryoCAT__warp2_matching_tomograms.star": 5,
    "relion__tomography_python_programs_tilt_series.star": 5,
    "tomodrgn__warptools_test_4-tomos_10-ptcls_box-32_angpix-12_tomograms.star": 4,
}

#: per-tilt-series tables -> (name, rows)
TILT_FILES = {
    "cets-relion__AlignTiltSeries_job005_tilt_series_TS_01.star": ("TS_01", 40),
    "cets-relion__CtfFind_job003_tilt_series_TS_01.star": ("TS_01", 41),
    "cets-relion__ExcludeTiltImages_job004_tilt_series_TS_01.star": ("TS_01", 40),
    "cets-relion__Import_job001_tilt_series_TS_01.star": ("TS_01", 41),
    "cets-relion__MotionCorr_job002_tilt_series_TS_01.star": ("TS_01", 41),
    "cets-relion__Tomograms_job006_tilt_series_TS_01.star": ("TS_01", 40),
    "cryoCAT__dc02t01_ctf.star": ("dc02t01", 47),
    "pytom-match-pick__tomo200528_107.star": ("tomo200528_107", 35),
    "relion__220728_TS_01.star": ("220728_TS_01", 41),
}


@pytest.mark.parametrize("name", sorted(GLOBAL_FILES))
def test_read_every_relion_global_table(name):
    g = star.read_tomograms(DATA / name)
    assert len(g) == GLOBAL_FILES[name]
    assert all(isinstance(v, str) and v for v in g[star.TOMO_NAME])
    assert set(g[star.HAND].astype(float)) <= {-1.0, 1.0}
    assert (g[star.VOLTAGE].astype(float) == 300).all()


@pytest.mark.parametrize("name", sorted(TILT_FILES))
def test_read_every_relion_tilt_table(name):
    block, tilts = star.read_relion_tilt_table(DATA / name)
    assert (block, len(tilts)) == TILT_FILES[name]
    pre = tilts[star.PRE_EXPOSURE].astype(float)
    assert pre.min() == pytest.approx(0.0, abs=1e-6)  # the first tilt acquired had no pre-exposure
    assert pre.is_unique  # RELION sorts rows by it
    assert tilts[star.NOMINAL_TILT].astype(float).between(-90, 90).all()


def test_relion_import_table_values():
    _, t = star.read_relion_tilt_table(DATA / "cets-relion__Import_job001_tilt_series_TS_01.star")
    assert list(t.columns) == [star.MOVIE, star.FRAME_COUNT, star.NOMINAL_TILT, star.NOMINAL_AXIS,
                               star.PRE_EXPOSURE, star.NOMINAL_DEFOCUS]
    assert t[star.MOVIE].iloc[2] == "frames/TS_01_002_-3.0.mrc"
    assert t[star.PRE_EXPOSURE].tolist()[:4] == [0.0, 3.0, 6.0, 9.0]


@pytest.mark.parametrize("name", ["cets-relion__CtfRefine_job027_optimisation_set.star",
                                  "cets-relion__Picks_job009_annotations_TS_01_spheres.star"])
def test_other_star_files_are_not_tilt_series(name):
    with pytest.raises(TiltflowError, match="not a tilt-series table"):
        star.read_relion_tilt_table(DATA / name)
    with pytest.raises(TiltflowError, match="no data_global"):
        star.read_tomograms(DATA / name)


def test_single_file_tomogram_sets_from_warp():
    """Warp/M write the per-tomogram tables into tomograms.star itself (no rlnTomoTiltSeriesStarFile)."""
    sets = star.read_tomogram_set(DATA / "cryoCAT__warp2_matching_tomograms.star")
    assert [s.name for s in sets] == ["TS_17.tomostar", "TS_32.tomostar", "TS_1.tomostar", "TS_11.tomostar",
                                      "TS_23.tomostar"]
    assert len(sets[0].tilts) == 41 and star.PRE_EXPOSURE in sets[0].tilts
    # RELION 4 matrices are read but never written back
    assert "rlnTomoProjX" in sets[0].tilts


def _example(name: str = "001") -> star.TiltSeriesStar:
    tilts = pd.DataFrame({
        star.MOVIE: ["frames/a 1.tif", "/abs/b.tif", "c.eer"],
        star.FRAME_COUNT: [8, 8, 10],
        star.NOMINAL_TILT: [0.001, 3.00113, -2.99863],
        star.PRE_EXPOSURE: [0.0, 3.0, 6.0],
        "tfZValue": [0, 1, 2],
        "tfDateTime": ["2015-11-30T15:21:38", "2015-11-30T15:22:37", "unknown"],
        "rlnTomoProjX": ["[1,0,0,0]"] * 3,
    })
    glob = {star.VOLTAGE: 300.0, star.CS: 2.7, star.AMP_CONTRAST: 0.1, star.ORIGINAL_PIXEL_SIZE: 0.675,
            star.HAND: -1, star.OPTICS_GROUP: "optics1", "tfMdoc": "session/001.mrc.mdoc"}
    return star.TiltSeriesStar(name=name, globals=glob, tilts=tilts)


@pytest.mark.parametrize("name", ["001", "TS_01", "220728_TS_01"])
def test_tilt_series_round_trip(tmp_path, name):
    ts = _example(name)
    path = star.write_tilt_series(ts, tmp_path / f"{name}.star")
    back = star.read_tilt_series(path)
    assert back.name == name
    assert back.globals[star.TOMO_NAME] == name and back.globals[star.OPTICS_GROUP] == "optics1"
    assert back.globals[star.HAND] == -1 and back.globals["tfMdoc"] == "session/001.mrc.mdoc"
    assert back.globals[star.TS_STAR_FILE] == str(path)
    assert "rlnTomoProjX" not in back.tilts  # RELION 4 matrices never written
    expected = ts.tilts.drop(columns=["rlnTomoProjX"])
    pd.testing.assert_frame_equal(back.tilts[expected.columns], expected, check_dtype=False, atol=1e-6)
    assert back.pixel_size == 0.675
    # and RELION's reader view of the same file: the per-tilt table by name
    block, table = star.read_relion_tilt_table(path)
    assert block == name and len(table) == 3


def test_write_tomograms_and_read_set(tmp_path):
    series = []
    for name in ("TS_01", "TS_03"):
        ts = _example(name)
        out = Path("import") / name / f"{name}.star"
        ts.globals[star.TS_STAR_FILE] = str(out)
        star.write_tilt_series(ts, tmp_path / out)
        series.append(ts)
    path = star.write_tomograms(series, tmp_path / "import/tomograms.star")
    g = star.read_tomograms(path)
    assert g[star.TOMO_NAME].tolist() == ["TS_01", "TS_03"]
    assert g[star.TS_STAR_FILE].tolist() == ["import/TS_01/TS_01.star", "import/TS_03/TS_03.star"]
    assert g["tfMdoc"].tolist() == ["session/001.mrc.mdoc"] * 2
    back = star.read_tomogram_set(path, tmp_path)
    assert [b.name for b in back] == ["TS_01", "TS_03"] and len(back[1].tilts) == 3
    # export layout drops tf columns
    out = star.write_tomogram_set(back, tmp_path / "relion", "relion/tilt_series")
    assert star.read_tomograms(out)[star.TS_STAR_FILE].tolist()[0] == "relion/tilt_series/TS_01.star"
    _, table = star.read_relion_tilt_table(tmp_path / "relion/tilt_series/TS_01.star")
    assert not [c for c in table.columns if c.startswith("tf")]
    assert "tfMdoc" not in star.read_tomograms(out)
    with pytest.raises(TiltflowError, match="no tilt series"):
        star.write_tomograms([], tmp_path / "empty.star")


def test_relative_to_root_is_the_inverse_of_resolve(tmp_path):
    root = tmp_path / "project"
    (root / "ctf" / "TS_01").mkdir(parents=True)
    inside = root / "ctf" / "TS_01" / "a b.mrc"
    outside = tmp_path / "raw" / "movie.tif"
    assert star.relative_to_root(inside, root) == "ctf/TS_01/a b.mrc"
    assert star.relative_to_root(outside, root) == str(outside)  # raw data elsewhere stays absolute
    for p in (inside, outside):
        assert star.resolve(star.relative_to_root(p, root), root) == p
    # a relative path is relative to the root already: the working directory is never consulted
    assert star.relative_to_root(Path("ctf/TS_01/x.mrc"), root) == "ctf/TS_01/x.mrc"
    assert star.relative_to_root(Path("ctf/../ctf/x.mrc"), root) == "ctf/x.mrc"
    link = tmp_path / "link"
    link.symlink_to(root)
    assert star.relative_to_root(inside, link) == "ctf/TS_01/a b.mrc"  # links resolved only when needed
    assert star.relative_to_root(link / "ctf" / "x.mrc", root) == "ctf/x.mrc"


def test_image_refs_with_relions_mrc_suffix(tmp_path):
    # RELION's CtfFind writes rlnCtfImage as <name>.ctf:mrc (src/ctffind_runner.cpp)
    ref = star.image_ref(tmp_path / "ctf" / "t_PS.ctf", tmp_path)
    assert ref == "ctf/t_PS.ctf:mrc"
    assert star.resolve_image_ref(ref, tmp_path) == tmp_path / "ctf" / "t_PS.ctf"
    assert star.resolve_image_ref("motioncor/a:b.mrc", tmp_path) == tmp_path / "motioncor" / "a:b.mrc"
    assert star.resolve_image_ref("/abs/x.mrc", tmp_path) == Path("/abs/x.mrc")
    for empty in (None, "", "  ", float("nan")):
        assert star.resolve_image_ref(empty, tmp_path) is None


def test_optics_from_the_global_row_keeps_a_real_zero():
    ts = star.TiltSeriesStar("TS", {star.VOLTAGE: 200.0, star.CS: 0.0, star.AMP_CONTRAST: 0.0,
                                    star.TS_PIXEL_SIZE: 1.5})
    assert ts.optics == star.Optics(200.0, 0.0, 0.0, 1.5)  # a Cs-corrected scope: 0 is not "unset"
    empty = star.TiltSeriesStar("TS", {star.CS: float("nan"), star.AMP_CONTRAST: ""})
    assert empty.optics == star.DEFAULT_OPTICS
    # RELION 5 ImportTomo's defaults (300 kV, 2.7 mm, Q0 0.1), as in RELION's own test project
    assert (star.DEFAULT_OPTICS.voltage, star.DEFAULT_OPTICS.cs, star.DEFAULT_OPTICS.amplitude_contrast) == (
        300.0, 2.7, 0.1)
    # what RELION 5's ImportTomo wrote for the tutorial project (real file)
    row = star.read_tomograms(DATA / "cets-relion__Import_job001_tilt_series.star").iloc[0].to_dict()
    assert star.optics_of(row) == star.Optics(300.0, 2.7, 0.1, 0.675)


def test_the_ctf_fit_uses_the_same_optics_model():
    from tiltflow.ctffit.model import Optics

    assert Optics is star.Optics
    assert star.Optics(300.0).wavelength == pytest.approx(0.019687, rel=1e-4)  # 300 kV electrons: 1.97 pm


def test_defocus_units():
    tilts = pd.DataFrame({star.DEFOCUS_U: [31000.0, None], star.DEFOCUS_V: [29000.0, 1.0]})
    np.testing.assert_allclose(star.mean_defocus_um(tilts), [3.0, np.nan])
    assert np.isnan(star.mean_defocus_angstrom(pd.DataFrame({star.DEFOCUS_U: [1.0]}))).all()
    # SerialEM's TargetDefocus: negative = underfocus; 0 (not recorded) and tiny values are no nominal defocus
    assert star.nominal_defocus_angstrom(-3.5) == pytest.approx(35000.0)
    assert star.nominal_defocus_angstrom(2.0) == pytest.approx(20000.0)
    for none in (0, 0.0, -0.04, None, "nan", float("nan"), "x"):
        assert star.nominal_defocus_angstrom(none) is None
    assert star.um_to_angstrom(star.angstrom_to_um(12345.0)) == pytest.approx(12345.0)
