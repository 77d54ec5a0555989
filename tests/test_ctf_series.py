"""ctffit.series: the series-level CTF decisions (one gradient sign, one defocus path, one astigmatism) and the
refits they call for, made from the spectra each tilt's first fit kept (no second reading of the image).
"""

from __future__ import annotations

import numpy as np
import pytest

from tiltflow.ctffit import fit_defocus
from tiltflow.ctffit.fit import refit
from tiltflow.ctffit.model import Optics, angle_difference, to_relion
from tiltflow.ctffit.series import (
    SeriesModel,
    apply_series_model,
    series_astigmatism,
    series_model,
    weighted_median,
)
from tiltflow.errors import TiltflowError
from tiltflow.testing.ctf_micrograph import synthetic_micrograph

OPTICS = Optics(300.0, 2.7, 0.1)
PX = 2.5


def first_fit(u, v, angle, seed, centre=30000.0, tilt_angle=0.0, gradient_sign=1, snr=0.2):
    img = synthetic_micrograph((512, 512), PX, u, v, angle, amplitude_contrast=0.1, snr=snr, seed=seed,
                               tilt_angle=tilt_angle, tilt_axis=85.0, gradient_sign=gradient_sign)
    return fit_defocus(img, PX, search_centre=centre, search_range=8000, optics=OPTICS, res_max=6.0, box=256,
                       tilt_angle=tilt_angle, tilt_axis=85.0)


def test_weighted_median_by_hand():
    x = np.array([3.0, 1.0, 2.0])
    assert weighted_median(x, np.ones(3)) == 2.0
    assert weighted_median(x, np.array([5.0, 1.0, 1.0])) == 3.0  # 3 carries more than half the weight
    assert weighted_median(x, np.array([1.0, 1.0, 2.0])) == 2.0  # cumulative 1, 3 of 4: 2 reaches half


class _Fit:
    """What series_astigmatism reads of a fit."""

    def __init__(self, u, v, angle, resolution):
        self.defocus_u, self.defocus_v, self.defocus_angle, self.resolution = u, v, angle, resolution


def test_series_astigmatism_is_the_median_of_the_best_tilts():
    # astigmatism vectors (ax, ay) of 400 A at 30 deg: to_relion(mean, ax, ay) with ax = 200 cos 60, ay = 200 sin 60
    u, v, a = to_relion(30000.0, 200 * np.cos(np.radians(60)), 200 * np.sin(np.radians(60)))
    fits = [_Fit(u, v, a, 8.0), _Fit(u, v, a, 9.0), _Fit(u, v, a, 10.0),
            _Fit(31000.0, 29000.0, -70.0, 11.0),  # one spurious fit among the good ones: outvoted
            _Fit(35000.0, 25000.0, 0.0, 30.0)]  # beyond 1.5x the best resolution: not used at all
    astig, angle = series_astigmatism(fits)
    assert astig == pytest.approx(400.0, abs=1.0) and angle_difference(angle, 30.0) < 0.5
    assert series_astigmatism(fits[:2]) is None  # fewer than three fitted tilts
    assert series_astigmatism([_Fit(u, v, a, float("inf"))] * 5) is None  # no tilt with a fit resolution


def test_refit_from_kept_spectra_fixes_what_the_series_decided():
    truth = (30500.0, 29500.0, 40.0)  # 1000 A astigmatism at 40 deg
    f = first_fit(*truth, seed=11)
    assert f.searches and f.settings is not None
    again = refit(f, fixed_astigmatism=(1000.0, 40.0))
    assert again.astigmatism == pytest.approx(1000.0, abs=1e-3)
    assert angle_difference(again.defocus_angle, 40.0) < 1e-3
    assert again.defocus == pytest.approx(30000.0, abs=150)  # the truth's mean, found again from the kept spectra
    assert again.spectrum is f.spectrum  # no new spectrum: the first pass's is reused
    imposed = refit(f, fixed_defocus=33000.0)
    assert imposed.defocus == pytest.approx(33000.0, abs=1.0) and imposed.defocus_1d == 33000.0
    assert f.defocus == pytest.approx(30000.0, abs=150)  # the first fit is left as it was


