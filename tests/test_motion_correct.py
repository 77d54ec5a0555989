"""motion.correct / apply / local: one movie from frames to sums, on synthetic movies with known motion."""

from __future__ import annotations

import mrcfile
import numpy as np
import pytest
import torch

from builders import drift_path, frames, rms_error, specimen, write_movie
from tiltflow.errors import TiltflowError
from tiltflow.io.movies import open_movie
from tiltflow.motion import apply, doseweight, fourier, local
from tiltflow.motion.correct import Exposure, MotionSettings, correct_movie


@pytest.fixture(scope="module")
def movie_file(tmp_path_factory):
    rng = np.random.default_rng(7)
    drift = drift_path(10, rng)
    data = frames((160, 192), drift, counts=4.0, seed=7)
    path = write_movie(tmp_path_factory.mktemp("m") / "m.mrc", data, 1.5)
    return path, drift, data


def test_correct_movie_recovers_the_drift_and_sums(movie_file):
    path, drift, data = movie_file
    with open_movie(path) as mv:
        res = correct_movie(mv, pixel_size=1.5, settings=MotionSettings(bin_factor=2))
    assert rms_error(res.trajectory.drift(), drift) < 0.15
    assert res.trajectory.first_frame == 1 and np.all(res.trajectory.shifts[0] == 0)
    assert res.pixel_size == 3.0 and res.sums.image.shape == (80, 96)
    np.testing.assert_allclose(res.sums.even + res.sums.odd, res.sums.image, atol=1e-3)
    # the sum is a sum: its mean is the total counts per (binned, mean-preserving) pixel
    assert res.sums.image.mean() == pytest.approx(data.sum(axis=0).mean(), rel=1e-4)
    assert res.spectrum.image.shape == (512, 512)
    # alignment restores the specimen's mid-frequency power that the drift blurred away in the plain sum
    aligned = correct_movie(open_movie(path), pixel_size=1.5).sums.image
    assert band_power(aligned, 0.08, 0.2) > 2 * band_power(data.sum(axis=0), 0.08, 0.2)


def band_power(img: np.ndarray, lo: float, hi: float) -> float:
    """Mean power of ``img`` between ``lo`` and ``hi`` cycles per pixel."""
    power = np.abs(np.fft.rfft2(img - img.mean())) ** 2
    f = np.hypot(np.fft.fftfreq(img.shape[0])[:, None], np.fft.rfftfreq(img.shape[1])[None, :])
    return float(power[(f > lo) & (f < hi)].mean())


def test_throw_trunc_and_dose_weighting(movie_file):
    path, drift, _ = movie_file
    with open_movie(path) as mv:
        res = correct_movie(mv, pixel_size=1.5, settings=MotionSettings(throw=2, trunc=1, even_odd=False),
                            exposure=Exposure(dose_per_frame=0.5, pre_exposure=10.0))
    t = res.trajectory
    assert t.first_frame == 3 and list(np.flatnonzero(t.used)) == list(range(2, 9))
    assert rms_error(t.drift()[2:9], drift[2:9]) < 0.2
    assert res.sums.even is None and res.sums.odd is None
    # the weighted sum keeps the plain sum's lowest frequencies (and scale) but is a different image
    dw = torch.fft.rfft2(torch.as_tensor(res.sums.image))
    plain = res.sums.plain_spectrum
    assert abs(complex(dw[0, 0]) - complex(plain[0, 0])) < 1e-3 * abs(complex(plain[0, 0]))
    assert abs(complex(dw[1, 1]) - complex(plain[1, 1])) < 0.02 * abs(complex(plain[1, 1]))
    assert float((dw - plain).abs().mean()) > 0.05 * float(plain.abs().mean())


def test_frame_summer_weights_by_movie_frame_exposure():
    """Frames are filtered with the exposure of their place in the movie (dropped frames count)."""
    rng = np.random.default_rng(0)
    shape = (32, 40)
    specs = [torch.fft.rfft2(torch.as_tensor(rng.standard_normal(shape), dtype=torch.float32)) for _ in range(2)]
    exposures = doseweight.frame_exposures(5, 2.0, 4.0)  # movie frames 0..4, frames 3 and 4 summed
    summer = apply.FrameSummer(shape, shape, 1.2, exposures=exposures, halves=True)
    summer.add(specs[0], 3, (0.0, 0.0), 0.0)
    summer.add(specs[1], 4, (0.0, 0.0), 1.0)
    out = summer.result()
    fy, fx = fourier.freqs(shape)
    k = torch.sqrt(fx**2 + fy**2) / 1.2
    w = [doseweight.frame_filter(k, 10.0, 12.0), doseweight.frame_filter(k, 12.0, 14.0)]
    expect = (w[0] * specs[0] + w[1] * specs[1]) * torch.sqrt(2 / (w[0] ** 2 + w[1] ** 2))
    np.testing.assert_allclose(out.image, torch.fft.irfft2(expect, s=shape).numpy(), atol=2e-4)
    odd = torch.fft.irfft2(specs[0] * w[0] * torch.sqrt(1 / w[0] ** 2), s=shape).numpy()
    np.testing.assert_allclose(out.odd, odd, atol=2e-4)


