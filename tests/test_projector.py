"""The projector pair follows geometry.py (signs, centres, shifts) and is exactly adjoint."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tiltflow.alignment import TiltSeriesAlignment
from tiltflow.geometry import centre, project_points
from tiltflow.tomo.projector import FastBackprojector, backproject, forward_project

SHAPE = (40, 48, 56)  # d, h, w: all different so that an axis mix-up shows
IMG = (60, 64)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _aln(tilts, zrot=85.0, shifts=None, xtilt=None):
    n = len(tilts)
    return TiltSeriesAlignment(
        y_tilt=np.asarray(tilts, float), z_rot=zrot,
        shifts_px=np.zeros((n, 2)) if shifts is None else shifts, pixel_size=1.0, x_tilt=xtilt,
    )


def _blob(shape, pos_xyz, sigma=1.5):
    z, y, x = np.meshgrid(*[np.arange(s) - centre(s) for s in shape], indexing="ij")
    r2 = (x - pos_xyz[0]) ** 2 + (y - pos_xyz[1]) ** 2 + (z - pos_xyz[2]) ** 2
    return np.exp(-r2 / (2 * sigma**2)).astype(np.float32)


def _centroid(img):
    y, x = np.mgrid[: img.shape[0], : img.shape[1]]
    s = img.sum()
    return np.array([(x * img).sum() / s, (y * img).sum() / s])


def test_blob_projects_where_geometry_says():
    pos = np.array([7.0, -5.0, 6.0])
    aln = _aln([60.0, -60.0, 0.0, 33.0], zrot=85.0,
               shifts=np.array([[3.5, -2.25], [-4.0, 1.5], [0.0, 0.0], [2.0, 5.0]]), xtilt=[0, 0, 0, 4.0])
    proj = forward_project(torch.from_numpy(_blob(SHAPE, pos)), aln, IMG).numpy()
    want = project_points(pos, aln.x_tilt, aln.y_tilt, aln.z_rot, aln.shifts_px)[:, 0, :]
    c_img = np.array([centre(IMG[1]), centre(IMG[0])])
    for i in range(len(proj)):
        np.testing.assert_allclose(_centroid(proj[i]) - c_img, want[i], atol=0.02)
    # a tilt of +60 and -60 put the blob on different sides: the sign of the tilt matters
    assert np.linalg.norm(want[0] - want[1]) > 5


def test_backprojection_of_analytic_projections_peaks_at_the_point():
    pos = np.array([-9.0, 6.0, 8.0])
    tilts = np.arange(-60, 61, 10.0)
    shifts = np.column_stack([np.linspace(-4, 4, len(tilts)), np.linspace(3, -3, len(tilts))])
    aln = _aln(tilts, zrot=-80.0, shifts=shifts)
    uv = project_points(pos, aln.x_tilt, aln.y_tilt, aln.z_rot, aln.shifts_px)[:, 0, :]
    y, x = np.mgrid[: IMG[0], : IMG[1]]
    imgs = np.stack([
        np.exp(-((x - centre(IMG[1]) - u) ** 2 + (y - centre(IMG[0]) - v) ** 2) / (2 * 1.0**2)) for u, v in uv
    ]).astype(np.float32)
    vol = backproject(torch.from_numpy(imgs), aln, SHAPE).numpy()
    z, yy, xx = np.unravel_index(np.argmax(vol), vol.shape)
    found = np.array([xx - centre(SHAPE[2]), yy - centre(SHAPE[1]), z - centre(SHAPE[0])])
    np.testing.assert_allclose(found, pos, atol=1.01)


def test_adjoint_pair():
    rng = np.random.default_rng(0)
    aln = _aln([-60.0, -20.0, 0.0, 45.0, 60.0], zrot=85.0, shifts=rng.normal(0, 3, (5, 2)))
    v = torch.from_numpy(rng.normal(size=SHAPE).astype(np.float32))
    y = torch.from_numpy(rng.normal(size=(5,) + IMG).astype(np.float32))
    wts = [1.0, 0.5, 2.0, 1.0, 0.25]
    lhs = float((forward_project(v, aln, IMG, wts).double() * y.double()).sum())
    rhs = float((v.double() * backproject(y, aln, SHAPE, wts).double()).sum())
    assert abs(lhs - rhs) <= 1e-4 * abs(lhs) + 1e-3


def test_slabs_and_chunks_equal_one_shot():
    rng = np.random.default_rng(1)
    aln = _aln([-50.0, 10.0, 55.0], zrot=80.0, shifts=rng.normal(0, 2, (3, 2)))
    y = torch.from_numpy(rng.normal(size=(3,) + IMG).astype(np.float32))
    full = backproject(y, aln, SHAPE)
    parts = torch.cat([backproject(y, aln, SHAPE, z_slab=(a, min(a + 7, SHAPE[0]))) for a in range(0, SHAPE[0], 7)])
    torch.testing.assert_close(parts, full)
    torch.testing.assert_close(backproject(y, aln, SHAPE, max_voxels=1000), full)
    v = torch.from_numpy(rng.normal(size=SHAPE).astype(np.float32))
    p_full = forward_project(v, aln, IMG)
    p_parts = sum(
        forward_project(v[a:b], aln, IMG, z_slab=(a, b), volume_depth=SHAPE[0]) for a, b in [(0, 13), (13, 40)]
    )
    torch.testing.assert_close(p_parts, p_full, atol=1e-4, rtol=1e-4)


def test_uniform_slab_projects_to_thickness_over_cos():
    vol = torch.zeros(SHAPE)
    vol[centre(SHAPE[0]) - 5 : centre(SHAPE[0]) + 5] = 1.0  # 10 voxels thick, the whole x-y plane
    proj = forward_project(vol, _aln([0.0, 40.0], zrot=0.0), IMG)
    c = (centre(IMG[0]), centre(IMG[1]))
    assert float(proj[0][c]) == pytest.approx(10.0, rel=1e-4)
    assert float(proj[1][c]) == pytest.approx(10.0 / np.cos(np.deg2rad(40.0)), rel=0.02)


def _blob_images(pos, aln, sigma=1.0, img=IMG):
    uv = project_points(pos, aln.x_tilt, aln.y_tilt, aln.z_rot, aln.shifts_px)[:, 0, :]
    y, x = np.mgrid[: img[0], : img[1]]
    return torch.from_numpy(np.stack([
        np.exp(-((x - centre(img[1]) - u) ** 2 + (y - centre(img[0]) - v) ** 2) / (2 * sigma**2)) for u, v in uv
    ]).astype(np.float32))


def _peak(vol):
    """Sub-voxel peak (x, y, z) relative to the volume centre: centroid of a 5^3 box at the maximum."""
    z, y, x = np.unravel_index(np.argmax(vol), vol.shape)
    box = vol[z - 2 : z + 3, y - 2 : y + 3, x - 2 : x + 3]
    box = box - box.min()
    g = np.mgrid[-2:3, -2:3, -2:3]
    zyx = np.array([(gi * box).sum() / box.sum() for gi in g]) + [z, y, x]
    return zyx[::-1] - [centre(SHAPE[2]), centre(SHAPE[1]), centre(SHAPE[0])]


@pytest.mark.parametrize("zrot", [-80.0, 0.0, 90.0, 33.0])
def test_fast_backprojection_equals_the_exact_one_to_interpolation(zrot):
    """WBP's fast path: same volume as the voxel-driven backproject up to interpolation, same peaks."""
    pos = np.array([-8.7, 5.8, 8.45])
    tilts = np.arange(-60, 61, 10.0)
    shifts = np.column_stack([np.linspace(-4, 4, len(tilts)), np.linspace(3, -3, len(tilts))]) + 0.37
    aln = _aln(tilts, zrot=zrot, shifts=shifts)
    imgs = _blob_images(pos, aln)
    wts = np.linspace(0.5, 1.5, len(tilts))
    exact = backproject(imgs, aln, SHAPE, wts).double().numpy()
    fast = FastBackprojector(imgs, aln, SHAPE, wts)().double().numpy()
    assert np.linalg.norm(fast - exact) <= 0.03 * np.linalg.norm(exact)  # measured 0.014-0.016
    np.testing.assert_allclose(_peak(fast), _peak(exact), atol=0.02)  # measured < 0.005 px
    np.testing.assert_allclose(_peak(fast), pos, atol=0.5)


