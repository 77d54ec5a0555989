"""Gain orientation: MotionCor2/3's -RotGain/-FlipGain, its inverse, and SerialEM's r/f codes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tiltflow.errors import TiltflowError
from tiltflow.io.gain import (
    ALL_ORIENTATIONS,
    orient_gain,
    serialem_rf_to_rotate_flip,
    unorient_gain,
)

# gain[y, x], row y = 0 first in the file (displayed at the BOTTOM by IMOD/MotionCor):
#   display:  y=1: 4 5 6
#             y=0: 1 2 3
G = np.array([[1, 2, 3], [4, 5, 6]])

# Worked by hand in the y-up display: a counter-clockwise turn moves the right column to the top.
# rotate 1 displays   6 3 / 5 2 / 4 1 (top to bottom)  -> rows from the bottom: [4 1], [5 2], [6 3]
EXPECTED = {
    (0, 0): [[1, 2, 3], [4, 5, 6]],
    (1, 0): [[4, 1], [5, 2], [6, 3]],
    (2, 0): [[6, 5, 4], [3, 2, 1]],
    (3, 0): [[3, 6], [2, 5], [1, 4]],
    # flip 1 = upside down (rows reversed) after the rotation
    (0, 1): [[4, 5, 6], [1, 2, 3]],
    (1, 1): [[6, 3], [5, 2], [4, 1]],
    (2, 1): [[3, 2, 1], [6, 5, 4]],
    (3, 1): [[1, 4], [2, 5], [3, 6]],
    # flip 2 = left-right (columns reversed) after the rotation
    (0, 2): [[3, 2, 1], [6, 5, 4]],
    (1, 2): [[1, 4], [2, 5], [3, 6]],
    (2, 2): [[4, 5, 6], [1, 2, 3]],
    (3, 2): [[6, 3], [5, 2], [4, 1]],
}


def motioncor_oracle(img: np.ndarray, rot: int, flip: int) -> np.ndarray:
    """Pixel loops transcribed from MotionCor3 MrcUtil/G90Rotate2D.cu (mGRotate) and GFlip2D.cu."""
    ny, nx = img.shape
    ang = np.deg2rad(90.0 * rot)
    c = int(round(np.cos(ang)))
    s = int(round(np.sin(ang)))
    rx, ry = (nx, ny) if rot % 2 == 0 else (ny, nx)
    out = np.zeros((ry, rx), img.dtype)
    for y in range(ry):
        for x in range(rx):
            fnx = x - (rx - 1) * 0.5
            fny = y - (ry - 1) * 0.5
            fx = fnx * c + fny * s
            fy = -fnx * s + fny * c
            ix = int(fx + (nx - 1) * 0.5 + 0.5)
            iy = int(fy + (ny - 1) * 0.5 + 0.5)
            out[y, x] = img[iy, ix]
    if flip == 1:  # Vertical: row y <-> ny-1-y
        out = np.array([out[ry - 1 - y] for y in range(ry)])
    elif flip == 2:  # Horizontal: column x <-> nx-1-x
        out = np.array([[out[y, rx - 1 - x] for x in range(rx)] for y in range(ry)])
    return out


@pytest.mark.parametrize(("rot", "flip"), sorted(EXPECTED))
def test_orient_gain_matches_hand_computed_2x3(rot, flip):
    got = orient_gain(G, rot, flip)
    np.testing.assert_array_equal(got, np.array(EXPECTED[(rot, flip)]))
    assert got.flags.c_contiguous


@pytest.mark.parametrize(("rot", "flip"), sorted(EXPECTED))
def test_orient_gain_matches_motioncor_kernels(rot, flip):
    img = np.arange(5 * 7).reshape(5, 7)  # odd sizes: the kernel's rounding of the centre matters
    np.testing.assert_array_equal(orient_gain(img, rot, flip), motioncor_oracle(img, rot, flip))
    np.testing.assert_array_equal(motioncor_oracle(G, rot, flip), np.array(EXPECTED[(rot, flip)]))


@pytest.mark.parametrize(("rot", "flip"), sorted(EXPECTED))
def test_unorient_is_exact_inverse(rot, flip):
    img = np.arange(4 * 6, dtype=np.float32).reshape(4, 6)
    np.testing.assert_array_equal(unorient_gain(orient_gain(img, rot, flip), rot, flip), img)
    np.testing.assert_array_equal(orient_gain(unorient_gain(img, rot, flip), rot, flip), img)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 6), st.integers(1, 6), st.integers(0, 3), st.integers(0, 2))
def test_unorient_inverse_property(h, w, rot, flip):
    img = np.random.default_rng(h * 7 + w).random((h, w))
    np.testing.assert_array_equal(unorient_gain(orient_gain(img, rot, flip), rot, flip), img)


def test_eight_distinct_orientations():
    outs = {orient_gain(G, r, f).tobytes() + bytes(orient_gain(G, r, f).shape) for r, f in ALL_ORIENTATIONS}
    assert len(outs) == 8
    # flip 2 adds nothing new: it is flip 1 after another 180 degrees
    for r in range(4):
        np.testing.assert_array_equal(orient_gain(G, r, 2), orient_gain(G, (r + 2) % 4, 1))


def test_bad_orientation_arguments():
    with pytest.raises(TiltflowError, match="0-3"):
        orient_gain(G, 4, 0)
    with pytest.raises(TiltflowError, match="flip"):
        orient_gain(G, 0, 3)
    with pytest.raises(TiltflowError, match="2-D"):
        orient_gain(np.zeros((2, 2, 2)), 0, 0)


def _serialem_op(img: np.ndarray, v: int) -> np.ndarray:
    """SerialEM's definition, independently: mirror in x first if v >= 4, then turn CCW (y-up) v % 4 times."""
    out = img[:, ::-1] if v >= 4 else img
    for _ in range(v % 4):
        out = np.rot90(out, -1)  # CCW with y up == clockwise in numpy's y-down view
    return out


@pytest.mark.parametrize("v", range(8))
def test_serialem_rf_for_mrc_frames(v):
    r, f = serialem_rf_to_rotate_flip(v)
    np.testing.assert_array_equal(orient_gain(G, r, f), _serialem_op(G, v))


def test_serialem_rf_table_and_errors():
    table = [serialem_rf_to_rotate_flip(v) for v in range(8)]
    assert table == [(0, 0), (1, 0), (2, 0), (3, 0), (0, 2), (3, 2), (2, 2), (1, 2)]
    with pytest.raises(TiltflowError, match="0-7"):
        serialem_rf_to_rotate_flip(8)