@pytest.mark.filterwarnings("ignore:Data array contains NaN")
def test_bad_input_is_named(tmp_path, movie_file):
    path, _, data = movie_file
    with open_movie(path) as mv:
        with pytest.raises(TiltflowError, match=r"tilt 4: movie frames are 192x160 but the gain reference is 160x192"):
            correct_movie(mv, pixel_size=1.5, gain=np.ones((192, 160), np.float32), label="tilt 4")
        with pytest.raises(TiltflowError, match="at least 2 are needed"):
            correct_movie(mv, pixel_size=1.5, settings=MotionSettings(throw=5, trunc=4))
    bad = data.copy()
    bad[3, 10, 10] = np.nan
    with open_movie(write_movie(tmp_path / "bad.mrc", bad)) as mv:
        with pytest.raises(TiltflowError, match=r"tilt 2: frame 4 has NaN"):
            correct_movie(mv, pixel_size=1.5, label="tilt 2")


def test_gain_and_hot_pixels(tmp_path):
    rng = np.random.default_rng(3)
    drift = drift_path(6, rng)
    counts = frames((96, 96), drift, counts=20.0, seed=3)
    gain = rng.uniform(0.7, 1.4, (96, 96)).astype(np.float32)
    raw = counts / gain
    raw[:, 40, 50] = 5000.0  # a hot pixel in every frame: a static pattern that would pull towards 0
    raw[:, 70, 20] = 0.0  # a dead pixel, listed in the gain step's defect map
    defects = np.zeros((96, 96), np.int8)
    defects[70, 20] = 1
    with open_movie(write_movie(tmp_path / "g.mrc", raw)) as mv:
        res = correct_movie(mv, pixel_size=1.0, gain=gain, defects=defects)
        assert res.hot_pixels == 2
        assert rms_error(res.trajectory.drift(), drift) < 0.15
        with pytest.raises(TiltflowError, match="defect map is 48x48"):
            correct_movie(mv, pixel_size=1.0, defects=np.zeros((48, 48)))


def test_local_model_fit_and_field():
    rng = np.random.default_rng(5)
    coeffs = rng.normal(0, 0.3, 36)
    gx, gy = np.meshgrid(np.linspace(10, 290, 4), np.linspace(5, 190, 4))
    z = np.repeat(np.arange(6), 16)
    px = np.tile(gx.ravel(), 6)
    py = np.tile(gy.ravel(), 6)
    sx, sy = local.evaluate(coeffs, 0, 0, 0)
    assert sx == 0 and sy == 0  # RELION's model is zero at the first frame
    a = local.design(z, px / 300 - 0.5, py / 200 - 0.5)
    obs = np.column_stack([z, px, py, a @ coeffs[:18], a @ coeffs[18:]])
    fitted, rss, k = local.fit(obs, (200, 300))
    np.testing.assert_allclose(fitted, coeffs, atol=1e-8)
    assert rss < 1e-12 and k == 18
    # with a free offset per patch (trajectories known up to a constant) the field is still found
    ids = np.tile(np.arange(16), 6)
    offsets = obs.copy()
    offsets[:, 3:5] += np.random.default_rng(1).normal(0, 2, (16, 2))[ids]
    np.testing.assert_allclose(local.fit(offsets, (200, 300), patch_ids=ids)[0], coeffs, atol=1e-8)
    # and model selection prefers "none" for pure noise, "quadratic" for this field
    noise = np.column_stack([ids, obs[:, :3], np.random.default_rng(2).normal(0, 0.2, (96, 2))])
    assert local.select(noise, (200, 300))[0] == "none"
    assert local.select(np.column_stack([ids, offsets]), (200, 300))[0] == "quadratic"
    f = local.field(coeffs, 3.0, (200, 300))
    ex, ey = local.evaluate(coeffs, 3.0, np.array([120 / 300 - 0.5]), np.array([50 / 200 - 0.5]))
    assert float(f[50, 120, 0]) == pytest.approx(ex[0], abs=1e-4)
    assert float(f[50, 120, 1]) == pytest.approx(ey[0], abs=1e-4)