def test_refit_takes_the_series_sign_of_a_tilted_image():
    f = first_fit(30250.0, 29750.0, -20.0, seed=3, tilt_angle=50.0, gradient_sign=-1, centre=28000.0)
    assert set(f.searches) == {1, -1} and f.gradient_sign == -1
    other = refit(f, gradient_sign=1)
    assert other.gradient_sign == 1 and other.spectrum is f.searches[1].flat
    assert refit(f).gradient_sign == -1  # no series sign: the better one, as the first fit chose


def test_refit_needs_a_fit_with_searches():
    f = first_fit(30000.0, 30000.0, 0.0, seed=5)
    f.searches = {}
    with pytest.raises(TiltflowError, match="kept no 1-D search"):
        refit(f)


def test_apply_series_model_refits_only_what_it_changes():
    fits = [first_fit(30000.0 + 200 * i, 29600.0 + 200 * i, 25.0, seed=20 + i) for i in range(3)]
    own = [f.defocus for f in fits]
    keep = apply_series_model(fits, SeriesModel(0, 0.0, np.array(own), None), agree=300.0)
    assert [d.refitted for d in keep] == [False] * 3 and all(d.fit is f for d, f in zip(keep, fits, strict=True))

    astig = apply_series_model(fits, SeriesModel(0, 0.0, np.array(own), (400.0, 25.0)), agree=300.0)
    assert all(d.refitted and not d.imposed for d in astig)
    assert all(d.fit.astigmatism == pytest.approx(400.0, abs=1e-3) for d in astig)

    path = np.array([own[0], own[1] + 2000.0, own[2]])  # the series says tilt 2 is 200 nm further
    moved = apply_series_model(fits, SeriesModel(0, 0.0, path, None), agree=300.0)
    # its rings are clear (CC 0.28 at its own defocus, 0.07-0.09 at 200 nm more): a focusing error, kept
    assert [d.imposed for d in moved] == [False, False, False]
    assert moved[1].fit.defocus == pytest.approx(own[1], abs=150.0) and moved[0].fit is fits[0]


def test_a_weak_tilts_noise_peak_gives_way_to_the_path():
    """A tilt at SNR 0.005 peaks 0.45 um from its truth (CC 0.026) and scores 0.018 there: the path's defocus wins."""
    weak = first_fit(30400.0, 30000.0, 25.0, seed=21, snr=0.005)
    assert abs(weak.defocus - 30200.0) > 3000.0  # the premise: on its own it is wrong
    fits = [first_fit(30000.0 + 200 * i, 29600.0 + 200 * i, 25.0, seed=20 + i) for i in range(2)] + [weak]
    path = np.array([fits[0].defocus, fits[1].defocus, 30200.0])
    out = apply_series_model(fits, SeriesModel(0, 0.0, path, None), agree=300.0, workers=2)
    assert [d.imposed for d in out] == [False, False, True]
    assert out[2].fit.defocus == pytest.approx(30200.0, abs=1.0)


def test_series_model_of_consistent_tilts():
    fits = [first_fit(30200.0, 29800.0, 25.0, seed=30 + i) for i in range(4)]
    m = series_model(fits, [30000.0] * 4, prior_sd=500.0, one_astigmatism=True)
    assert m.gradient_sign == 0 and len(m.path) == 4  # untilted: no gradient tested
    assert np.all(np.abs(m.path - 30000.0) < 300.0)
    assert m.astigmatism is not None and m.astigmatism[0] == pytest.approx(400.0, abs=150.0)
    assert series_model(fits, [30000.0] * 4, prior_sd=0.0, one_astigmatism=False).astigmatism is None
