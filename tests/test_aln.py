"""AreTomo ``.aln``: every variant in tests/data, round trips, and RELION's reading of it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tiltflow import star
from tiltflow.alignment import TiltSeriesAlignment
from tiltflow.errors import TiltflowError
from tiltflow.io.aln import DARK_REASON, DarkFrame, read_aln, read_dark_indices, write_aln

DATA = Path(__file__).parent / "data"


def test_aretomo3_header_with_dark_frames_and_local_block():
    aln = read_aln(DATA / "cryoet-alignment__test.aln")
    assert aln.raw_size == (2032, 2032, 90)
    assert aln.num_patches == 16
    assert aln.dark_frames == [DarkFrame(1, 0, -66.0), DarkFrame(2, 0, -64.5), DarkFrame(88, 0, 66.0),
                               DarkFrame(89, 0, 67.5)]
    assert aln.alpha_offset == 0.0 and aln.beta_offset == 0.0 and aln.thickness is None
    assert aln.is_aretomo3
    assert len(aln.rows) == 4
    assert aln.sec_base == 1  # SEC starts at 1 with AreTomo3 markers and no 0
    first, last = aln.rows[0], aln.rows[-1]
    assert (first.sec, first.rot, first.tx, first.ty, first.tilt) == (1, -12.6611, 24.786, -2.677, -61.5)
    assert (last.sec, last.tx, last.ty, last.tilt) == (4, 5.538, -2.504, -57.0)
    assert aln.local.shape == (6, 7)
    np.testing.assert_allclose(aln.local[0], [0, 0, -558.42, -802.00, -100.07, 24.43, 1.0])
    np.testing.assert_allclose(aln.local[-1, :2], [0, 5])


def test_truncated_file_does_not_match_its_stack():
    # the repository author trimmed it: 4 rows + 4 dark frames for a RawSize of 90 images
    aln = read_aln(DATA / "cryoet-alignment__test.aln")
    with pytest.raises(TiltflowError, match=r"tilt series TS_9: .aln has 4 rows and 4 dark frames but the stack "
                                            r"has 90 images") as err:
        aln.to_alignment(1.0, series="TS_9")
    assert "cryoet-alignment__test.aln" in str(err.value)
    with pytest.raises(TiltflowError, match="RawSize says 90 images, the stack has 8"):
        read_aln(DATA / "cryoet-alignment__test.aln", n_stack=8)


@pytest.mark.parametrize(
    "name, n, first, last, count",
    [
        ("lil-aretomo__TS_121.aln", 31, (0, 83.8298, 4.792, -112.998, -42.0), (30, 84.1916, 1.086, -39.389, 48.0), 31),
        ("lil-aretomo__example_v1_2_0.aln", 41, (0, -93.7196, 155.235, 708.750, -51.98),
         (40, -93.7196, 40.271, -800.005, 68.0), 41),
    ],
)
def test_aretomo1_count_line(name, n, first, last, count):
    aln = read_aln(DATA / name)
    assert aln.legacy_count == count and aln.raw_size is None
    assert len(aln.rows) == n and aln.sec_base == 0 and not aln.dark_frames
    for row, want in ((aln.rows[0], first), (aln.rows[-1], last)):
        assert (row.sec, row.rot, row.tx, row.ty, row.tilt) == want
    al = aln.to_alignment(2.0)
    assert len(al.y_tilt) == n and not al.excluded
    assert al.shifts_angst[0, 1] == pytest.approx(2.0 * first[3])


def test_aretomo13_rawsize_header():
    aln = read_aln(DATA / "lil-aretomo__example_v1_3_0.aln", n_stack=41)
    assert aln.raw_size == (5760, 4092, 41) and aln.num_patches == 0 and aln.legacy_count is None
    assert len(aln.rows) == 41 and aln.sec_base == 0 and not aln.is_aretomo3
    assert (aln.rows[0].rot, aln.rows[0].tx, aln.rows[0].ty, aln.rows[0].tilt) == (-93.6692, 157.142, 720.866, -51.98)
    assert (aln.rows[-1].tx, aln.rows[-1].ty, aln.rows[-1].tilt) == (44.463, -809.333, 68.0)
    assert aln.local.shape == (0, 7)
    al = aln.to_alignment(1.0)
    assert not al.excluded and len(al.y_tilt) == 41 and al.tilt_offset == 0.0
    np.testing.assert_allclose(al.shifts_px[17], [0.0, 0.0])  # the reference image


def test_dark_images_txt():
    assert read_dark_indices(DATA / "tomotools__lamella01A_ts_001_DarkImgs.txt") == [1, 35, 36, 37, 38]


def _alignment(n: int, excluded: dict[int, str] | None = None) -> TiltSeriesAlignment:
    k = n - len(excluded or {})
    rng = np.random.default_rng(3)
    return TiltSeriesAlignment(
        y_tilt=np.round(np.linspace(-50, 49, k), 2), z_rot=np.round(84.5 + 0.01 * np.arange(k), 4),
        shifts_px=np.round(rng.normal(scale=30, size=(k, 2)), 3), pixel_size=2.5, excluded=dict(excluded or {}),
    )


@pytest.mark.parametrize("sec_base", [0, 1])
def test_write_read_round_trip(tmp_path, sec_base):
    excluded = {0: DARK_REASON, 7: DARK_REASON}
    al = _alignment(12, excluded)
    stack_tilts = np.linspace(-55, 55, 12)
    p = write_aln(tmp_path / "TS_1.aln", al, (512, 480, 12), stack_tilts=stack_tilts, sec_base=sec_base)
    aln = read_aln(p, n_stack=12)
    assert aln.sec_base == sec_base
    assert aln.raw_size == (512, 480, 12)
    assert [(d.idx_sorted, d.sec) for d in aln.dark_frames] == [(0, sec_base), (7, 7 + sec_base)]
    assert aln.dark_frames[1].tilt == pytest.approx(stack_tilts[7], abs=0.005)
    back = aln.to_alignment(2.5)
    assert back.excluded == excluded
    np.testing.assert_allclose(back.y_tilt, al.y_tilt)
    np.testing.assert_allclose(back.z_rot, al.z_rot)
    np.testing.assert_allclose(back.shifts_px, al.shifts_px)
    # the text is what AreTomo writes (CSaveAlignFile format)
    text = p.read_text().splitlines()
    assert text[0].startswith("# AreTomo Alignment / Priims bprmMn")
    assert text[3] == f"# DarkFrame =     0 {sec_base:4d}   -55.00"


def test_write_refuses_inconsistent_sizes(tmp_path):
    with pytest.raises(ValueError, match="stack has 11"):
        write_aln(tmp_path / "x.aln", _alignment(12), (10, 10, 11))


def test_mismatched_or_out_of_range(tmp_path):
    p = write_aln(tmp_path / "TS_2.aln", _alignment(6), (64, 64, 6))
    with pytest.raises(TiltflowError, match=r"TS_2: .aln has 6 rows and 0 dark frames but the stack has 7"):
        read_aln(p, n_stack=7, series="TS_2")
    text = p.read_text().replace("# RawSize = 64 64 6\n", "").replace("\n    5  ", "\n    9  ")
    bad = tmp_path / "bad.aln"
    bad.write_text(text)
    with pytest.raises(TiltflowError, match=r"SEC 9 is outside the stack of 6 images"):
        read_aln(bad, n_stack=6)
    (tmp_path / "empty.aln").write_text("# AreTomo Alignment / Priims bprmMn\n# RawSize = 1 1 1\n")
    with pytest.raises(TiltflowError, match="no alignment rows"):
        read_aln(tmp_path / "empty.aln")
    with pytest.raises(TiltflowError, match="not found"):
        read_aln(tmp_path / "missing.aln")


def test_star_columns_as_relion_reads_aretomo(tmp_path):
    """RELION's readAreTomoResults: YTilt = TILT, ZRot = ROT, shifts = TX/TY x pixel size, no sign change;
    the output columns, units and row order must be those of RELION's AlignTiltSeries file.
    """
    name, relion = star.read_relion_tilt_table(DATA / "cets-relion__AlignTiltSeries_job005_tilt_series_TS_01.star")
    n = len(relion)
    ps = 1.35
    rows = ["# AreTomo Alignment / Priims bprmMn", f"# RawSize = 4000 4000 {n}", "# NumPatches = 0",
            "# SEC     ROT         GMAG       TX          TY      SMEAN     SFIT    SCALE     BASE     TILT"]
    order = np.argsort(relion[star.NOMINAL_TILT].to_numpy(float), kind="stable")
    sorted_rel = relion.iloc[order].reset_index(drop=True)
    for i, r in sorted_rel.iterrows():
        rows.append(f"{i:5d}  {r[star.Z_ROT]:9.4f}  1.00000  {r[star.X_SHIFT] / ps:9.3f}  {r[star.Y_SHIFT] / ps:9.3f}"
                    f"     1.00     1.00     1.00     0.00  {r[star.Y_TILT]:8.2f}")
    aln_path = tmp_path / f"{name}.aln"
    aln_path.write_text("\n".join(rows) + "\n")
    al = read_aln(aln_path, n_stack=n).to_alignment(ps)
    out = al.to_star_columns(sorted_rel.drop(columns=[star.X_TILT, star.Y_TILT, star.Z_ROT, star.X_SHIFT,
                                                      star.Y_SHIFT]))
    assert list(out.columns[-5:]) == list(relion.columns[-5:])
    assert out[star.NOMINAL_TILT].is_monotonic_increasing == relion[star.NOMINAL_TILT].is_monotonic_increasing
    np.testing.assert_allclose(out[star.X_SHIFT], sorted_rel[star.X_SHIFT], atol=ps * 5e-4)
    np.testing.assert_allclose(out[star.Y_SHIFT], sorted_rel[star.Y_SHIFT], atol=ps * 5e-4)
    np.testing.assert_allclose(out[star.Z_ROT], sorted_rel[star.Z_ROT], atol=5e-5)
    np.testing.assert_allclose(out[star.Y_TILT], sorted_rel[star.Y_TILT], atol=5e-3)
    assert (out[star.X_TILT] == 0).all()
    # a real TX of 24.786 px at 1.35 A/px is +33.46 A: same sign, multiplied by the pixel size
    first = read_aln(DATA / "cryoet-alignment__test.aln").rows[0]
    assert first.tx * ps == pytest.approx(33.4611)
