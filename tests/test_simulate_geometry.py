"""The simulator's analytic projections follow tiltflow.geometry (RELION 5), signs and centres included."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tiltflow.ctfmodel import ctf_2d
from tiltflow.geometry import centre, project_points, projection_rotations
from tiltflow.simulate.imaging import FourierGrid, Optics, TiltCtf, frames_of, tilt_intensity
from tiltflow.simulate.phantom import Blobs, Phantom, RadialObject
from tiltflow.simulate.project import Grid, TiltProjection, make_grid
from tiltflow.simulate.volume import render_volume

W, H = 96, 80  # different on purpose: an x/y mix-up shows


def _phantom(xyz, sigma=1.5, radial=(), box=(W, H, 40), thickness=40.0) -> Phantom:
    xyz = np.asarray(xyz, float).reshape(-1, 3)
    return Phantom(Blobs(xyz, np.full(len(xyz), sigma), np.full(len(xyz), 0.1)), list(radial), [], [], box,
                   thickness, 1.0)


def _centroid(img: np.ndarray) -> np.ndarray:
    y, x = np.mgrid[: img.shape[0], : img.shape[1]]
    s = img.sum()
    return np.array([(x * img).sum() / s, (y * img).sum() / s])


@pytest.mark.parametrize("tilt", [60.0, -60.0, 0.0, 33.0])
def test_blob_lands_where_geometry_project_points_says(tilt):
    pos = np.array([17.0, -11.0, 9.0])
    shift = np.array([3.5, -2.25])
    grid = Grid(W, H, pad=0)
    proj = TiltProjection(_phantom(pos), projection_rotations(0, tilt, 85.0), shift, grid, depth_step_px=10)
    img = proj.projection().numpy()
    want = project_points(pos, 0.0, tilt, 85.0, shift[None])[0, 0] + [centre(W), centre(H)]
    np.testing.assert_allclose(_centroid(img), want, atol=0.01)
    # the integral of the projection is the blob's mass (pixel-integrated erf windows)
    assert img.sum() == pytest.approx(float(proj.blobs.mass[0]), rel=0.01)


def test_positive_and_negative_tilts_move_a_raised_blob_to_opposite_sides():
    pos = np.array([0.0, 0.0, 15.0])  # above the mid-plane: moves only through the tilt
    grid = Grid(W, H, pad=0)
    c = []
    for tilt in (60.0, -60.0):
        img = TiltProjection(_phantom(pos), projection_rotations(0, tilt, 85.0), (0, 0), grid, 10).projection().numpy()
        c.append(_centroid(img) - [centre(W), centre(H)])
    # RELION: (Ry(60) X)_x = sin(60) * z > 0, then Rz(85) turns +x towards +y
    assert c[0][1] > 10 and c[1][1] < -10
    np.testing.assert_allclose(c[0], -c[1], atol=0.02)


def test_padding_keeps_the_image_centre():
    pos = np.array([5.0, 7.0, 0.0])
    g0, g1 = Grid(W, H, 0), Grid(W, H, 13)
    a = TiltProjection(_phantom(pos), projection_rotations(0, 20, 85.0), (1.0, 2.0), g0, 10).projection().numpy()
    b = TiltProjection(_phantom(pos), projection_rotations(0, 20, 85.0), (1.0, 2.0), g1, 10).projection().numpy()
    np.testing.assert_allclose(b[13:13 + H, 13:13 + W], a, atol=1e-6)


def test_sphere_projection_is_the_chord_length():
    R = 12.0
    ball = RadialObject("gold", np.array([0.0, 0.0, 0.0]), ball=(R, 0.05, 1.0))
    dr, P = ball.projection_table()
    r = np.array([0.0, 5.0, 10.0])
    got = np.interp(r / dr, np.arange(len(P)), P)
    np.testing.assert_allclose(got, 2 * np.sqrt(R * R - r * r), rtol=0.01)


def test_blob_depth_selects_the_plane_of_its_defocus():
    """A blob above the mid-plane is imaged with defocus + hand * pixel * depth (RELION Tomogram::getCtf)."""
    tilt, axis, px = 50.0, 85.0, 2.0
    pos = np.array([40.0, 0.0, -30.0])
    rot = projection_rotations(0, tilt, axis)
    depth = (rot @ pos)[2]  # -sin(50) * 40 - cos(50) * 30 = -49.9 px = -100 A
    assert depth == pytest.approx(-49.93, abs=0.01)
    grid = make_grid(128, 128, 24)
    fg = FourierGrid(grid, px)
    optics = Optics(px, amplitude_contrast=0.1)
    for hand in (1, -1):
        proj = TiltProjection(_phantom(pos, sigma=0.8), rot, (0, 0), grid, depth_step_px=1.0)
        got = tilt_intensity(proj, fg, optics, TiltCtf(20000.0, 19000.0, 30.0, hand), 1.0).numpy() - 1
        phase = proj.projection()
        errs = {}
        for h_try in (1, -1):
            dz = h_try * px * depth
            c = ctf_2d((grid.hp, grid.wp), px, 20000.0 + dz, 19000.0 + dz, 30.0, amplitude_contrast=0.1, rfft=True)
            want = 2 * torch.fft.irfft2(torch.fft.rfft2(phase) * c, s=phase.shape).numpy()
            errs[h_try] = np.abs(got - want).max() / np.abs(want).max()
        assert errs[hand] < 0.005  # the plane sits at the blob's depth
        assert errs[-hand] > 0.04 and errs[-hand] > 100 * errs[hand]  # the other hand is clearly different


def test_frames_are_the_image_translated_by_plus_drift():
    grid = make_grid(64, 64, 16)
    fg = FourierGrid(grid, 1.0)
    img = TiltProjection(_phantom([0.0, 0.0, 0.0], sigma=2.0), projection_rotations(0, 0, 0), (0, 0), grid, 10)
    intensity = 1.0 + img.projection()
    drifts = np.array([[0.0, 0.0], [2.5, -1.25]])
    f0, f1 = [f.numpy() - 1 for f in frames_of(intensity, fg, drifts)]
    np.testing.assert_allclose(_centroid(f1) - _centroid(f0), drifts[1], atol=0.02)


def test_phantom_volume_projects_to_the_zero_tilt_image():
    rng = np.random.default_rng(4)
    pos = np.column_stack([rng.uniform(-40, 40, 12), rng.uniform(-32, 32, 12), rng.uniform(-15, 15, 12)])
    ves = RadialObject("vesicle", np.array([10.0, -8.0, 0.0]), shells=((9.0, 1.0, 0.1), (13.0, 1.0, 0.1)))
    ph = _phantom(pos, sigma=2.0, radial=[ves])
    for b in (1, 2):
        vol = render_volume(ph, b)
        assert vol.shape == (math.ceil(40 / b), math.ceil(H / b), math.ceil(W / b))
        grid = Grid(W, H, 0)
        img = TiltProjection(ph, projection_rotations(0, 0, 0), (0, 0), grid, 10).projection().numpy()
        # bin the projection like the volume (voxel i covers pixels b*i .. b*i + b - 1)
        binned = img.reshape(H // b, b, W // b, b).mean(axis=(1, 3))
        summed = vol.sum(axis=0) * b  # values are densities per pixel of path
        assert np.corrcoef(summed.ravel(), binned.ravel())[0, 1] > 0.99
        assert summed.sum() == pytest.approx(binned.sum(), rel=0.03)


def test_plane_ctf_equals_ctfmodel():
    from tiltflow.ctfmodel import ctf_from_frequencies
    from tiltflow.simulate.imaging import PlaneCtf

    grid = make_grid(100, 90, 8)
    fg = FourierGrid(grid, 1.7)
    optics = Optics(1.7, 300.0, 2.7, 0.1)
    ctf = TiltCtf(31000.0, 29500.0, -37.0, 1)
    offsets = np.array([-1500.0, 0.0, 820.0])
    got = PlaneCtf(fg, optics, ctf)(offsets)
    for i, off in enumerate(offsets):
        want = ctf_from_frequencies(fg.kx.double(), fg.ky.double(), 31000.0 + off, 29500.0 + off, -37.0, 300.0, 2.7, 0.1)
        np.testing.assert_allclose(got[i].numpy(), want.numpy(), atol=2e-4)
