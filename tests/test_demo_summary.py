"""The ground-truth metrics (tiltflow.simulate.compare) and the demo summary's command line."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tiltflow.geometry import projection_rotations
from tiltflow.simulate import compare as C
from tiltflow.testing.demo_summary import main as demo_main


def test_motion_rms_ignores_the_reference_frame_but_not_the_sign():
    truth = np.array([[1.5, 0.2], [0.1, 0.0], [-0.6, -0.1], [-1.0, -0.1]])
    assert C.motion_rms_px(truth + [3.0, -2.0], truth) == pytest.approx(0.0, abs=1e-12)
    flipped = C.motion_rms_px(-truth, truth)
    assert flipped == pytest.approx(2 * np.sqrt(((truth - truth.mean(0)) ** 2).sum(1).mean()))
    with_gap = truth.copy()
    with_gap[0] = np.nan  # a thrown-away frame is not compared
    assert C.motion_rms_px(with_gap, truth) == pytest.approx(0.0, abs=1e-12)


def test_shift_rms_removes_exactly_a_3d_origin_translation():
    rng = np.random.default_rng(1)
    tilts = np.arange(-60, 61, 10.0)
    truth = rng.normal(0, 5, (len(tilts), 2))
    d = np.array([3.0, -2.0, 7.0])  # the tomogram origin moved: every projected shift moves with it
    moved = truth + (projection_rotations(0.0, tilts, 85.0)[:, :2, :] @ d)
    assert C.gauge_free_shift_rms(moved, truth, tilts, 85.0) == pytest.approx(0.0, abs=1e-9)
    noise = rng.normal(0, 1.0, truth.shape)
    r = C.gauge_free_shift_rms(moved + noise, truth, tilts, 85.0)
    assert 0.9 < r < 1.6  # the noise stays: about sqrt(2) per tilt, less the 3 fitted parameters


def test_axis_error_wraps_opposite_directions():
    assert C.axis_error_deg(-95.0, 85.0) == pytest.approx(0.0)
    assert C.axis_error_deg(86.5, 85.0) == pytest.approx(1.5)
    assert C.axis_error_deg(84.0, -95.0) == pytest.approx(-1.0)


def test_tomogram_correlation_finds_a_shifted_inverted_copy():
    from tiltflow.simulate.truth import SeriesTruth

    rng = np.random.default_rng(0)
    phantom = np.zeros((16, 40, 40))
    for _ in range(25):
        z, y, x = rng.integers(3, 13), rng.integers(4, 36), rng.integers(4, 36)
        phantom[z - 2:z + 2, y - 3:y + 3, x - 3:x + 3] += 1.0
    series = SeriesTruth(name="TS", mdoc="", tilt_axis=0.0, hand=1, thickness_nm=1.0, phantom="", phantom_pixel_size=8,
                         tomogram_size_xyz=[40, 40, 16], dose_per_tilt=1, scheme="", tilts=[])
    tomo = -np.roll(phantom, (1, 2, -1), axis=(0, 1, 2))  # dark = dense, origin off by a few voxels
    c = C.tomogram_correlation(tomo, 8.0, 1.0, (40, 40, 16), series, phantom, resolution=16.0)
    assert c > 0.9
    assert C.tomogram_correlation(rng.normal(size=tomo.shape), 8.0, 1.0, (40, 40, 16), series, phantom,
                                  resolution=16.0) < 0.3
    # a tomogram at twice the pixel size covers the same box: still a high correlation
    binned = tomo.reshape(8, 2, 20, 2, 20, 2).mean(axis=(1, 3, 5))
    assert C.tomogram_correlation(binned, 16.0, 2.0, (40, 40, 16), series, phantom, resolution=32.0) > 0.8


def test_rms_skips_missing_values():
    assert C.rms([3.0, math.nan, -4.0]) == pytest.approx(math.sqrt(12.5))
    assert math.isnan(C.rms([]))


def test_demo_summary_cli_errors(tmp_path, capsys):
    assert demo_main([]) == 2
    assert demo_main([str(tmp_path), str(tmp_path)]) == 2
    assert "ground truth file not found" in capsys.readouterr().err


def test_correction_table_shows_each_mode_and_the_shells_beyond_the_first_zero():
    from rich.console import Console

    from tiltflow.testing.demo_summary import correction_table

    k = np.array([0.0, 0.01, 0.02, 0.03, 0.04])  # shells at 100, 50, 33.3, 25 A

    def metrics(fsc):
        shells = C.ShellCorrelation(k, np.array(fsc), 50.0, 33.3)
        return C.TomogramMetrics(0.5, shells, 40.0, 0.7, float(np.mean(fsc[3:])), 24.0)

    table = correction_table("TS_01", {"none": metrics([1, 0.9, 0.5, -0.2, 0.05]),
                                       "phaseflip": metrics([1, 0.9, 0.5, 0.3, 0.1])})
    console = Console(width=200, record=True)
    console.print(table)
    text = console.export_text()
    assert "first CTF zero of the highest-defocus tilt at 40.0 A" in " ".join(text.split())  # title may wrap
    assert "shell 33.3 A" in text and "shell 25.0 A" in text and "shell 50.0 A" not in text  # beyond 40 A only
    row = next(line for line in text.splitlines() if "shell 33.3 A" in line)
    assert "-0.200" in row and "0.300" in row