def test_resample_applies_a_constant_field_like_a_shift():
    img = torch.as_tensor(specimen((64, 64), np.random.default_rng(2), feature_px=(4.0, 30.0)), dtype=torch.float32)
    field = torch.zeros(64, 64, 2)
    field[..., 0] = 1.0
    out = local.resample(img, field)
    np.testing.assert_allclose(out[:, 2:-2].numpy(), np.roll(img.numpy(), 1, axis=1)[:, 2:-2], atol=1e-4)


def test_local_motion_is_estimated_from_patches(tmp_path):
    """A stretch that grows with time (x moves by +0.9 z x_n pixels) is recovered as RELION's x*z term."""
    h = w = 256
    n = 6
    img = specimen((h, w), np.random.default_rng(9), feature_px=(2.5, 30.0))
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    movie = []
    for z in range(n):
        dx = 0.9 * z * (xs / w - 0.5)  # content displacement
        grid = torch.stack([torch.as_tensor((2 * (xs - dx) + 1) / w - 1), torch.as_tensor((2 * ys + 1) / h - 1)], -1)
        moved = torch.nn.functional.grid_sample(torch.as_tensor(img, dtype=torch.float32)[None, None], grid[None],
                                                mode="bicubic", padding_mode="reflection", align_corners=False)
        movie.append(50.0 * (1 + 0.3 * moved[0, 0].numpy()))
    path = tmp_path / "local.mrc"
    with mrcfile.new(path) as m:
        m.set_data(np.array(movie, np.float32))
    with open_movie(path) as mv:
        res = correct_movie(mv, pixel_size=1.0, settings=MotionSettings(patches=(3, 3), bfactor_local=150))
    model = res.local_model
    assert model is not None and model.n_patches >= 6 and model.rmsd < 0.2, res.report
    # correction shift = -displacement: x shift at the right edge after 5 frames is about -0.9 * 5 * 0.5
    sx, _ = local.evaluate(res.trajectory.local_model, 5.0, np.array([0.45]), np.array([0.0]))
    assert sx[0] == pytest.approx(-0.9 * 5 * 0.45, abs=0.35)


@pytest.mark.parametrize("kept", [4, 1, 0])
def test_hot_and_defect_pixels_take_the_mean_of_the_frames_good_pixels(tmp_path, kept):
    """RELION's rule: a pixel above mean + 6 sd of the unaligned sum, and every defect-map pixel, is replaced in
    each frame by that frame's mean over the other pixels; kept or re-read frames (all, some, none) are the same.
    """
    from tiltflow.motion.correct import _FrameSource, cache_bytes

    rng = np.random.default_rng(3)
    data = rng.poisson(2.0, (4, 64, 80)).astype(np.float32)
    data[:, 10, 20] = 500.0  # hot in every frame
    defects = np.zeros((64, 80), np.uint8)
    defects[40, 5:8] = 1
    path = write_movie(tmp_path / "hot.mrc", data, 1.0)
    bad = defects.astype(bool)
    bad[10, 20] = True
    with open_movie(path) as mv:
        budget = (kept + 0.5) * cache_bytes((64, 80), 1) / 1e9
        src = _FrameSource(mv, range(4), None, torch.device("cpu"), MotionSettings(memory_gb=budget), "m", defects)
        assert src.kept == kept and src.n_hot == 4
        for k in range(4):
            fixed = torch.fft.irfft2(src.spectrum(k), s=(64, 80)).numpy()
            expect = data[k].copy()
            expect[bad] = data[k][~bad].mean(dtype=np.float64)
            np.testing.assert_allclose(fixed, expect, atol=1e-3)


@pytest.mark.filterwarnings("ignore:Data array contains NaN")
def test_a_frame_with_nan_is_refused_by_its_number(tmp_path):
    data = np.random.default_rng(4).poisson(2.0, (5, 48, 64)).astype(np.float32)
    data[2, 7, 9] = np.nan
    path = write_movie(tmp_path / "nan.mrc", data, 1.0)
    with open_movie(path) as mv, pytest.raises(TiltflowError, match=r"tilt 3: frame 3 has NaN or infinite"):
        correct_movie(mv, pixel_size=1.0, label="tilt 3")
