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


def test_first_ctf_zero_is_where_the_written_out_ctf_first_vanishes():
    """Against the CTF written out here (IMOD ctfphaseflip's form), scanned on a fine grid."""
    lam = 12.2643 / math.sqrt(300e3 * (1 + 0.978466e-6 * 300e3))  # relativistic wavelength (A) at 300 kV
    for defocus in (30000.0, 50000.0, 80000.0):
        k = np.linspace(1e-4, 0.1, 200001)
        chi = math.pi * lam * defocus * k**2 - 0.5 * math.pi * 2.7e7 * lam**3 * k**4
        ctf = -math.sqrt(1 - 0.01) * np.sin(chi) - 0.1 * np.cos(chi)
        first = k[np.nonzero(np.sign(ctf[1:]) != np.sign(ctf[:-1]))[0][0]]
        assert C.first_zero_resolution(defocus, 300.0, 2.7, 0.1) == pytest.approx(1 / first, rel=1e-3)
    # 5 um: about 31 A; more defocus puts the zero at lower resolution
    assert 30.0 < C.first_zero_resolution(50000.0) < 32.0 < C.first_zero_resolution(80000.0)


def test_mean_fsc_between_two_resolutions():
    k = np.array([0.0, 0.01, 0.02, 0.03, 0.04])
    shells = C.ShellCorrelation(k, np.array([1.0, 0.9, 0.5, 0.1, -0.3]), 50.0, 33.0)
    assert C.mean_fsc_between(shells, 60.0, 40.0) == pytest.approx(0.5)  # 1/60 <= k <= 1/40: the 50 A shell
    assert C.mean_fsc_between(shells, 100.0, 25.0) == pytest.approx((0.9 + 0.5 + 0.1 - 0.3) / 4)
    assert math.isnan(C.mean_fsc_between(shells, 40.0, 35.0))  # no shell there


def test_the_soft_mask_keeps_low_resolution_agreement_out_of_the_high_shells():
    """Two volumes that share only content below 80 A (a hard low-pass), each with its own noise: their true
    FSC beyond 40 A is zero. Cut by a hard box inside the volume, the box edge spreads the low-resolution
    agreement into every shell; the raised-cosine box (what ``tomogram_shells`` uses) does not.
    """
    rng = np.random.default_rng(0)
    shape = (48, 64, 64)
    common = _hard_lowpass(rng.normal(size=shape), 8.0, 80.0)
    common /= common.std()
    a, b = common + 0.3 * rng.normal(size=shape), common + 0.3 * rng.normal(size=shape)
    inside = np.zeros(shape, bool)
    inside[8:40, 10:54, 10:54] = True

    def fsc(m):
        ta, tb = ((v - (v * m).sum() / m.sum()) * m for v in (a, b))
        return C.fourier_shell_correlation(ta, tb, 8.0)

    k, hard = fsc(inside.astype(float))
    _, soft = fsc(C.soft_box_mask(inside))
    assert hard[k > 1 / 40].mean() > 0.3  # the artefact the soft edge removes
    assert abs(soft[k > 1 / 40].mean()) < 0.05
    assert soft[k < 1 / 100].min() > 0.99  # the shared low resolution is kept
    m = C.soft_box_mask(inside)
    assert m[24, 32, 32] == 1.0 and m[0, 0, 0] == 0.0 and m[~inside].max() == 0.0
