"""DM4 reader on synthetic files written per the published format (big-endian tags, 8-byte counts)."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from tiltflow.errors import TiltflowError
from tiltflow.io.dm4 import read_dm4, write_dm4


@pytest.mark.parametrize("dtype", [np.float32, np.uint16, np.int16, np.uint8, np.int32, np.float64])
def test_roundtrip_dtypes_and_imod_orientation(tmp_path, dtype):
    img = (np.arange(9 * 14).reshape(9, 14) % 200).astype(dtype)  # rows in DM's top-down order
    path = write_dm4(tmp_path / "ref.dm4", img, pixel_size=0.834)
    out = read_dm4(path)
    assert out.data.dtype == np.dtype(dtype) and out.data.shape == (9, 14)
    np.testing.assert_array_equal(out.data, img[::-1])  # as dm2mrc writes it: y inverted
    np.testing.assert_array_equal(read_dm4(path, invert_y=False).data, img)
    assert out.pixel_size == pytest.approx(0.834, rel=1e-6)  # stored in nm, returned in A


def test_header_layout(tmp_path):
    path = write_dm4(tmp_path / "ref.dm4", np.ones((4, 6), np.float32))
    raw = path.read_bytes()
    assert struct.unpack(">i", raw[:4])[0] == 4  # version 4, big-endian
    assert struct.unpack(">Q", raw[4:12])[0] == len(raw) - 16 - 8  # root length (8 zero bytes close the file)
    assert struct.unpack(">i", raw[12:16])[0] == 1  # data little-endian
    assert b"ImageList" in raw and b"%%%%" in raw


def test_picks_main_image_not_thumbnail(tmp_path):
    img = np.random.default_rng(0).random((40, 30)).astype(np.float32)
    out = read_dm4(write_dm4(tmp_path / "r.dm4", img), invert_y=False)
    np.testing.assert_array_equal(out.data, img)


def test_errors(tmp_path):
    path = write_dm4(tmp_path / "ref.dm4", np.ones((64, 64), np.float32))
    raw = path.read_bytes()
    cut = tmp_path / "cut.dm4"
    cut.write_bytes(raw[: len(raw) - 5000])
    with pytest.raises(TiltflowError, match="truncated DM4") as ei:
        read_dm4(cut)
    assert str(cut) in str(ei.value) and "\n" not in str(ei.value)
    dm3 = tmp_path / "old.dm3"
    dm3.write_bytes(struct.pack(">i", 3) + b"\x00" * 40)
    with pytest.raises(TiltflowError, match="DM3"):
        read_dm4(dm3)
    with pytest.raises(TiltflowError, match="not found"):
        read_dm4(tmp_path / "missing.dm4")
