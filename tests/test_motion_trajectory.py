"""Trajectory conventions, RELION's accumulated motion and per-movie STAR file, dose weighting, spectrum."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tiltflow import star
from tiltflow.errors import TiltflowError
from tiltflow.motion import doseweight, spectrum, trajectory
from tiltflow.motion.metadata import MovieInfo, read_motion_star, write_motion_star

DATA = Path(__file__).parent / "data"
RELION_MOVIE_STAR = DATA / "cets-relion__MotionCorr_job002_frames_TS_01_000_0_0.star"
RELION_TS_STAR = DATA / "cets-relion__MotionCorr_job002_tilt_series_TS_01.star"


def test_accumulated_motion_reproduces_relion():
    """RELION's own MotionCorr output: its rlnAccumMotion* for TS_01_000_0.0 from its trajectory file.

    RELION sums the shifts in movie pixels (its file says 1 e/A^2 per frame, pre-exposure 0), so with a
    pixel size of 1 the numbers must match the tilt-series table exactly; early = frames up to 4 e/A^2.
    """
    traj, general = read_motion_star(RELION_MOVIE_STAR)
    assert traj.n_frames == 8 and traj.first_frame == 1 and traj.local_model is None
    total, early, late = traj.accumulated_motion(1.0, general["rlnMicrographDoseRate"],
                                                 general["rlnMicrographPreExposure"])
    _, table = star.read_relion_tilt_table(RELION_TS_STAR)
    row = table.iloc[0]
    assert total == pytest.approx(row["rlnAccumMotionTotal"], abs=2e-6)
    assert early == pytest.approx(row["rlnAccumMotionEarly"], abs=2e-6)
    assert late == pytest.approx(row["rlnAccumMotionLate"], abs=2e-6)
    # in Angstrom (what the label promises) it scales with the pixel size; a later tilt has no early motion
    assert traj.accumulated_motion(0.675, 1.0, 0.0)[0] == pytest.approx(0.675 * total)
    assert traj.accumulated_motion(1.0, 1.0, 3.0)[1] == 0.0


def test_trajectory_from_used_frames_and_drift():
    used = np.array([[1.0, 2.0], [0.0, 1.0], [-1.0, 0.5]])
    t = trajectory.Trajectory.from_used(used, n_frames=5, first=1)
    assert t.first_frame == 2 and list(t.used) == [False, True, True, True, False]
    np.testing.assert_allclose(t.shifts[1:4], used - used[0])  # relative to the first frame used
    d = t.drift()
    np.testing.assert_allclose(d[1:4], -(used - used.mean(axis=0)))
    assert np.isnan(d[0]).all()


def test_smoothing_keeps_straight_lines_and_removes_noise():
    rng = np.random.default_rng(0)
    line = np.stack([np.linspace(0, 7, 12), np.linspace(0, -3, 12)], axis=1)
    out, _ = trajectory.smooth(line)
    np.testing.assert_allclose(out, line, atol=1e-6)  # no second differences: nothing to remove
    truth = np.stack([6 * (1 - np.exp(-np.arange(30) / 6.0)), np.zeros(30)], axis=1)
    noisy = truth + rng.normal(0, 0.3, truth.shape)
    out, lam = trajectory.smooth(noisy)
    assert lam > 0
    assert np.sqrt(((out - truth) ** 2).mean()) < 0.6 * np.sqrt(((noisy - truth) ** 2).mean())
    short = np.array([[0.0, 0.0], [1.0, 5.0], [0.0, 0.0]])
    np.testing.assert_array_equal(trajectory.smooth(short)[0], short)


def test_motion_star_roundtrip_in_relion_layout(tmp_path):
    shifts = np.full((6, 2), np.nan)
    shifts[1:5] = [[0, 0], [0.5, -0.25], [0.9, -0.4], [1.2, -0.5]]
    model = np.arange(36, dtype=float) / 100
    t = trajectory.Trajectory(shifts, model)
    info = MovieInfo("frames/a.tif", 5760, 4092, 6, 0.83, binning=2, gain="gain/gain.mrc",
                     dose_per_frame=0.5, pre_exposure=3.0, voltage=300)
    path = write_motion_star(tmp_path / "a.star", t, info)
    text = path.read_text()
    assert "data_general" in text and "data_global_shift" in text and "data_local_motion_model" in text
    assert "-9999" in text  # frames not used, as RELION writes them
    blocks = star.read_blocks(path)
    g = blocks["general"]
    assert (g["rlnImageSizeX"], g["rlnImageSizeZ"], g["rlnMicrographStartFrame"], g["rlnMotionModelVersion"]) == (
        5760, 6, 2, 1)
    assert g["rlnMicrographGainName"] == "gain/gain.mrc" and g["rlnMicrographDoseRate"] == 0.5
    assert list(blocks["local_motion_model"]["rlnMotionModelCoeffsIdx"]) == list(range(36))
    back, _ = read_motion_star(path)
    np.testing.assert_allclose(back.shifts, shifts, atol=1e-6)
    np.testing.assert_allclose(back.local_model, model, atol=1e-6)
    star.write_blocks(tmp_path / "bad.star", {"x": pd.DataFrame({"rlnA": [1]})})
    with pytest.raises(TiltflowError, match="not a RELION per-movie motion file"):
        read_motion_star(tmp_path / "bad.star")


def test_exposure_filter():
    k = torch.tensor([1e-4, 1 / 20, 1 / 8, 1 / 3])
    first = doseweight.frame_filter(k, 0.0, 1.0)
    late = doseweight.frame_filter(k, 30.0, 31.0)
    assert first[0] == pytest.approx(1.0, abs=1e-6)  # nothing is lost at low resolution
    assert torch.all(late < first) and torch.all(torch.diff(late) < 0)
    # Grant & Grigorieff at 1/3 A^-1 after 30 e/A^2: exp(-30 / (2 Ne)), Ne = 0.245 * 3^1.665 + 2.81
    ne = 0.245 * 3**1.665 + 2.81
    assert float(doseweight.frame_filter(torch.tensor([1 / 3]), 30.0, 30.0)) == pytest.approx(np.exp(-15 / ne))
    # the filter is the decay averaged over the frame's exposure
    grid = np.linspace(30.0, 31.0, 2001)
    avg = np.exp(-grid / (2 * ne)).mean()
    assert float(doseweight.frame_filter(torch.tensor([1 / 3]), 30.0, 31.0)) == pytest.approx(avg, rel=1e-4)
    # 200 kV damages more per electron
    assert float(doseweight.frame_filter(torch.tensor([1 / 3]), 0, 10, kv=200)) < float(
        doseweight.frame_filter(torch.tensor([1 / 3]), 0, 10, kv=300))
    with pytest.raises(TiltflowError, match="100-300 kV"):
        doseweight.voltage_factor(60)
    radial = doseweight.RadialFilter(torch.tensor([[0.0, 0.05], [0.1, 0.2]]))
    np.testing.assert_allclose(radial(5.0, 6.0).numpy().ravel(),
                               doseweight.frame_filter(torch.tensor([0.0, 0.05, 0.1, 0.2]), 5.0, 6.0).numpy(),
                               rtol=1e-4)
    np.testing.assert_allclose(doseweight.frame_exposures(3, 0.5, 3.0), [[3.0, 3.5], [3.5, 4.0], [4.0, 4.5]])


def test_amplitude_spectrum_thumbnail():
    """A 10 A wave at 2 A/px shows up at 2/10 of Nyquist... on a 512 thumbnail cropped to 1.4 A."""
    y, x = np.mgrid[0:600, 0:700]
    img = np.cos(2 * np.pi * x / 5.0) + 0.01 * np.random.default_rng(0).standard_normal((600, 700))
    ps = spectrum.amplitude_spectrum(img, 2.0)
    assert ps.image.shape == (512, 512) and ps.pixel_size == pytest.approx(2.0)  # coarser than 1.4 A: no crop
    row = ps.image[256]
    peak = int(np.argmax(row[257:])) + 1  # frequency 1/10 A^-1 = 0.4 of Nyquist (1/4 A^-1)
    assert abs(peak - 0.4 * 256) <= 2
    fine = spectrum.amplitude_spectrum(np.random.default_rng(1).standard_normal((1200, 1200)), 0.7)
    assert fine.image.shape == (512, 512) and fine.pixel_size == pytest.approx(1.4, rel=0.01)
