"""MRC reading/writing on real SerialEM, WarpTools and EMDB files, plus 4-bit mode 101 and truncation."""

from __future__ import annotations

import shutil
from pathlib import Path

import mrcfile
import numpy as np
import pytest

from tiltflow.errors import TiltflowError
from tiltflow.io.mrc import (
    MrcReader,
    pack_4bit,
    read_mrc,
    read_mrc_header,
    unpack_4bit,
    write_mrc,
    write_mrc_4bit,
)

DATA = Path(__file__).parent / "data"
ST = {m: DATA / f"tomoauto__test_002_mode{m}.st" for m in (0, 1, 2)}


def test_serialem_stack_modes_headers():
    for mode, path in ST.items():
        h = read_mrc_header(path)
        assert (h.nx, h.ny, h.nz, h.mode) == (24, 24, 41, mode)
        assert h.data_offset == 1024 + 246  # SerialEM extended header (nint 6, nreal 5 flags)
        assert h.pixel_size == pytest.approx(2.604, abs=1e-4)
    assert read_mrc_header(ST[0]).signed_bytes is False  # IMOD stamp, flags bit 0 clear: unsigned


def test_serialem_stack_values_consistent_across_modes():
    d0, p0 = read_mrc(ST[0])
    d1, _ = read_mrc(ST[1])
    d2, p2 = read_mrc(ST[2])
    assert d0.dtype == np.uint8 and d1.dtype == np.int16 and d2.dtype == np.float32
    assert d0.shape == d1.shape == d2.shape == (41, 24, 24)
    assert p0 == pytest.approx(p2, abs=1e-4)
    np.testing.assert_array_equal(d0[0, 0, :4], [90, 79, 100, 72])
    np.testing.assert_array_equal(d1[0, 0, :4], [90, 79, 100, 72])
    np.testing.assert_allclose(d2[0, 0, :4], [89.90308, 79.34974, 99.82082, 72.45309], atol=1e-4)
    # mode 1 is the float stack rounded; mode 0 the same clipped at 0 (unsigned bytes, max 223 > 127)
    assert np.abs(d1 - d2).max() <= 0.5 + 1e-4
    np.testing.assert_array_equal(d0, np.clip(d1, 0, 255).astype(np.uint8))
    assert d0.max() == 223
    assert float(d2.mean()) == pytest.approx(73.3538, abs=1e-3)  # header dmean
    assert float(d1.mean()) == pytest.approx(73.3532, abs=1e-3)


def test_mode1_image_stack_and_float16_warp_stack():
    d, p = read_mrc(DATA / "tomoauto__test_001_mode1.mrc")
    assert d.shape == (7, 24, 24) and d.dtype == np.int16 and p == pytest.approx(2.604, abs=1e-4)
    assert float(d.mean()) == pytest.approx(67.8958, abs=1e-3)
    h16, p16 = read_mrc(DATA / "tomodrgn__Unt_050_12.00A_000001.mrcs")
    assert h16.dtype == np.float16 and h16.shape == (37, 32, 32) and p16 == 12.0
    np.testing.assert_allclose(h16[0, 0, :3].astype(float), [-0.5117, 0.3523, 0.525], atol=1e-3)
    assert float(h16.min()) == pytest.approx(-3.125, abs=1e-3)
    assert float(h16.max()) == pytest.approx(3.137, abs=1e-3)


def test_emdb_maps_including_permuted_axes():
    d, p = read_mrc(DATA / "mrcfile__EMD-3197.map")
    assert d.shape == (20, 20, 20) and p == pytest.approx(11.4)
    assert float(d.mean()) == pytest.approx(0.783612, abs=1e-5)
    # EMD-3001 stores columns=z, rows=x, sections=y (MAPC/MAPR/MAPS 3 1 2): returned as (z, y, x)
    with mrcfile.open(DATA / "mrcfile__EMD-3001.map", permissive=True) as m:
        stored = np.array(m.data)  # (sections=y, rows=x, columns=z)
        cell = m.voxel_size
    d, p = read_mrc(DATA / "mrcfile__EMD-3001.map")
    assert stored.shape == (25, 43, 73) and d.shape == (73, 25, 43)
    np.testing.assert_array_equal(d[5, 7, 11], stored[7, 11, 5])
    assert p == pytest.approx(float(cell.x), rel=1e-5)


