"""Gain references: orientation (MotionCor's -RotGain/-FlipGain), reading and the prepared gain.

Why our own code: no package provides it; it is a multiply plus the conventions below, which must match
MotionCor2/3 exactly so that a user passes the same ``--rotate``/``--flip`` to tiltflow as to MotionCor.

Array convention. Every image array in tiltflow is indexed ``img[y, x]`` where row ``y = 0`` is the first
row stored in the file (MRC section order, TIFF strip order; MotionCor reads both the same way, without a
y flip). MRC viewers (IMOD 3dmod, MotionCor's own notion of "counter-clockwise") display that row at the
BOTTOM (y axis pointing up). numpy's ``rot90`` is "counter-clockwise" for a y-down display, so a CCW turn in
the MRC (y-up) display is ``np.rot90(img, k=-1)`` here.
"""

from __future__ import annotations

import numpy as np

from tiltflow.errors import TiltflowError


def _check_rotate_flip(rotate: int, flip: int) -> None:
    if int(rotate) not in (0, 1, 2, 3):
        raise TiltflowError(f"gain rotation must be 0-3 (multiples of 90 deg), got {rotate}")
    if int(flip) not in (0, 1, 2):
        raise TiltflowError(f"gain flip must be 0 (none), 1 (upside down) or 2 (left-right), got {flip}")


def orient_gain(gain: np.ndarray, rotate: int, flip: int) -> np.ndarray:
    """Apply MotionCor2/3's ``-RotGain rotate -FlipGain flip`` to ``gain`` (2-D, ``gain[y, x]``).

    Taken from MotionCor3 ``CLoadRefs::PostProcess``: rotate first, then flip.

    * Rotation (``MrcUtil/G90Rotate2D.cu``) turns the image counter-clockwise by ``rotate * 90`` degrees
      as displayed with y up. For ``rotate = 1`` and an input of height ``H`` and width ``W`` the output
      has shape ``(W, H)`` and ``out[y, x] = gain[H - 1 - x, y]``, i.e. ``np.rot90(gain, k=-1)``;
      ``rotate = 2``: ``out[y, x] = gain[H-1-y, W-1-x]``; ``rotate = 3``: ``out[y, x] = gain[x, W-1-y]``.
    * Flip (``MrcUtil/GFlip2D.cu``): 1 = ``Vertical`` (upside down, about the horizontal axis):
      ``out[y, x] = img[H-1-y, x]``; 2 = ``Horizontal`` (left-right): ``out[y, x] = img[y, W-1-x]``.

    The result is the gain in the movie's orientation (a new contiguous array).
    """
    _check_rotate_flip(rotate, flip)
    arr = np.asarray(gain)
    if arr.ndim != 2:
        raise TiltflowError(f"a gain reference must be one 2-D image, got shape {arr.shape}")
    out = np.rot90(arr, k=-int(rotate))
    if flip == 1:
        out = out[::-1, :]
    elif flip == 2:
        out = out[:, ::-1]
    return np.ascontiguousarray(out)


def unorient_gain(gain_in_movie_orientation: np.ndarray, rotate: int, flip: int) -> np.ndarray:
    """Exact inverse of :func:`orient_gain`: ``unorient_gain(orient_gain(g, r, f), r, f) == g``.

    Used by the simulator to write a gain file that needs ``--rotate r --flip f`` (as MotionCor would).
    """
    _check_rotate_flip(rotate, flip)
    out = np.asarray(gain_in_movie_orientation)
    if out.ndim != 2:
        raise TiltflowError(f"a gain reference must be one 2-D image, got shape {out.shape}")
    if flip == 1:
        out = out[::-1, :]
    elif flip == 2:
        out = out[:, ::-1]
    return np.ascontiguousarray(np.rot90(out, k=int(rotate)))


def serialem_rf_to_rotate_flip(code: int) -> tuple[int, int]:
    """Convert SerialEM's ``r/f`` value (title ``r/f v``, mdoc ``RotationAndFlip``) to MotionCor's pair.

    SerialEM (``about_camera.htm``): ``v = CCW rotation / 90 + 4`` if the image was flipped about the Y axis
    (mirrored in x, left-right) BEFORE the rotation; that operation applied to the gain reference brings it
    into the frames' orientation. MotionCor rotates first and flips after. With ``R`` a CCW turn and ``Fx``
    the left-right mirror, ``R^k . Fx = Fx . R^-k``, so ``v = k + 4`` becomes ``rotate = -k mod 4, flip = 2``.
    """
    v = int(code)
    if v not in range(8):
        raise TiltflowError(f"SerialEM r/f value must be 0-7, got {code}")
    k = v % 4
    if v < 4:
        return k, 0
    return (-k) % 4, 2
