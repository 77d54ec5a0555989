"""Unit tests of the built-in aligner's pieces (small synthetic data, CPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tiltflow.align import dark, filters, gauge, projmatch, warp, xcorr
from tiltflow.testing import align_series


def _blob_image(n: int, x0: float, y0: float, sigma: float = 3.0) -> np.ndarray:
    yy, xx = np.mgrid[0:n, 0:n].astype(float)
    return np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * sigma**2))


@pytest.mark.parametrize("dx,dy", [(0.3, -0.45), (-2.7, 1.2), (5.5, 0.0)])
def test_subpixel_peak_is_accurate(dx, dy):
    a = torch.tensor(_blob_image(64, 32 + dx, 32 + dy)[None], dtype=torch.float32)
    b = torch.tensor(_blob_image(64, 32, 32)[None], dtype=torch.float32)
    d, h = xcorr.find_peaks(xcorr.xcorr(a, b), 16)
    assert abs(d[0, 0] - dx) < 0.05 and abs(d[0, 1] - dy) < 0.05  # parabola would be off by ~0.1
    assert h[0] > 0


def test_axis_frame_round_trip_and_sampling_sign():
    rng = np.random.default_rng(0)
    d = rng.normal(size=(5, 2))
    rot = rng.uniform(-180, 180, 5)
    np.testing.assert_allclose(warp.to_axis_frame(warp.to_image_frame(d, rot), rot), d, atol=1e-12)
    # a blob displaced by RELION shift s is centred again when sampled with that shift
    img = torch.tensor(_blob_image(64, 32 + 4.0, 32 - 2.0)[None], dtype=torch.float32)
    out = warp.sample_aligned(img, (1.0, 1.0), (32, 32), [30.0], [[4.0, -2.0]], (64, 64), 1.0)
    yy, xx = np.unravel_index(int(torch.argmax(out[0])), (64, 64))
    assert (xx, yy) == (32, 32)


def test_dark_rule_flags_blocked_tilts_with_numbers():
    s = align_series.make_series(size=64, tilt_step=6, n_dark=2, seed=1)
    rep = dark.detect_dark(s.images, s.nominal_tilts, dark_tol=0.7)
    assert set(rep.excluded) == set(np.flatnonzero(s.dark))
    assert all("|mean|/std" in r and "zero tilt" in r for r in rep.excluded.values())
    # DarkTol outside (0, 1) disables the rule, as in AreTomo
    assert not dark.detect_dark(s.images, s.nominal_tilts, dark_tol=0.0, blank_tol=0).excluded


def test_blank_tilt_without_contrast_is_flagged():
    s = align_series.make_series(size=64, tilt_step=6, n_dark=0, seed=2)
    imgs = s.images.copy()
    rng = np.random.default_rng(0)
    imgs[3] = imgs[3].mean() + rng.normal(0, imgs[3].std(), imgs[3].shape)  # counts, no specimen
    rep = dark.detect_dark(imgs, s.nominal_tilts)
    assert list(rep.excluded) == [3]
    assert rep.excluded[3].startswith("blank")


def test_gauge_terms_are_removed_and_fixed():
    tilts = np.arange(-60, 61, 3.0)
    th = np.deg2rad(tilts)
    rot = 85.0
    gauge_only = warp.to_image_frame(np.column_stack([3 * np.cos(th) - 2 * np.sin(th), np.full(len(th), 1.5)]), rot)
    assert gauge.rms(gauge.gauge_free_error(gauge_only, np.zeros_like(gauge_only), tilts, rot)) < 1e-9
    real = np.random.default_rng(0).normal(size=(len(th), 2))
    assert gauge.rms(gauge.gauge_free_error(gauge_only + real, np.zeros_like(real), tilts, rot)) > 0.5
    fixed = warp.to_axis_frame(gauge.fix_gauge(gauge_only, tilts, rot), rot)
    assert abs(fixed[:, 1].mean()) < 1e-9
    np.testing.assert_allclose(fixed[:, 0], -2 * np.sin(th), atol=1e-9)  # the height (sin) term is kept


def test_leave_one_out_self_term_is_exact():
    from tiltflow.tomo.projector import backproject, forward_project

    n, depth = 7, 10
    tilts = np.linspace(-60, 60, n)
    w = torch.randn(n, 12, 20)
    approx = projmatch._apply_bands(projmatch.self_bands(tilts, depth, 20), w)
    ali = projmatch._axis_alignment(tilts)
    for i in (0, 3, 6):
        one = np.eye(n)[i]
        exact = forward_project(backproject(w, ali, (depth, 12, 20), weights=one), ali, (12, 20), weights=one)[i]
        torch.testing.assert_close(approx[i], exact, atol=1e-3, rtol=1e-4)


def test_stretch_alignment_recovers_shifts():
    s = align_series.make_series(size=64, tilt_step=5, n_dark=0, seed=4, thickness=8, max_shift=6)
    imgs = filters.normalise(torch.tensor(s.images))
    fr = xcorr.Frame(imgs, (1.0, 1.0), (32, 32), (64, 64), 1.0, low=0.02, high=0.3)
    rot = np.full(len(s.nominal_tilts), s.tilt_axis)
    shifts, _ = xcorr.stretch_align(fr, s.nominal_tilts, rot, np.zeros((len(rot), 2)), iterations=5, max_shift=20)
    err = gauge.gauge_free_error(shifts, s.shifts_px, s.tilt_angles, s.tilt_axis)
    raw = gauge.gauge_free_error(np.zeros_like(shifts), s.shifts_px, s.tilt_angles, s.tilt_axis)
    assert gauge.rms(raw) > 4
    assert gauge.rms(err) < 0.8  # a thin slab: the stretch model holds