def test_4bit_mode_101_roundtrip_odd_width(tmp_path):
    rng = np.random.default_rng(1)
    data = rng.integers(0, 16, size=(3, 5, 7)).astype(np.uint8)  # odd nx: rows padded to a byte
    path = write_mrc_4bit(tmp_path / "frames.mrc", data, pixel_size=0.83)
    h = read_mrc_header(path)
    assert h.mode == 101 and h.section_bytes == 4 * 5
    assert path.stat().st_size == 1024 + 3 * 20
    back, p = read_mrc(path)
    np.testing.assert_array_equal(back, data)
    assert p == pytest.approx(0.83, abs=1e-6)
    # low nibble first: the first byte of row 0 holds pixels 0 (low) and 1 (high)
    raw = np.frombuffer(path.read_bytes()[1024:1025], np.uint8)[0]
    assert raw & 0x0F == data[0, 0, 0] and raw >> 4 == data[0, 0, 1]
    np.testing.assert_array_equal(unpack_4bit(pack_4bit(data[1]).ravel(), 7, 5), data[1])


def test_truncated_mrc_gives_one_line_error(tmp_path):
    cut = tmp_path / "cut.st"
    cut.write_bytes(ST[2].read_bytes()[:-500])
    with pytest.raises(TiltflowError) as ei:
        read_mrc(cut)
    msg = str(ei.value)
    assert "\n" not in msg and str(cut) in msg and "truncated" in msg
    # the sections that are complete stay readable one by one; the cut one is reported
    with MrcReader(cut) as r:
        assert r.section(0).shape == (24, 24)
        with pytest.raises(TiltflowError, match="section 40"):
            r.section(40)


def test_not_mrc_and_missing(tmp_path):
    junk = tmp_path / "junk.mrc"
    junk.write_bytes(b"hello")
    with pytest.raises(TiltflowError, match="not an MRC file"):
        read_mrc(junk)
    junk.write_bytes(b"\xff" * 2048)
    with pytest.raises(TiltflowError, match="not an MRC file"):
        read_mrc(junk)
    with pytest.raises(TiltflowError, match="not found"):
        read_mrc(tmp_path / "nope.mrc")


def test_write_mrc_roundtrip_atomic(tmp_path, monkeypatch):
    img = np.arange(12, dtype=np.float32).reshape(3, 4)
    out = write_mrc(tmp_path / "sub" / "img.mrc", img, 1.35)
    d, p = read_mrc(out)
    np.testing.assert_array_equal(d, img)
    assert d.ndim == 2 and p == pytest.approx(1.35, abs=1e-6)
    assert [x.name for x in out.parent.iterdir()] == ["img.mrc"]  # no temporary left behind
    stack = np.ones((2, 3, 4), np.float16)
    d16, _ = read_mrc(write_mrc(tmp_path / "h.mrcs", stack, 2.0))
    assert d16.dtype == np.float16 and d16.shape == (2, 3, 4)
    # a write that fails half-way leaves the previous file intact and no temporary
    real_new = mrcfile.new

    def failing_new(name, **kw):
        m = real_new(name, **kw)
        m.set_data(np.zeros((64, 64), np.float32))
        m.flush()

        def boom(*a, **k):
            raise OSError("disk full")

        m.set_data = boom
        return m

    monkeypatch.setattr(mrcfile, "new", failing_new)
    with pytest.raises(OSError, match="disk full"):
        write_mrc(out, np.zeros((5, 5), np.float32), 1.0)
    monkeypatch.undo()
    np.testing.assert_array_equal(read_mrc(out)[0], img)
    assert [x.name for x in out.parent.iterdir()] == ["img.mrc"]
    with pytest.raises(ValueError, match="2-D"):
        write_mrc(tmp_path / "x.mrc", np.zeros((2, 2, 2, 2)), 1.0)


def test_signed_bytes_flag(tmp_path):
    src = tmp_path / "s.st"
    shutil.copy(ST[0], src)
    raw = bytearray(src.read_bytes())
    raw[156] |= 1  # imodFlags bit 0: bytes are signed
    src.write_bytes(bytes(raw))
    d, _ = read_mrc(src)
    assert d.dtype == np.int8
    assert d.min() < 0


def test_big_endian_and_mode6(tmp_path):
    be = np.arange(24, dtype=">f4").reshape(2, 3, 4)
    with mrcfile.new(tmp_path / "be.mrc") as m:
        m.set_data(be)
        m.voxel_size = 1.5
    h = read_mrc_header(tmp_path / "be.mrc")
    assert h.byte_order == ">" and h.mode == 2
    d, p = read_mrc(tmp_path / "be.mrc")
    np.testing.assert_array_equal(d, be)
    assert p == pytest.approx(1.5)
    u16 = np.arange(24, dtype=np.uint16).reshape(2, 3, 4) * 2000
    write_mrc(tmp_path / "u.mrc", u16, 1.0)
    assert read_mrc_header(tmp_path / "u.mrc").mode == 6
    d6, _ = read_mrc(tmp_path / "u.mrc")
    assert d6.dtype == np.uint16 and d6.max() == 46000