def test_fast_backprojection_with_binning_geometry():
    """image_scale / image_center / volume_center (non-integer binning) mean the same as in backproject."""
    rng = np.random.default_rng(3)
    aln = _aln(np.arange(-60, 61, 15.0), zrot=-84.0, shifts=rng.normal(0, 2, (9, 2)))
    imgs = _blob_images(np.array([5.0, -7.0, 4.0]), aln, sigma=1.5)
    kw = {"volume_center": (27.5, 23.0, 19.25), "image_center": (31.7, 29.2), "image_scale": (1.013, 0.994)}
    exact = backproject(imgs, aln, SHAPE, **kw).double().numpy()
    fast = FastBackprojector(imgs, aln, SHAPE, **kw)().double().numpy()
    assert np.linalg.norm(fast - exact) <= 0.02 * np.linalg.norm(exact)
    np.testing.assert_allclose(_peak(fast), _peak(exact), atol=0.02)


def test_fast_backprojection_slabs_chunks_and_x_tilt():
    rng = np.random.default_rng(4)
    aln = _aln([-50.0, 10.0, 55.0, 20.0], zrot=80.0, shifts=rng.normal(0, 2, (4, 2)), xtilt=[0.0, 0.0, 0.0, 5.0])
    y = torch.from_numpy(rng.normal(size=(4,) + IMG).astype(np.float32))
    fb = FastBackprojector(y, aln, SHAPE)
    full = fb()
    parts = torch.cat([fb((a, min(a + 7, SHAPE[0]))) for a in range(0, SHAPE[0], 7)])
    torch.testing.assert_close(parts, full)
    torch.testing.assert_close(FastBackprojector(y, aln, SHAPE, max_nonzeros=5000)(), full)
    # the x-tilted tilt goes through the exact path; a zero weight drops a tilt
    only_x = [0.0, 0.0, 0.0, 1.0]
    torch.testing.assert_close(FastBackprojector(y, aln, SHAPE, only_x)(), backproject(y, aln, SHAPE, only_x))
    no_x = [1.0, 1.0, 1.0, 0.0]
    torch.testing.assert_close(full, FastBackprojector(y, aln, SHAPE, no_x)() + backproject(y, aln, SHAPE, only_x))
    assert float(FastBackprojector(y, aln, SHAPE, [0.0] * 4)().abs().max()) == 0.0


def test_bad_shapes_raise():
    aln = _aln([0.0, 10.0])
    with pytest.raises(ValueError):
        backproject(torch.zeros(3, 8, 8), aln, (4, 4, 4))
    with pytest.raises(ValueError):
        backproject(torch.zeros(2, 8, 8), aln, (4, 4, 4), z_slab=(2, 9))
    with pytest.raises(ValueError):
        FastBackprojector(torch.zeros(3, 8, 8), aln, (4, 4, 4))
    with pytest.raises(ValueError):
        FastBackprojector(torch.zeros(2, 8, 8), aln, (4, 4, 4))((2, 9))
