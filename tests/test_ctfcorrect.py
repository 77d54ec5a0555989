"""CTF and exposure correction of tilt images (tomo.ctfcorrect) against independent derivations.

The aberrated images are built here point by point: each Gaussian blob gets the CTF of its own defocus
(RELION's depth model written out for a y-axis tilt: ``D - hand * tan(tilt) * x * pixel``), summed in
Fourier space, so the space-variant forward model does not come from the code under test. IMOD's formulas
(ctfplotter/ctfphaseflip.cpp) are written out here too.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tiltflow.alignment import TiltSeriesAlignment
from tiltflow.ctfmodel import electron_wavelength
from tiltflow.tomo.ctfcorrect import (
    CtfCorrection,
    TiltCorrector,
    TiltOptics,
    defocus_planes,
    exposure_weight,
    half_weight_resolution,
)
from tiltflow.tomo.projector import ProjectionSetup

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PX = 5.0  # A
N = 384  # a 1920 A field: at 60 deg the strips' defocus spans +-1400 A
AC = 0.1


def _blob_spectra(n, seed=1, count=300, sigma=0.8):
    """Positions (x, y from the centre, px) and per-blob rfft2 spectra of narrow Gaussian blobs."""
    rng = np.random.default_rng(seed)
    pos = rng.uniform(-0.42 * n, 0.42 * n, (count, 2))
    amp = rng.uniform(0.5, 1.5, count)
    fy = np.fft.fftfreq(n)[:, None]
    fx = np.fft.rfftfreq(n)[None, :]
    env = np.exp(-2 * math.pi**2 * sigma**2 * (fx**2 + fy**2))
    return pos, amp, env, fx, fy


def _ctf(fx, fy, defocus_u, defocus_v, angle_deg, voltage=300.0, cs=2.7):
    """The CTF written out as IMOD's ctfphaseflip does (astigmatism added as RELION/CTFFIND define it)."""
    lam = electron_wavelength(voltage)
    kx, ky = fx / PX, fy / PX
    k2 = kx**2 + ky**2
    az = np.arctan2(ky, kx)
    df = 0.5 * (defocus_u + defocus_v) + 0.5 * (defocus_u - defocus_v) * np.cos(2 * (az - np.deg2rad(angle_deg)))
    chi = math.pi * lam * df * k2 - 0.5 * math.pi * cs * 1e7 * lam**3 * k2**2
    return -math.sqrt(1 - AC**2) * np.sin(chi) - AC * np.cos(chi)  # ctfphaseflip.cpp


def _tilted_image(tilt, hand, d_u, d_v, angle, weight=None):
    """An image of blobs on the specimen mid-plane, each with its own defocus; also the un-aberrated one."""
    pos, amp, env, fx, fy = _blob_spectra(N)
    c = N // 2
    spec = np.zeros(env.shape, complex)
    truth = np.zeros(env.shape, complex)
    for (x, y), a in zip(pos, amp, strict=True):
        # RELION: D + hand * pixel * depth, depth = -x * tan(tilt) for a y-axis tilt (z = 0 plane)
        off = -hand * math.tan(math.radians(tilt)) * x * PX
        phase = np.exp(-2j * math.pi * (fx * (x + c) + fy * (y + c)))
        ctf = _ctf(fx, fy, d_u + off, d_v + off, angle)
        f = weight(ctf) if weight is not None else ctf
        spec += a * env * phase * f
        truth += a * env * phase
    return np.fft.irfft2(spec, s=(N, N)), np.fft.irfft2(truth, s=(N, N))


def _setup(tilt, z_rot=0.0):
    aln = TiltSeriesAlignment(y_tilt=[tilt], z_rot=[z_rot], shifts_px=[[0.0, 0.0]], pixel_size=PX)
    return ProjectionSetup(aln, (16, N, N), (N, N))


def _optics(d_u, d_v, angle, hand, pre=0.0):
    return TiltOptics(np.array([d_u]), np.array([d_v]), np.array([angle]), np.array([0.0]), np.array([pre]),
                      voltage=300.0, cs=2.7, amplitude_contrast=AC, hand=hand)


def _band(img, lo, hi):
    f = np.fft.rfft2(img)
    k = np.sqrt(np.fft.fftfreq(img.shape[0])[:, None] ** 2 + np.fft.rfftfreq(img.shape[1])[None, :] ** 2) / PX
    return np.fft.irfft2(f * ((k >= lo) & (k <= hi)), s=img.shape)


