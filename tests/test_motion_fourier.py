"""motion.fourier / motion.estimate: shifts, cropping and the cross-correlation alignment."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from builders import drift_path, frames, rms_error, specimen
from tiltflow.motion import estimate, fourier


def test_shift_moves_content_by_plus_s():
    rng = np.random.default_rng(0)
    img = torch.as_tensor(specimen((32, 40), rng), dtype=torch.float32)
    spec = torch.fft.rfft2(img)
    out = torch.fft.irfft2(fourier.shift(spec, [3.0, -2.0], (32, 40)), s=(32, 40))
    np.testing.assert_allclose(out.numpy(), np.roll(img.numpy(), (-2, 3), axis=(0, 1)), atol=1e-5)
    # a batch of shifts, sub-pixel: half a pixel there and back is the identity
    two = fourier.shift(spec.expand(2, -1, -1), torch.tensor([[0.5, 0.25], [-0.5, -0.25]]), (32, 40))
    back = fourier.shift(two, torch.tensor([[-0.5, -0.25], [0.5, 0.25]]), (32, 40))
    np.testing.assert_allclose(torch.fft.irfft2(back, s=(32, 40)).numpy(), np.stack([img.numpy()] * 2), atol=1e-5)


def test_crop_keeps_the_mean_and_the_low_frequencies():
    """Fourier binning by 2 keeps a low-frequency wave exactly, sampled at every second pixel."""
    y, x = np.mgrid[0:64, 0:96]
    wave = 5.0 + np.cos(2 * np.pi * (3 * x / 96 + 2 * y / 64))
    img = torch.as_tensor(wave, dtype=torch.float32)
    small = torch.fft.irfft2(fourier.crop(torch.fft.rfft2(img), (64, 96), (32, 48)), s=(32, 48))
    np.testing.assert_allclose(small.numpy(), wave[::2, ::2], atol=1e-4)
    assert fourier.even_crop_shape((4092, 5760), 2) == (2046, 2880)
    assert fourier.even_crop_shape((101, 99), 1.5) == (68, 66)
    with pytest.raises(ValueError):
        fourier.crop(torch.fft.rfft2(img), (64, 96), (128, 96))


def test_shifts_measured_on_a_cropped_copy_are_in_full_size_pixels():
    """A stack cropped 2.4x still reports shifts in the original pixels, with the RELION sign."""
    drift = np.array([[-4.2, 1.3], [0.0, 0.0], [4.2, -1.3]])
    fr = torch.as_tensor(frames((192, 192), drift, counts=1e3, noise=False, seed=2))
    ws = estimate.working_shape((192, 192), 500)
    assert ws == (80, 80)  # 74 kept by the B-factor, rounded up to 2^4 x 5
    res = estimate.align(estimate.prepare(fr, out_shape=ws), ws, (192, 192), estimate.AlignParams(bfactor=500))
    assert res.converged
    np.testing.assert_allclose(-res.shifts, drift - drift.mean(0), atol=0.03)


def test_noise_free_alignment_is_exact():
    rng = np.random.default_rng(3)
    drift = drift_path(8, rng)
    fr = torch.as_tensor(frames((128, 128), drift, noise=False, seed=3))
    p = estimate.AlignParams()
    ws = estimate.working_shape((128, 128), p.bfactor)
    res = estimate.align(estimate.prepare(fr, out_shape=ws), ws, (128, 128), p)
    assert res.converged and res.history[-1] < p.tol
    assert rms_error(-res.shifts, drift) < 0.02
    assert abs(res.shifts.mean(axis=0)).max() < 1e-9  # gauge: mean zero


def test_noisy_alignment_and_frame_groups():
    rng = np.random.default_rng(4)
    drift = drift_path(12, rng)
    fr = torch.as_tensor(frames((160, 160), drift, counts=2.0, seed=4))
    p = estimate.AlignParams()
    ws = estimate.working_shape((160, 160), p.bfactor)
    spec = estimate.prepare(fr, out_shape=ws)
    res = estimate.align(spec, ws, (160, 160), p)
    assert rms_error(-res.shifts, drift) < 0.3
    grouped = estimate.align(spec, ws, (160, 160), estimate.AlignParams(group=3))
    assert grouped.shifts.shape == (12, 2)
    assert rms_error(-grouped.shifts, drift) < 0.5  # 4 groups, interpolated to 12 frames


def test_blank_frames_do_not_move():
    blank = torch.zeros(4, 32, 32)
    res = estimate.align(estimate.prepare(blank), (32, 32), (32, 32), estimate.AlignParams())
    assert np.all(res.shifts == 0) and res.converged


def test_working_shape_follows_the_bfactor():
    # weights above 1e-4 kept (1572 = 2^2 x 3 x 131), rounded up to an FFT-friendly 1600 = 2^6 x 5^2
    assert estimate.working_shape((4096, 4096), 500) == (1600, 1600)
    assert estimate.working_shape((1024, 1024), 500) == (400, 400)  # not 394 = 2 x 197 (a prime factor)
    assert estimate.working_shape((4096, 4096), 10) == (2048, 2048)  # capped at 2048
    assert estimate.working_shape((100, 120), 1) == (100, 120)
