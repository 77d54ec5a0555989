"""`tiltflow gain` end to end: MRC/TIFF/DM4 in, orientation, K3 binning, bad pixels, shape checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from tiltflow.cli import main as cli
from tiltflow.errors import TiltflowError
from tiltflow.io.dm4 import write_dm4
from tiltflow.io.gain import (
    load_prepared_gain,
    match_gain_to_frame,
    orient_gain,
    orientation_scores,
    shape_hint,
    unorient_gain,
)
from tiltflow.io.mrc import read_mrc, write_mrc
from tiltflow.steps.gain import Options, run_session

H, W = 48, 64


def true_gain(seed=0, shape=(H, W)) -> np.ndarray:
    """A multiplicative gain in the movies' orientation (pixel-to-pixel variation like a real detector)."""
    return (1.0 + 0.3 * np.random.default_rng(seed).standard_normal(shape)).clip(0.4, 2.0).astype(np.float32)


def write_movie(path: Path, gain: np.ndarray, n=8, dose=40.0, seed=1) -> Path:
    """Raw counts = Poisson(dose / gain): a flat specimen seen through the detector's gain."""
    rng = np.random.default_rng(seed)
    frames = rng.poisson(dose / gain, size=(n, *gain.shape)).astype(np.uint16)
    # SerialEM writes TIFF rows as they come off the camera; the field's readers reverse them
    # (MotionCor3 TiffUtil/CLoadTiffImage.cpp), so the file holds each frame upside down
    tifffile.imwrite(path, frames[:, ::-1], compression="lzw", photometric="minisblack")
    return path


def run_cli(*args) -> int:
    return cli(["gain", *map(str, args)])


def test_mrc_gain_with_rotation_and_flip(tmp_path):
    g = true_gain()
    gain_file = write_mrc(tmp_path / "ref.mrc", unorient_gain(g, 1, 2), 0.8)  # needs -RotGain 1 -FlipGain 2
    movie = write_movie(tmp_path / "m.tif", g)
    out = tmp_path / "gain"
    assert run_cli(gain_file, "--outdir", out, "--rotate", 1, "--flip", 2, "--movie", movie) == 0
    prepared, _ = read_mrc(out / "gain.mrc")
    assert prepared.dtype == np.float32
    np.testing.assert_allclose(prepared, g, rtol=1e-6)
    info = json.loads((out / "gain.json").read_text())
    assert (info["rotate"], info["flip"], info["n_zero"], info["counting_shrink"]) == (1, 2, 0, False)
    best_r, best_f, best_z = info["orientation_scores"][0]
    assert np.array_equal(
        orient_gain(np.arange(12).reshape(3, 4), best_r, best_f),
        orient_gain(np.arange(12).reshape(3, 4), 1, 2),
    )
    assert best_z > 20 and info["warnings"] == []
    log = (out / "console.log").read_text()
    assert "rotate 1 flip 2" in log and "done gain" in log
    assert (out / "error.log").exists() and not (out / "defects.mrc").exists()
    np.testing.assert_allclose(load_prepared_gain(out / "gain.mrc", (H, W)), g, rtol=1e-6)


def test_eer_style_tiff_gain(tmp_path):
    g = true_gain(3)
    gfile = tmp_path / "20240101_gain.gain"  # Falcon/EER gains are float32 TIFFs named .gain
    tifffile.imwrite(gfile, unorient_gain(g, 3, 0)[::-1])  # MotionCor3 reverses TIFF gain rows on read
    res = run_session(gfile, tmp_path / "gain", Options(rotate=3), tmp_path)
    assert res.input_format == "tiff"
    np.testing.assert_allclose(read_mrc(tmp_path / "gain" / "gain.mrc")[0], g, rtol=1e-6)


def test_dm4_gain_with_serialem_rf_and_tiff_frames(tmp_path):
    g = true_gain(5)
    # SerialEM r/f 5 = MotionCor -RotGain 3 -FlipGain 2 on the gain as IMOD reads it, TIFF or MRC frames
    as_imod = unorient_gain(g, 3, 2)
    dm4 = write_dm4(tmp_path / "SuperRef.dm4", as_imod[::-1], pixel_size=0.83)  # DM stores rows top-down
    movie = write_movie(tmp_path / "frames.tif", g)
    out = tmp_path / "gain"
    assert run_cli(dm4, "--outdir", out, "--serialem-rf", 5, "--movie", movie) == 0
    np.testing.assert_allclose(read_mrc(out / "gain.mrc")[0], g, rtol=1e-6)
    info = json.loads((out / "gain.json").read_text())
    assert (info["serialem_rf"], info["rotate"], info["flip"], info["input_format"]) == (5, 3, 2, "dm4")
    assert info["warnings"] == []  # the movie agrees with the orientation