def _corr(a, b, outer=False):
    """Correlation away from the borders; ``outer``: only the columns far from the tilt axis."""
    m = N // 8  # away from the borders (padding, blobs leaving the field)
    cols = list(range(m, N // 4)) + list(range(3 * N // 4, N - m)) if outer else slice(m, N - m)
    a, b = a[m:-m, cols].ravel(), b[m:-m, cols].ravel()
    a, b = a - a.mean(), b - b.mean()
    return float(a @ b / math.sqrt((a @ a) * (b @ b)))


def _correct(img, tilt, hand, d_u, d_v, angle, mode):
    setup = _setup(tilt)
    corr = CtfCorrection(mode=mode, dose_weighting=False, wiener_snr=100.0, wiener_falloff=0.0)
    c = TiltCorrector((1, N, N), setup, _optics(d_u, d_v, angle, hand), corr, PX, torch.device("cpu"))
    return c.correct(torch.from_numpy(img[None].astype(np.float32)))[0].numpy().astype(float)


@pytest.mark.parametrize("hand", [1, -1])
def test_phase_flip_of_a_tilted_astigmatic_image_recovers_the_projection(hand):
    tilt, d_u, d_v, angle = 60.0, 32000.0, 29000.0, 30.0
    img, truth = _tilted_image(tilt, hand, d_u, d_v, angle)
    lo, hi = 1.0 / math.sqrt(electron_wavelength(300.0) * 38000.0), 0.45 / PX  # beyond every strip's 1st zero
    # what a perfect phase flip gives: every blob with -|CTF| of its own defocus
    ideal, _ = _tilted_image(tilt, hand, d_u, d_v, angle, weight=lambda c: -np.abs(c))
    flipped = _correct(img, tilt, hand, d_u, d_v, angle, "phaseflip")
    band_truth = _band(truth, lo, hi)
    before = _corr(_band(-img, lo, hi), band_truth)
    after = _corr(_band(-flipped, lo, hi), band_truth)
    # flipping keeps |CTF| as amplitude, which caps the correlation with the projection itself near
    # E|sin| / sqrt(E sin^2) = 0.90 (the 0.9 is above what any phase flip reaches here): the cap is
    # the perfect flip's own correlation, 0.872 for these blobs and this band; the strips' blending costs
    # 0.004 of it (0.871 at 100 A defocus steps instead of the automatic 1270 A), so neither the strip
    # width, the band nor the defocus interpolation is behind the 0.87
    cap = _corr(_band(-ideal, lo, hi), band_truth)
    assert abs(before) < 0.5 and after > cap - 0.01 and cap < 0.9, (before, after, cap)  # 0.01 -> 0.868, cap 0.872
    assert _corr(_band(flipped, lo, hi), _band(ideal, lo, hi)) > 0.99
    # the Wiener-like filter also restores the amplitudes: the un-aberrated projection itself
    wiener = _correct(img, tilt, hand, d_u, d_v, angle, "wiener")
    assert _corr(_band(-wiener, lo, hi), band_truth) > 0.9  # measured 0.955 (SNR 100)
    # far from the axis the strips' own defocus matters: one defocus for the image is worse, the wrong
    # hand (gradient reversed) worse still
    uniform = _correct(img, 0.0, hand, d_u, d_v, angle, "phaseflip")
    wrong = _correct(img, tilt, -hand, d_u, d_v, angle, "phaseflip")
    r = [_corr(_band(-x, lo, hi), band_truth, outer=True) for x in (flipped, uniform, wrong)]
    assert r[0] > r[1] + 0.005 and r[1] > r[2] + 0.02, r  # measured 0.869, 0.857, 0.808


def test_uncorrected_low_band_is_unchanged_in_sign():
    """Below the first zero the flip is +1 (IMOD: ctf < 0 -> sign 1): contrast is not inverted."""
    img, truth = _tilted_image(0.0, 1, 30000.0, 30000.0, 0.0)
    first_zero = 1.0 / math.sqrt(electron_wavelength(300.0) * 30000.0)
    flipped = _correct(img, 0.0, 1, 30000.0, 30000.0, 0.0, "phaseflip")
    lo_band = (0.0, 0.7 * first_zero)
    assert np.allclose(_band(flipped, *lo_band)[20:-20, 20:-20], _band(img, *lo_band)[20:-20, 20:-20],
                       atol=1e-3 * np.abs(img).max())


def test_defocus_gradient_matches_imod_strip_formula():
    """IMOD: stripDefocus = defocus - (nx/2 - x) tan(angle) pixel, tilt axis along y (ctfphaseflip.cpp).

    In RELION's model with rlnTomoHand = -1 that is the same gradient; +1 reverses it. A rotated tilt axis
    rotates the gradient with it (perpendicular to the axis), and depth adds 1/cos(tilt) per voxel.
    """
    for tilt in (-45.0, 20.0, 60.0):
        grad, per_z, origin = defocus_planes(_setup(tilt), PX, hand=-1)
        np.testing.assert_allclose(grad[0], [math.tan(math.radians(tilt)) * PX, 0.0], atol=1e-9)
        np.testing.assert_allclose(per_z[0], -PX / math.cos(math.radians(tilt)), rtol=1e-9)
        np.testing.assert_allclose(origin[0], [N // 2, N // 2])
        grad_r, _, _ = defocus_planes(_setup(tilt, z_rot=85.0), PX, hand=1)
        axis = np.array([-math.sin(math.radians(85.0)), math.cos(math.radians(85.0))])  # image of the y axis
        assert abs(grad_r[0] @ axis) < 1e-9
        assert np.linalg.norm(grad_r[0]) == pytest.approx(abs(math.tan(math.radians(tilt))) * PX)


def test_flip_signs_equal_imod_formula():
    c = TiltCorrector((1, N, N), _setup(0.0), _optics(25000.0, 25000.0, 0.0, 1), CtfCorrection(), PX, "cpu")
    ours = c._filters(0, [0.0])[0].numpy()
    ph, pw = c.padded
    fy = np.fft.fftfreq(ph)[:, None] * np.ones((1, pw // 2 + 1))
    fx = np.fft.rfftfreq(pw)[None, :] * np.ones((ph, 1))
    # IMOD's wavelength: 12.3 / sqrt(V + V^2 * 1e-6) A (V in volts)
    imod = np.where(_ctf(fx, fy, 25000.0, 25000.0, 0.0) < 0, 1.0, -1.0)
    agree = (ours == imod).mean()
    assert agree > 0.995, agree  # differences only next to zeros (wavelength rounding)


def test_exposure_weight_is_relions():
    """RELION Damage::getWeight: exp(-0.5 dose / (0.245 k^-1.665 + 2.81)), evaluated here by hand."""
    for k, dose in ((0.1, 30.0), (0.05, 60.0), (0.02, 3.0)):
        expect = math.exp(-0.5 * dose / (0.245 * k ** -1.665 + 2.81))
        assert exposure_weight(k, dose) == pytest.approx(expect, rel=1e-12)
    assert exposure_weight(0.0, 100.0) == pytest.approx(1.0)
    r = half_weight_resolution(60.0)
    assert exposure_weight(1.0 / r, 60.0) == pytest.approx(0.5, rel=1e-9)
    assert half_weight_resolution(0.0) == 0.0 and half_weight_resolution(3.0) == 0.0  # never below 0.5


def test_dose_weighting_damps_high_frequencies_of_late_tilts_only():
    img, _ = _tilted_image(0.0, 1, 30000.0, 30000.0, 0.0)
    x = torch.from_numpy(np.stack([img, img]).astype(np.float32))
    optics = TiltOptics(np.full(2, 3e4), np.full(2, 3e4), np.zeros(2), np.zeros(2), np.array([0.0, 80.0]), hand=1)
    aln = TiltSeriesAlignment(y_tilt=[0.0, 0.0], z_rot=[0.0, 0.0], shifts_px=np.zeros((2, 2)), pixel_size=PX)
    c = TiltCorrector(x.shape, ProjectionSetup(aln, (16, N, N), (N, N)), optics,
                      CtfCorrection(mode="none"), PX, "cpu")
    out = c.correct(x).numpy().astype(float)
    assert np.allclose(out[0][20:-20, 20:-20], img[20:-20, 20:-20], atol=1e-4 * np.abs(img).max())
    hi = (0.07, 0.5 / PX)
    ratio = _band(out[1], *hi).std() / _band(img, *hi).std()
    assert ratio < 0.25, ratio  # at 80 e/A^2 the weight is 0.18 at 1/14 A, 0.13 at 1/12.5 A, 0.09 at 1/10 A


def test_depth_correction_is_the_plane_defocus_and_slabs_cover_the_volume():
    """Correcting plane z of a tilt = correcting z = 0 with the defocus moved by hand * pixel * z / cos(tilt)."""
    from tiltflow.tomo.ctfcorrect import depth_slabs

    img, _ = _tilted_image(40.0, 1, 30000.0, 28000.0, 10.0)
    x = torch.from_numpy(img[None].astype(np.float32))
    setup, z = _setup(40.0), 30.0
    corr = CtfCorrection(dose_weighting=False)
    deep = TiltCorrector(x.shape, setup, _optics(30000.0, 28000.0, 10.0, 1), corr, PX, "cpu").correct(x, z)
    dz = PX * z / math.cos(math.radians(40.0))
    moved = TiltCorrector(x.shape, setup, _optics(30000.0 + dz, 28000.0 + dz, 10.0, 1), corr, PX, "cpu")
    np.testing.assert_allclose(deep.numpy(), moved.correct(x).numpy(), atol=1e-4 * float(x.abs().max()))
    c = TiltCorrector(x.shape, setup, _optics(30000.0, 28000.0, 10.0, 1), CtfCorrection(defocus_step=500.0),
                      PX, "cpu")
    slabs = list(depth_slabs(c, 200, 100.0))
    assert slabs[0][0] == 0 and slabs[-1][1] == 200 and all(a[1] == b[0] for a, b in zip(slabs[:-1], slabs[1:], strict=True))
    assert all((z1 - z0) * abs(c.per_z[0]) <= 500.0 + 1e-9 for z0, z1, _ in slabs) and len(slabs) == 3
    assert slabs[0][2] == pytest.approx(0.5 * (slabs[0][1] - 1) - 100.0)
