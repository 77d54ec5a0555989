"""IMOD files: .tlt/.rawtlt, .xf, file of inputs, and RELION's .xf <-> alignment conversion."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tiltflow.alignment import TiltSeriesAlignment
from tiltflow.errors import TiltflowError
from tiltflow.io.imodfiles import (
    InputEntry,
    alignment_to_xf,
    read_file_of_inputs,
    read_tilt_angles,
    read_xf,
    write_file_of_inputs,
    write_tilt_angles,
    write_xf,
    xf_to_alignment,
)

DATA = Path(__file__).parent / "data"


def test_read_real_tilt_files():
    raw = read_tilt_angles(DATA / "etomofiles__TS_001.rawtlt")
    tlt = read_tilt_angles(DATA / "etomofiles__TS_001.tlt")
    assert len(raw) == len(tlt) == 40
    assert (raw[0], raw[-1]) == (-60.0, 56.99)
    assert (tlt[0], tlt[1]) == (-57.12, -54.11)
    imod = read_tilt_angles(DATA / "IMOD__1.5deg-minus1.rawtlt")  # IMOD template with a blank line
    assert imod[0] == -61.0 and imod[1] == -59.5
    assert list(read_tilt_angles(DATA / "cryoet-alignment__test.rawtlt")) == [-66.0, -64.5, -63.0]


def test_tilt_angles_round_trip_and_errors(tmp_path):
    p = write_tilt_angles(tmp_path / "a.tlt", [-57.123, 0.0, 3.5])
    assert p.read_text() == " -57.12\n   0.00\n   3.50\n"
    np.testing.assert_allclose(read_tilt_angles(p), [-57.12, 0.0, 3.5])
    (tmp_path / "bad.tlt").write_text("1.0\nabc\n")
    with pytest.raises(TiltflowError, match="line 2 is not a tilt angle"):
        read_tilt_angles(tmp_path / "bad.tlt")
    (tmp_path / "empty.tlt").write_text("\n")
    with pytest.raises(TiltflowError, match="empty"):
        read_tilt_angles(tmp_path / "empty.tlt")


def test_read_real_xf_and_round_trip(tmp_path):
    xf = read_xf(DATA / "etomofiles__TS_001.xf")
    assert xf.shape == (40, 6)
    np.testing.assert_allclose(xf[0], [0.1020875, 0.9947760, -0.9947760, 0.1020875, 2.395, -3.871])
    p = write_xf(tmp_path / "x.xf", xf)
    assert p.read_text().splitlines()[0] == "   0.1020875   0.9947760  -0.9947760   0.1020875       2.395      -3.871"
    np.testing.assert_array_equal(read_xf(p), xf)
    (tmp_path / "bad.xf").write_text("1 0 0 1 0\n")
    with pytest.raises(TiltflowError, match="has 5 numbers, expected 6"):
        read_xf(tmp_path / "bad.xf")


def test_xf_to_alignment_as_relion_reads_it():
    xf = read_xf(DATA / "etomofiles__TS_001.xf")
    tlt = read_tilt_angles(DATA / "etomofiles__TS_001.tlt")
    al = xf_to_alignment(xf, tlt, pixel_size=2.0, nominal_axis=83.9)  # edf: ImageRotationA=83.9
    a = xf[0, :4].reshape(2, 2)
    shift = -np.linalg.solve(a, xf[0, 4:])
    np.testing.assert_allclose(al.shifts_px[0], shift)
    np.testing.assert_allclose(al.shifts_angst[0], 2.0 * shift)
    assert al.z_rot[0] == pytest.approx(np.degrees(np.arccos(0.1020875)))  # +84.14, closest to +83.9
    assert 84.0 < al.z_rot[0] < 84.2
    np.testing.assert_allclose(al.y_tilt, tlt)
    # a nominal axis of -83.9 picks the other sign, as RELION does
    assert xf_to_alignment(xf, tlt, 2.0, -83.9).z_rot[0] == pytest.approx(-al.z_rot[0])
    # AngleOffset from align.log is subtracted
    np.testing.assert_allclose(xf_to_alignment(xf, tlt, 2.0, 83.9, angle_offset=1.5).y_tilt, tlt - 1.5)
    with pytest.raises(TiltflowError, match="40 lines but the .tlt has 3"):
        xf_to_alignment(xf, tlt[:3], 2.0, 83.9)


def test_alignment_xf_alignment_round_trip_is_exact():
    xf = read_xf(DATA / "etomofiles__TS_001.xf")
    tlt = read_tilt_angles(DATA / "etomofiles__TS_001.tlt")
    al = xf_to_alignment(xf, tlt, pixel_size=1.7, nominal_axis=83.9)
    back = xf_to_alignment(alignment_to_xf(al), tlt, pixel_size=1.7, nominal_axis=83.9)
    np.testing.assert_allclose(back.z_rot, al.z_rot, rtol=0, atol=1e-10)
    np.testing.assert_allclose(back.shifts_px, al.shifts_px, rtol=0, atol=1e-10)
    np.testing.assert_allclose(back.y_tilt, al.y_tilt, rtol=0, atol=0)
    # and the regenerated transforms match IMOD's (which are rotations up to rounding)
    np.testing.assert_allclose(alignment_to_xf(al), xf, atol=2e-4)


def test_synthetic_round_trip_negative_axis():
    rng = np.random.default_rng(0)
    al = TiltSeriesAlignment(y_tilt=np.linspace(-60, 60, 9), z_rot=-95.0 + rng.normal(scale=0.3, size=9),
                             shifts_px=rng.normal(scale=40, size=(9, 2)), pixel_size=3.0)
    back = xf_to_alignment(alignment_to_xf(al), al.y_tilt, 3.0, nominal_axis=-95.0)
    np.testing.assert_allclose(back.z_rot, al.z_rot, atol=1e-9)
    np.testing.assert_allclose(back.shifts_angst, al.shifts_angst, atol=1e-9)


def test_file_of_inputs(tmp_path):
    p = write_file_of_inputs(tmp_path / "TS.filelist", ["../mc/a.mrc", Path("b.mrc"), InputEntry("c.mrc", "/")])
    assert p.read_text() == "3\n../mc/a.mrc\n0\nb.mrc\n0\nc.mrc\n/\n"
    assert read_file_of_inputs(p) == [InputEntry("../mc/a.mrc", "0"), InputEntry("b.mrc", "0"),
                                      InputEntry("c.mrc", "/")]
    (tmp_path / "bad.filelist").write_text("3\na.mrc\n0\n")
    with pytest.raises(TiltflowError, match="announces 3 files but has 2 lines"):
        read_file_of_inputs(tmp_path / "bad.filelist")
