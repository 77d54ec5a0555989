"""simulate.compare's Fourier shell correlation against the phantom (the CTF correction's yardstick)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tiltflow.simulate import compare as C
from tiltflow.simulate.truth import SeriesTruth


def _phantom(seed=0, shape=(24, 48, 48)):
    rng = np.random.default_rng(seed)
    return rng.normal(size=shape)


def _hard_lowpass(v, px, res):
    f = np.fft.rfftn(v)
    k = np.sqrt(sum(np.meshgrid(*[np.fft.fftfreq(n, px) ** 2 for n in v.shape[:-1]],
                                np.fft.rfftfreq(v.shape[-1], px) ** 2, indexing="ij")))
    return np.fft.irfftn(f * (k <= 1 / res), s=v.shape, axes=(0, 1, 2))


def test_fsc_of_a_volume_with_itself_and_with_its_lowpass():
    v = _phantom()
    k, fsc = C.fourier_shell_correlation(v, v, 5.0)
    assert np.allclose(fsc, 1.0) and k[-1] < 0.1 <= k[-1] + 1 / (5.0 * 24)  # shells up to Nyquist 1/10 A
    assert C.resolution_at(k, fsc, 0.143) == pytest.approx(1 / k[-1])
    # white noise kept to 25 A: the correlation is 1 below, 0 above (within a shell)
    low = _hard_lowpass(v, 5.0, 25.0)
    k, fsc = C.fourier_shell_correlation(low, v, 5.0)
    r = C.resolution_at(k, fsc, 0.5)
    assert 23.0 < r < 28.0, r
    assert (fsc[k < 1 / 27] > 0.95).all() and (np.abs(fsc[k > 1 / 23]) < 0.2).all()
    assert math.isnan(C.resolution_at(k, -np.ones_like(fsc), 0.5))


def test_tomogram_shells_undo_the_origin_shift_and_contrast():
    ph = _hard_lowpass(_phantom(1), 8.0, 16.1)  # already within the tomogram's Nyquist
    series = SeriesTruth(name="TS", mdoc="", tilt_axis=0.0, hand=1, thickness_nm=1.0, phantom="",
                         phantom_pixel_size=8, tomogram_size_xyz=[48, 48, 24], dose_per_tilt=1, scheme="", tilts=[])
    tomo = -np.roll(ph, (1, -2, 2), axis=(0, 1, 2))
    s = C.tomogram_shells(tomo, 8.0, 1.0, (48, 48, 24), series, ph)
    assert s.resolution_0143 == pytest.approx(1 / s.frequency[-1]) and s.fsc[2:-2].min() > 0.8
    noisy = tomo + 3 * ph.std() * np.random.default_rng(5).normal(size=ph.shape)
    n = C.tomogram_shells(noisy, 8.0, 1.0, (48, 48, 24), series, ph)
    assert n.fsc[1:].mean() < 0.5 and n.fsc[1:].mean() > 0.0


def test_phantom_lowpass_to_a_coarser_nyquist():
    v = _phantom(2)
    low = C.lowpass_phantom(v, 4.0, 10.0)  # keeps 1/20 A of the 1/8 A
    k, fsc = C.fourier_shell_correlation(low, v, 4.0)
    assert (fsc[k < 0.045] > 0.95).all() and (np.abs(fsc[k > 0.055]) < 0.1).all()
    assert C.lowpass_phantom(v, 4.0, 4.0) is v
