"""The detector model: exact Poisson counts, sensitivity and gain orientation, deterministic files."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tiltflow.io.gain import orient_gain
from tiltflow.simulate.detector import gain_file_array, movie_dtype, poisson_counts, sensitivity_map


@pytest.mark.parametrize("lam", [0.05, 0.8, 3.0, 11.0, 45.0])
def test_counts_follow_the_poisson_distribution(lam):
    rate = torch.full((200, 250), lam)
    counts = poisson_counts(rate, torch.Generator().manual_seed(1), np.dtype(np.uint16)).astype(np.int64)
    assert counts.shape == (200, 250)
    n = counts.size
    assert counts.mean() == pytest.approx(lam, abs=4 * math.sqrt(lam / n))
    assert counts.var() == pytest.approx(lam, rel=0.05)
    # chi-square against the Poisson pmf over the well-populated counts
    ks = np.arange(counts.max() + 1)
    pmf = np.exp(-lam + ks * math.log(lam) - np.array([math.lgamma(k + 1) for k in ks]))
    obs = np.bincount(counts.ravel(), minlength=len(ks))
    use = pmf * n > 20
    chi2 = (((obs[use] - n * pmf[use]) ** 2) / (n * pmf[use])).sum()
    assert chi2 < use.sum() + 6 * math.sqrt(2 * use.sum())


def test_counts_follow_a_varying_rate_and_are_reproducible():
    rate = torch.linspace(0, 8, 300 * 200).reshape(300, 200)
    a = poisson_counts(rate, torch.Generator().manual_seed(2), np.dtype(np.uint8))
    b = poisson_counts(rate, torch.Generator().manual_seed(2), np.dtype(np.uint8))
    assert a.dtype == np.uint8 and np.array_equal(a, b)
    rows = a.reshape(300, 200).mean(axis=1)
    want = rate.numpy().mean(axis=1)
    assert np.abs(rows - want).max() < 5 * math.sqrt(8 / 200)


def test_movie_dtype_fits_the_counts():
    assert movie_dtype(2.0) == np.uint8 and movie_dtype(200.0) == np.uint16


@pytest.mark.parametrize("rotate,flip", [(0, 0), (1, 0), (2, 1), (3, 2), (1, 2)])
def test_gain_file_needs_the_stated_orientation(rotate, flip):
    sens = sensitivity_map(48, 64, np.random.default_rng(0), bad_pixels=5)
    assert sens.shape == (48, 64) and 0.15 < sens.min() and sens.max() <= 1.2
    stored = gain_file_array(sens, rotate, flip)
    assert stored.shape == ((64, 48) if rotate % 2 else (48, 64))
    np.testing.assert_allclose(orient_gain(stored, rotate, flip) * sens, 1.0, rtol=1e-6)
    if (rotate, flip) != (0, 0):
        assert stored.shape != sens.shape or not np.allclose(stored * sens, 1.0)
