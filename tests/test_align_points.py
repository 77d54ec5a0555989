"""The 3-D point model (``align.points``): exact recovery, noise, outliers, and the featureless fallback."""

from __future__ import annotations

import numpy as np

from tiltflow import geometry
from tiltflow.align import gauge, points, track, warp

ROT0 = 85.0


def _observe(n_points=30, d_axis=0.7, seed=0):
    """Working-frame observations of random 3-D points under shifts and an axis error of ``d_axis``."""
    rng = np.random.default_rng(seed)
    tilts = np.arange(-60.0, 60.1, 3.0)
    x = np.column_stack([rng.uniform(-400, 400, (n_points, 2)), rng.uniform(-150, 150, n_points)])
    shifts = rng.normal(0, 5, (len(tilts), 2))
    p = geometry.project_points(x, 0, tilts, ROT0 + d_axis, shifts)  # relative to the image centre
    q = np.stack([warp.to_axis_frame(p[i], np.full(n_points, ROT0)) for i in range(len(tilts))])
    return tilts, x, shifts, q, rng


def _shift_error(f, shifts, tilts, d_axis):
    est = warp.to_image_frame(f.e, np.full(len(tilts), ROT0))  # the working alignment had zero shifts
    return gauge.rms(gauge.gauge_free_error(est, shifts, tilts, ROT0 + d_axis))


def test_exact_points_give_back_shifts_axis_and_depths():
    tilts, x, shifts, q, _ = _observe()
    f = points.fit(q, tilts)
    assert abs(f.d_axis - 0.7) < 0.01
    assert f.rms < 0.01
    assert _shift_error(f, shifts, tilts, 0.7) < 0.01
    # depths relative to the mean: the gauge keeps the height of the input alignment
    dz = (f.xyz[:, 2] - f.xyz[:, 2].mean()) - (x[:, 2] - x[:, 2].mean())
    assert np.max(np.abs(dz)) < 0.05
    np.testing.assert_allclose(points.project(f.xyz, tilts, f.d_axis, f.e), q, atol=0.05)


def test_noise_and_outliers_are_rejected():
    tilts, _, shifts, q, rng = _observe(seed=1)
    q = q + rng.normal(0, 0.5, q.shape)
    q[5, 3] += 20.0  # one wrong peak
    q[:, 7] += rng.normal(0, 10, (len(tilts), 2))  # a track that followed nothing
    q[12:, 9] = np.nan  # a feature that left the field of view
    f = points.fit(q, tilts)
    assert not f.used[5, 3]
    assert not f.used[:, 7].any()
    assert f.used[:12, 9].all() or not f.used[:, 9].any()
    assert abs(f.d_axis - 0.7) < 0.1
    assert _shift_error(f, shifts, tilts, 0.7) < 0.3
    assert np.all(np.isfinite(f.tilt_residual)) and np.nanmax(f.tilt_residual) < 2.0


def test_axis_can_stay_fixed():
    tilts, _, shifts, q, _ = _observe(d_axis=0.0, seed=2)
    f = points.fit(q, tilts, fit_axis=False)
    assert f.d_axis == 0.0
    assert _shift_error(f, shifts, tilts, 0.0) < 0.01


def test_featureless_series_falls_back():
    import torch

    rng = np.random.default_rng(0)
    imgs = torch.as_tensor(rng.normal(size=(9, 64, 64)).astype(np.float32))
    tilts = np.arange(-24.0, 24.1, 6.0)
    out = points.refine(track.make_level(imgs, (32.0, 32.0)), tilts, np.full(9, ROT0), np.zeros((9, 2)))
    assert out is None


def test_tracking_removes_a_smooth_error_across_the_axis():
    """Blob series, start geometry off by a smooth cross-axis error and 1 deg of axis: both come back."""
    import torch

    from tiltflow.testing import align_series

    s = align_series.make_series(size=128, tilt_step=3, n_dark=0, seed=7, tilt_axis=ROT0, thickness=24, n_blobs=120,
                              noise=0.3)
    n = len(s.tilt_angles)
    th = np.deg2rad(s.tilt_angles)
    smooth = np.column_stack([7.0 * np.sin(2 * th) + 5.0 * th**2, np.zeros(n)])  # mostly not gauge (cos, sin)
    start = s.shifts_px + warp.to_image_frame(smooth, np.full(n, ROT0))
    before = gauge.rms(gauge.gauge_free_error(start, s.shifts_px, s.tilt_angles, ROT0))
    imgs = torch.as_tensor(s.images - s.images.mean(axis=(1, 2), keepdims=True))
    out = points.refine(track.make_level(imgs, (64.0, 64.0)), s.tilt_angles, np.full(n, ROT0 - 1.0), start, rounds=3)
    assert out is not None and out.fit.n_points >= 8
    after = gauge.rms(gauge.gauge_free_error(out.shifts, s.shifts_px, s.tilt_angles, ROT0))
    assert before > 2.0
    assert after < 0.5, (before, after)
    assert abs(out.rot[0] - ROT0) < 0.3
    assert out.fit.tilt_residual.shape == (n,)
