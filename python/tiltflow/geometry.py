"""RELION 5's tilt-series projection model: the one geometry every step and the simulator use.

RELION (``Tomogram::setProjectionMatrix``) maps a tomogram voxel ``X`` (bin-1 pixels, x fastest)
to a tilt-image pixel as::

    p = Rz(ZRot) @ Ry(YTilt) @ Rx(XTilt) @ (X - c_tomo) + shift_px + c_img

with right-handed rotations in degrees, ``c_tomo = int(size/2)`` per axis, ``c_img = int(image
size/2)`` and ``shift_px = (rlnTomoXShiftAngst, rlnTomoYShiftAngst) / tilt-series pixel size``;
only the x and y rows of the result are used. AreTomo's ``.aln`` maps onto it directly:
ZRot = ROT, YTilt = TILT, shifts = TX/TY x pixel size.

Arrays follow numpy order for images: ``image[y, x]``; volumes ``volume[z, y, x]``.
"""

from __future__ import annotations

import numpy as np


def _rot(axis: int, degrees) -> np.ndarray:
    a = np.deg2rad(np.asarray(degrees, dtype=np.float64))
    c, s = np.cos(a), np.sin(a)
    m = np.zeros(a.shape + (3, 3))
    i, j = [(1, 2), (0, 2), (0, 1)][axis]
    k = 3 - i - j
    m[..., k, k] = 1.0
    m[..., i, i] = c
    m[..., j, j] = c
    if axis == 1:  # Ry: [[c,0,s],[0,1,0],[-s,0,c]]
        m[..., i, j] = s
        m[..., j, i] = -s
    else:  # Rx, Rz: [[c,-s],[s,c]] in their plane
        m[..., i, j] = -s
        m[..., j, i] = s
    return m


def rotation_x(degrees) -> np.ndarray:
    """Right-handed rotation about x (RELION's rlnTomoXTilt)."""
    return _rot(0, degrees)


def rotation_y(degrees) -> np.ndarray:
    """Right-handed rotation about y (RELION's rlnTomoYTilt: the tilt)."""
    return _rot(1, degrees)


def rotation_z(degrees) -> np.ndarray:
    """Right-handed rotation about z (RELION's rlnTomoZRot: the tilt-axis angle from the y axis)."""
    return _rot(2, degrees)


def projection_rotations(x_tilt, y_tilt, z_rot) -> np.ndarray:
    """``Rz(z_rot) @ Ry(y_tilt) @ Rx(x_tilt)``, broadcast over tilts: shape (..., 3, 3)."""
    x, y, z = np.broadcast_arrays(np.asarray(x_tilt, float), np.asarray(y_tilt, float), np.asarray(z_rot, float))
    return rotation_z(z) @ rotation_y(y) @ rotation_x(x)


def centre(size: int) -> int:
    """RELION's centre of an axis of ``size`` pixels: ``int(size / 2)``."""
    return int(size // 2)


def project_points(points_xyz, x_tilt, y_tilt, z_rot, shifts_px=None) -> np.ndarray:
    """Project points (m, 3) given relative to the tomogram centre (pixels) into each tilt.

    Returns (n, m, 2) image coordinates (x, y) relative to the image centre ``c_img``.
    ``shifts_px`` is (n, 2) in (x, y) pixels; ``None`` means no shift.
    """
    r = projection_rotations(x_tilt, y_tilt, z_rot).reshape(-1, 3, 3)
    pts = np.asarray(points_xyz, float).reshape(-1, 3)
    out = np.einsum("nij,mj->nmi", r[:, :2, :], pts)
    if shifts_px is not None:
        out = out + np.asarray(shifts_px, float).reshape(-1, 1, 2)
    return out


def image_rotation_2d(degrees) -> np.ndarray:
    """2-D right-handed rotation acting on (x, y) image coordinates: shape (..., 2, 2)."""
    return rotation_z(degrees)[..., :2, :2]
