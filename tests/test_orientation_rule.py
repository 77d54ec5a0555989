"""The field's row-order rule: a TIFF of ``A[::-1]`` and an MRC of ``A`` are the same movie everywhere.

Why: IMOD (``libiimod/iitif.c``), MotionCor2/3 (``TiffUtil/CLoadTiffImage.cpp``) and RELION (``src/rwTIFF.h``)
reverse TIFF rows on read and keep MRC and EER rows in file order, and SerialEM writes TIFF rows unchanged
and MRC rows reversed so that both formats of one acquisition read the same. The expected arrays below are
the files' own rows, reversed by numpy, never tiltflow's output.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from tiltflow.errors import TiltflowError
from tiltflow.io.eer import write_eer
from tiltflow.io.gain import orient_gain, read_gain_file, relion_gain_codes, unorient_gain
from tiltflow.io.movies import open_movie
from tiltflow.io.mrc import read_mrc, write_mrc
from tiltflow.simulate import make_config, simulate_session
from tiltflow.simulate.detector import write_movie


def _image(seed=0, shape=(3, 12, 10)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 200, size=shape).astype(np.uint16)


def test_tiff_of_reversed_rows_equals_mrc(tmp_path):
    a = _image()
    tifffile.imwrite(tmp_path / "m.tif", a[:, ::-1], photometric="minisblack")  # as SerialEM writes TIFF
    write_mrc(tmp_path / "m.mrc", a, 1.0)
    with open_movie(tmp_path / "m.tif") as t, open_movie(tmp_path / "m.mrc") as m:
        for i in range(3):
            np.testing.assert_array_equal(t.frame(i), m.frame(i))
        np.testing.assert_array_equal(t.frame(0), a[0])


def test_tiff_gain_of_reversed_rows_equals_mrc_gain(tmp_path):
    g = (1 + np.random.default_rng(1).random((12, 10))).astype(np.float32)
    tifffile.imwrite(tmp_path / "ref.tif", g[::-1])
    tifffile.imwrite(tmp_path / "ref.gain", g[::-1])  # EPU's EER gain: MotionCor3 reads it like any TIFF
    write_mrc(tmp_path / "ref.mrc", g, 1.0)
    for name in ("ref.tif", "ref.gain"):
        np.testing.assert_array_equal(read_gain_file(tmp_path / name).data, read_gain_file(tmp_path / "ref.mrc").data)


def test_eer_frames_in_file_order(tmp_path):
    ev = np.zeros((2, 16, 16), np.uint8)
    ev[:, 1, 3] = 1  # one event in the second stored row
    path = write_eer(tmp_path / "m.eer", ev, pixel_size=1.0)
    with open_movie(path, eer_grouping=2) as m:
        f = m.frame(0)
    assert f[1, 3] == 2 and f.sum() == 2  # MotionCor3 EerUtil/CDecodeEerFrame.cpp, RELION renderEER.cpp


def test_written_tiff_reads_back_as_imod_would(tmp_path):
    a = _image(2)
    write_movie(tmp_path / "w.tif", a, "tiff", 1.0)
    with tifffile.TiffFile(tmp_path / "w.tif") as tif:  # the stored rows: what IMOD reverses on read
        np.testing.assert_array_equal(tif.asarray(), a[:, ::-1])
    with open_movie(tmp_path / "w.tif") as m:
        np.testing.assert_array_equal(m.read(dtype=np.uint16), a)


@pytest.mark.parametrize(("r", "f"), [(r, f) for r in range(4) for f in range(3)])
def test_relion_codes_for_an_epu_gain(tmp_path, r, f):
    g = np.arange(6 * 4, dtype=np.float32).reshape(6, 4) + 1
    relion_holds = g[::-1]  # file rows of a .gain whose MotionCor3 reading is g; RELION keeps file order
    assert relion_gain_codes(r, f, tmp_path / "x.mrc") == (r, f)
    assert relion_gain_codes(r, f, tmp_path / "x.tif") == (r, f)
    if (r, f) in ((0, 1), (2, 2)):
        rr, rf = relion_gain_codes(r, f, tmp_path / "x.gain")
        np.testing.assert_array_equal(orient_gain(relion_holds, rr, rf), orient_gain(g, r, f))
    else:
        with pytest.raises(TiltflowError, match="RELION cannot apply"):
            relion_gain_codes(r, f, tmp_path / "x.gain")


def test_tiff_and_mrc_sessions_with_one_seed_are_the_same(tmp_path):
    from tiltflow.motion.correct import MotionSettings, correct_movie

    cfg = dict(seed=3, gain_rotate=1, gain_flip=2, size=(96, 80), threads=1, tilt_step=30.0)
    tt = simulate_session(make_config("tiny", movie_format="tiff", **cfg), tmp_path / "t" / "session")
    mt = simulate_session(make_config("tiny", movie_format="mrc", **cfg), tmp_path / "m" / "session")
    gain = orient_gain(read_mrc(tmp_path / "t" / "session" / tt.gain.file)[0], 1, 2)
    t_tilts, m_tilts = tt.series[0].tilts, mt.series[0].tilts
    assert len(t_tilts) == len(m_tilts) >= 3
    settings = MotionSettings(even_odd=False)
    for t, m in list(zip(t_tilts, m_tilts, strict=True))[:2]:
        assert t.movie.endswith(".tif") and m.movie.endswith(".mrc")
        with open_movie(tmp_path / "t" / "session" / t.movie) as a, open_movie(tmp_path / "m" / "session" / m.movie) as b:
            np.testing.assert_array_equal(a.read(dtype=np.uint16), b.read(dtype=np.uint16))
            ca = correct_movie(a, pixel_size=tt.pixel_size, gain=gain, settings=settings)
            cb = correct_movie(b, pixel_size=mt.pixel_size, gain=gain, settings=settings)
        np.testing.assert_array_equal(ca.sums.image, cb.sums.image)
        np.testing.assert_array_equal(ca.trajectory.shifts, cb.trajectory.shifts)
    # and the gain file (an MRC in both) is the same: unorient_gain undoes the orientation the run applies
    np.testing.assert_array_equal(unorient_gain(gain, 1, 2), read_mrc(tmp_path / "m" / "session" / mt.gain.file)[0])


def test_motioncor_command_line_is_the_same_for_tiff_and_mrc(tmp_path):
    """MotionCor reads both formats the field's way, so the wrapper passes the one prepared gain unchanged."""
    from tiltflow.backends.motioncor import MotionCorCall, build_command

    gain = tmp_path / "gain" / "gain.mrc"
    cmds = {fmt: build_command(MotionCorCall(executable=Path("MotionCor3"), movie=Path(f"m.{ext}"), movie_format=fmt,
                                             out_mrc=Path("m.mrc"), pixel_size=1.0, gain=gain))
            for fmt, ext in (("tiff", "tif"), ("mrc", "mrc"))}
    assert cmds["tiff"][:3] == ["MotionCor3", "-InTiff", "m.tif"] and cmds["mrc"][:3] == ["MotionCor3", "-InMrc", "m.mrc"]
    assert cmds["tiff"][3:] == cmds["mrc"][3:]
    assert "-RotGain" not in cmds["tiff"] and "-FlipGain" not in cmds["tiff"]  # gain already in movie orientation
    assert cmds["tiff"][cmds["tiff"].index("-Gain") + 1] == str(gain)
