"""The built-in CTF fit on synthetic micrographs with a known CTF (``tiltflow.testing.ctf_micrograph``)."""

from __future__ import annotations

import math

import pytest

from tiltflow.ctffit import fit_defocus
from tiltflow.ctffit.model import Optics, angle_difference
from tiltflow.errors import TiltflowError
from tiltflow.testing.ctf_micrograph import synthetic_micrograph

OPTICS = Optics(300.0, 2.7, 0.1)
PX = 2.5


def image(u, v, angle, **kw):
    kw.setdefault("snr", 0.1)
    return synthetic_micrograph((512, 512), PX, u, v, angle, amplitude_contrast=0.1, **kw)


def fit(img, centre, **kw):
    kw.setdefault("search_range", 15000)
    kw.setdefault("res_max", 6.0)
    kw.setdefault("box", 256)
    return fit_defocus(img, PX, search_centre=centre, optics=OPTICS, **kw)


def test_astigmatic_defocus_recovered():
    f = fit(image(32500, 31500, 40.0, seed=1, snr=0.2), 35000)
    assert f.defocus == pytest.approx(32000, abs=150)
    assert f.astigmatism == pytest.approx(1000, abs=200)
    assert angle_difference(f.defocus_angle, 40.0) < 10
    assert f.defocus_u >= f.defocus_v and -90 < f.defocus_angle <= 90
    assert f.refined_2d and f.gradient_sign == 0
    assert math.isfinite(f.resolution) and f.resolution < 12
    assert 0 < f.score < 1
    assert f.curve is not None and len(f.curve[0]) == len(f.curve[1])


def test_search_stays_in_its_window():
    """The truth (2 um) lies outside 3-5 um: the answer must stay inside the window searched."""
    f = fit(image(20000, 20000, 0.0, seed=2), 40000, search_range=10000, fit_astigmatism=False)
    assert 30000 - 1 <= f.defocus_1d <= 50000 + 1
    assert f.astigmatism == 0


def test_tilted_specimen_gradient_sign_and_defocus():
    img = image(30250, 29750, -20.0, seed=3, tilt_angle=50.0, tilt_axis=85.0, gradient_sign=-1)
    f = fit(img, 28000, tilt_angle=50.0, tilt_axis=85.0)
    assert f.gradient_sign == -1 and f.gradient_scores[-1] > f.gradient_scores[1]
    assert f.defocus == pytest.approx(30000, abs=300)
    plain = fit(img, 28000)  # no tilt correction: the rings smear and the fit is worse
    assert plain.score_1d < f.score_1d


def test_phase_shift_recovered():
    f = fit(image(8000, 8000, 0.0, seed=4, phase_shift=90.0), 10000, search_range=6000, fit_phase_shift=True,
            fit_astigmatism=False)
    assert angle_difference(f.phase_shift, 90.0) < 15
    assert f.defocus == pytest.approx(8000, abs=300)


def test_fit_resolution_follows_the_signal():
    sharp = fit(image(30000, 30000, 0.0, seed=5, bfactor=50, snr=0.2), 30000, fit_astigmatism=False)
    blurred = fit(image(30000, 30000, 0.0, seed=5, bfactor=800, snr=0.2), 30000, fit_astigmatism=False)
    assert sharp.resolution < blurred.resolution
    noise = fit(image(30000, 30000, 0.0, seed=6, snr=1e-4), 30000, fit_astigmatism=False)
    assert noise.resolution > 15 and noise.score < 0.05


def test_fixed_astigmatism_is_kept():
    f = fit(image(31000, 29000, 10.0, seed=7), 30000, fixed_astigmatism=(500.0, -45.0))
    assert f.astigmatism == pytest.approx(500.0, abs=1e-3)
    assert angle_difference(f.defocus_angle, -45.0) < 1e-3


def test_sub_regions_show_the_defocus_gradient():
    """The defocus-handedness check fits halves of a tilted image: their difference follows the gradient."""
    tilt, axis, sign = 45.0, 0.0, 1  # axis along y: the defocus changes along x
    img = synthetic_micrograph((512, 768), PX, 30000, 30000, 0.0, snr=0.2, amplitude_contrast=0.1, seed=8,
                               tilt_angle=tilt, tilt_axis=axis, gradient_sign=sign)
    left = fit_defocus(img[:, :256], PX, search_centre=30000, search_range=5000, optics=OPTICS, res_max=8,
                       fit_astigmatism=False)
    right = fit_defocus(img[:, -256:], PX, search_centre=30000, search_range=5000, optics=OPTICS, res_max=8,
                        fit_astigmatism=False)
    expected = sign * math.tan(math.radians(tilt)) * 512 * PX  # centres 512 px apart
    assert right.defocus - left.defocus == pytest.approx(expected, abs=250)


def test_bad_inputs():
    with pytest.raises(TiltflowError, match="finer than"):
        fit_defocus(image(30000, 30000, 0.0), PX, search_centre=30000, res_min=5, res_max=10)
    with pytest.raises(TiltflowError, match="too small"):
        fit_defocus(image(30000, 30000, 0.0)[:40, :40], PX, search_centre=30000)
    with pytest.raises(TiltflowError, match="pixel size"):
        fit_defocus(image(30000, 30000, 0.0), search_centre=30000)


def test_few_wide_rings_fit_without_bias():
    # a damaged, late tilt: only the first two or three rings survive (30-16 A); the spectrum's flattening
    # must not follow those wide rings, or it divides part of them away and pushes the defocus up
    errors = []
    for seed in range(3):
        d = 35000.0 + 300.0 * seed
        img = synthetic_micrograph((1024, 1024), 3.0, d + 250, d - 250, 30.0, amplitude_contrast=0.1, snr=0.08,
                                   bfactor=900, seed=seed)
        f = fit_defocus(img, 3.0, search_centre=40000, search_range=20000, optics=Optics(300, 2.7, 0.1),
                        res_min=30, res_max=16, fit_pixel_size=3.0, fixed_astigmatism=(500.0, 30.0))
        errors.append(f.defocus_1d - d)
    assert abs(sum(errors) / len(errors)) < 150  # was +250 A with a fall-off following the rings
    assert max(abs(e) for e in errors) < 400