def test_k3_superres_binned_to_counting_size(tmp_path):
    g = true_gain(7, (H // 2, W // 2))  # counting-mode gain
    sr = np.repeat(np.repeat(g, 2, 0), 2, 1)
    sr = sr * (1 + 0.1 * np.tile([[1, -1], [-1, 1]], (H // 2, W // 2)))  # sub-pixel pattern, 2x2 mean = g
    gfile = write_mrc(tmp_path / "SuperRef.mrc", sr.astype(np.float32), 0.5)
    movie = write_movie(tmp_path / "m.tif", g)
    # decided from the movie
    res = run_session(gfile, tmp_path / "a", Options(movie=movie), tmp_path)
    assert res.counting_shrink and res.output_shape == (H // 2, W // 2)
    np.testing.assert_allclose(read_mrc(tmp_path / "a" / "gain.mrc")[0], g, rtol=1e-5)
    # without a movie a known super-resolution size (here a small analogue of 11520x8184) is kept, with a warning
    res = run_session(gfile, tmp_path / "b", Options(superres_shapes=((H, W),)), tmp_path)
    assert not res.counting_shrink and res.output_shape == (H, W)
    assert any("--counting" in w for w in res.warnings)
    assert "--counting" in (tmp_path / "b" / "error.log").read_text()
    # forced
    assert run_cli(gfile, "--outdir", tmp_path / "c", "--counting") == 0
    assert read_mrc(tmp_path / "c" / "gain.mrc")[0].shape == (H // 2, W // 2)
    assert (
        run_cli(gfile, "--outdir", tmp_path / "d", "--no-counting", "--movie", movie) == 2
    )  # then it mismatches


def test_bad_pixels_counted_and_replaced(tmp_path):
    g = true_gain(9)
    g[3, 4] = 0.0
    g[10, 11] = -2.0
    g[20, 30] = np.nan
    g[40, 1] = np.inf
    gfile = write_mrc(tmp_path / "ref.mrc", unorient_gain(g, 2, 1), 1.0)
    res = run_session(gfile, tmp_path / "gain", Options(rotate=2, flip=1), tmp_path)
    assert (res.n_zero, res.n_negative, res.n_nonfinite) == (1, 1, 2)
    out = read_mrc(tmp_path / "gain" / "gain.mrc")[0]
    assert np.isfinite(out).all() and (out > 0).all()
    valid = np.isfinite(g) & (g > 0)
    assert res.replacement == pytest.approx(float(np.median(g[valid])), rel=1e-6)
    for y, x in [(3, 4), (10, 11), (20, 30), (40, 1)]:
        assert out[y, x] == pytest.approx(res.replacement)
    np.testing.assert_allclose(out[valid], g[valid], rtol=1e-6)
    defects = read_mrc(tmp_path / "gain" / "defects.mrc")[0]
    assert sorted(zip(*np.nonzero(defects), strict=True)) == [(3, 4), (10, 11), (20, 30), (40, 1)]
    assert (
        "4 bad gain pixels (1 zero, 1 negative, 2 non-finite)"
        in (tmp_path / "gain" / "error.log").read_text()
    )


def test_shape_mismatch_names_the_rotation(tmp_path, capsys):
    g = true_gain(11)
    gfile = write_mrc(tmp_path / "ref.mrc", unorient_gain(g, 1, 0), 1.0)  # 48x64 stored as 64 rows x 48
    movie = write_movie(tmp_path / "m.tif", g)
    assert run_cli(gfile, "--outdir", tmp_path / "gain", "--movie", movie) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("tiltflow: error:")]
    assert len(err) == 1 and str(gfile) in err[0]
    assert "--rotate 1 --flip 0" in err[0]  # the movie shows which of the two turns is right
    assert not (tmp_path / "gain" / "gain.mrc").exists()
    # a movie without gain signal: both candidate turns are named
    flat = tmp_path / "flat.tif"
    tifffile.imwrite(flat, np.full((2, H, W), 7, np.uint16), photometric="minisblack")
    with pytest.raises(TiltflowError, match="--rotate 1 or --rotate 3"):
        run_session(gfile, tmp_path / "g2", Options(movie=flat), tmp_path)


def test_wrong_orientation_with_matching_shape_warns(tmp_path):
    g = true_gain(13)
    gfile = write_mrc(tmp_path / "ref.mrc", unorient_gain(g, 2, 0), 1.0)
    movie = write_movie(tmp_path / "m.tif", g)
    res = run_session(gfile, tmp_path / "gain", Options(movie=movie), tmp_path)  # user forgot --rotate 2
    assert any("--rotate 2 --flip 0" in w for w in res.warnings)
    assert "--rotate 2 --flip 0" in (tmp_path / "gain" / "error.log").read_text()


def test_option_errors(tmp_path):
    gfile = write_mrc(tmp_path / "ref.mrc", true_gain(), 1.0)
    with pytest.raises(TiltflowError, match="not both"):
        run_session(gfile, tmp_path / "b", Options(serialem_rf=1, rotate=1, movie=gfile), tmp_path)
    assert run_cli(gfile, "--outdir", tmp_path / "c", "--rotate", 4) == 2  # click range check
    assert run_cli(tmp_path / "missing.mrc", "--outdir", tmp_path / "d") == 2
    stack = write_mrc(tmp_path / "stack.mrc", np.ones((3, 8, 8), np.float32), 1.0)
    with pytest.raises(TiltflowError, match="one 2-D image"):
        run_session(stack, tmp_path / "e", Options(), tmp_path)


def test_flat_field_warning_and_invert(tmp_path):
    flat_counts = (50.0 / true_gain(15)).astype(np.float32)  # a summed flat field, not a gain
    gfile = write_mrc(tmp_path / "flat.mrc", flat_counts, 1.0)
    res = run_session(gfile, tmp_path / "a", Options(), tmp_path)
    assert any("--invert" in w for w in res.warnings)
    res = run_session(gfile, tmp_path / "b", Options(invert=True), tmp_path)
    out = read_mrc(tmp_path / "b" / "gain.mrc")[0]
    np.testing.assert_allclose(out * flat_counts, float(flat_counts.mean()), rtol=1e-5)
    assert res.inverted and res.warnings == []


def test_load_prepared_gain_errors_and_eer_upsampling(tmp_path):
    with pytest.raises(TiltflowError, match="tiltflow gain"):
        load_prepared_gain(tmp_path / "none.mrc")
    bad = write_mrc(tmp_path / "bad.mrc", np.zeros((4, 4), np.float32), 1.0)
    with pytest.raises(TiltflowError, match="16 zero, negative or non-finite"):
        load_prepared_gain(bad)
    g = true_gain(17, (4, 6))
    good = write_mrc(tmp_path / "g.mrc", g, 1.0)
    with pytest.raises(TiltflowError, match="--rotate 1 or --rotate 3"):
        load_prepared_gain(good, (6, 4))
    up = load_prepared_gain(good, (8, 12))  # 4k gain, 8k-rendered EER frames: each pixel 2x2
    np.testing.assert_array_equal(up[::2, ::2], g)
    np.testing.assert_array_equal(up[1::2, 1::2], g)
    with pytest.raises(TiltflowError, match="8x4"):
        match_gain_to_frame(g, (4, 8))
    assert "--counting" in shape_hint((8, 12), (4, 6))


def test_orientation_scores_rank_the_truth_first():
    g = true_gain(19)
    rng = np.random.default_rng(2)
    movie_sum = rng.poisson(200.0 / orient_gain(g, 3, 1)).astype(float)
    scores = orientation_scores(g, movie_sum)
    r, f, z = scores[0]
    assert np.array_equal(orient_gain(g, r, f), orient_gain(g, 3, 1)) and z > 20
    assert all(abs(s[2]) < 6 for s in scores[1:])


def test_eer_movie_and_gain(tmp_path):
    from tiltflow.io.eer import write_eer

    g = true_gain(21)
    rng = np.random.default_rng(4)
    fractions = (rng.random((64, H, W)) < 0.25 / g).astype(np.uint8)  # event rate ~ dose / gain
    movie = write_eer(tmp_path / "m.eer", fractions, pixel_size=0.75)
    gfile = tmp_path / "ref.gain"
    tifffile.imwrite(gfile, unorient_gain(g, 1, 0)[::-1])  # EER frames in file order, TIFF gain rows reversed
    res = run_session(gfile, tmp_path / "gain", Options(rotate=1, movie=movie), tmp_path)
    np.testing.assert_allclose(read_mrc(tmp_path / "gain" / "gain.mrc")[0], g, rtol=1e-6)
    assert res.warnings == [] and res.pixel_size == pytest.approx(0.75)
    r, f, z = res.orientation_scores[0]
    assert (r, f) == (1, 0) and z > 8
