"""RELION's own motion correction (the real ``relion_run_motioncorr``) beside tiltflow's, on the same movies.

Why: a convention that only agrees with tiltflow's own reader proves nothing. These tests pin the row order
of TIFF, MRC and EER movies, the gain codes and the trajectory sign against a program of the field. The
movies are written the way SerialEM/EPU write them (TIFF rows reversed, MRC and EER in file order) with a
known drift and a gain reference stored in a non-trivial orientation. In CI (``CI=true``) a missing RELION
is a failure; elsewhere these tests are skipped without it (``make test`` installs Debian's ``relion``).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import mrcfile
import numpy as np
import pytest
import tifffile

from builders import drift_path, frames, rms_error
from programs import missing
from tiltflow.backends.relion import RelionMotionCall, run_relion_motioncorr
from tiltflow.io.gain import orient_gain, relion_gain_codes, unorient_gain
from tiltflow.io.movies import open_movie
from tiltflow.io.mrc import read_mrc
from tiltflow.motion.correct import MotionSettings, correct_movie
from tiltflow.steps.gain import Options, run_session

EXE = shutil.which("relion_run_motioncorr")
if EXE is None:
    missing("RELION (relion_run_motioncorr) is not installed (make test installs Debian's relion)", module_level=True)

ROTATE, FLIP = 1, 2  # the raw gain file needs MotionCor's -RotGain 1 -FlipGain 2 (as the demo's)


def _sensitivity(shape, seed=7) -> np.ndarray:
    """A detector's per-pixel sensitivity (smooth +-10 % plus 15 % pixel noise); the gain is its inverse."""
    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.ogrid[0:h, 0:w]
    s = (1 + 0.1 * np.sin((6 * xx + 2 * yy) / max(h, w))) * (1 + 0.15 * rng.standard_normal(shape, np.float32))
    return np.clip(s, 0.4, 1.6).astype(np.float32)


def _counts(shape, n, seed, counts) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frames ``M`` (movie orientation) of a specimen moving along a known drift, seen through the detector."""
    drift = drift_path(n, np.random.default_rng(seed), scale=0.6)
    lam = frames(shape, drift, counts=counts, contrast=0.4, seed=seed, noise=False)
    sens = _sensitivity(shape)
    raw = np.random.default_rng(seed + 1).poisson(lam * sens).astype(np.uint16)
    return raw, drift, sens


def _highpass(img: np.ndarray) -> np.ndarray:
    f = np.fft.rfft2(img - img.mean())
    fy, fx = np.fft.fftfreq(img.shape[0])[:, None], np.fft.rfftfreq(img.shape[1])[None, :]
    return np.fft.irfft2(f * (np.hypot(fx, fy) > 0.3), s=img.shape)


def _corr(a, b) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def _builtin(movie: Path, gain: np.ndarray, **kw):
    with open_movie(movie, **kw) as m:
        return correct_movie(m, pixel_size=1.0, gain=gain, settings=MotionSettings(even_odd=False, smooth=False))


def _relion(tmp: Path, movie: Path, gain: Path, rot: int, flip: int, n_frames: int, **kw):
    work = Path(tempfile.mkdtemp(prefix=f"relion_{movie.name}_", dir=tmp))
    call = RelionMotionCall(executable=Path(EXE), movie=movie, pixel_size=1.0, gain=gain, gain_rot=rot,
                            gain_flip=flip, **kw)
    out = run_relion_motioncorr(call, workdir=work, log_path=work / "run.log", label=movie.name, n_frames=n_frames)
    return read_mrc(out.sum)[0].astype(np.float64), out.trajectory


def _compare(ours, relion_img, relion_traj, drift):
    """Same orientation (no flip) and the same trajectory (both close to the truth)."""
    img = ours.sums.image.astype(np.float64)
    assert _corr(img, relion_img) > 0.8, "RELION's corrected image differs from tiltflow's"
    assert _corr(img, relion_img[::-1]) < 0.3  # ... and not just after a flip
    assert rms_error(relion_traj.drift(), ours.trajectory.drift()) < 0.25
    assert rms_error(relion_traj.drift(), drift) < 0.35 and rms_error(ours.trajectory.drift(), drift) < 0.35


def _pattern_left(img: np.ndarray, sens: np.ndarray) -> float:
    """Correlation of the detector's pixel pattern with a corrected still image: ~0 when the gain was right."""
    return abs(_corr(_highpass(img), _highpass(sens)))


@pytest.fixture(scope="module")
def movies(tmp_path_factory):
    """One acquisition written as SerialEM writes TIFF and MRC, with a raw MRC gain needing (1, 2)."""
    tmp = tmp_path_factory.mktemp("peer")
    raw, drift, sens = _counts((512, 512), 8, seed=3, counts=6.0)
    still = np.random.default_rng(4).poisson(40.0 * sens, size=(4, 512, 512)).astype(np.uint16)  # flat, no drift
    for stem, data in (("m", raw), ("still", still)):
        tifffile.imwrite(tmp / f"{stem}.tif", data[:, ::-1], compression="lzw", photometric="minisblack")  # SerialEM
        with mrcfile.new(tmp / f"{stem}.mrc") as m:
            m.set_data(data.astype(np.float32))
    gain_file = tmp / "raw_gain.mrc"
    with mrcfile.new(gain_file) as m:  # stored in the camera's orientation: needs MotionCor's (1, 2)
        m.set_data(unorient_gain(1.0 / sens, ROTATE, FLIP))
    prepared = run_session(gain_file, tmp / "gain", Options(rotate=ROTATE, flip=FLIP, movie=tmp / "m.tif"), tmp)
    assert (prepared.rotate, prepared.flip) == (ROTATE, FLIP) and prepared.warnings == []
    return tmp, drift, sens, read_mrc(tmp / "gain" / "gain.mrc")[0]


@pytest.mark.parametrize("name", ["m.tif", "m.mrc"])
def test_relion_and_tiltflow_agree_on_drifting_movies(movies, name):
    tmp, drift, _, gain = movies
    ours = _builtin(tmp / name, gain)
    rot, flip = relion_gain_codes(ROTATE, FLIP, tmp / "raw_gain.mrc")  # MRC gain: RELION's codes = MotionCor's
    img, traj = _relion(tmp, tmp / name, tmp / "raw_gain.mrc", rot, flip, n_frames=8)
    _compare(ours, img, traj, drift)


def test_relion_reads_the_serialem_tiff_and_mrc_the_same(movies):
    tmp, _, _, _ = movies
    (a, ta), (b, tb) = (_relion(tmp, tmp / n, tmp / "raw_gain.mrc", ROTATE, FLIP, n_frames=8) for n in ("m.tif", "m.mrc"))
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(ta.shifts, tb.shifts, atol=1e-6)


@pytest.mark.parametrize("name", ["still.tif", "still.mrc"])
def test_the_same_gain_codes_flatten_the_detector_in_both(movies, name):
    """MotionCor's (1, 2) given to tiltflow and, converted, to RELION removes the pixel pattern; (1, 1) does not."""
    tmp, _, sens, gain = movies
    raw_gain = tmp / "raw_gain.mrc"
    assert _pattern_left(_builtin(tmp / name, gain).sums.image, sens) < 0.1
    rot, flip = relion_gain_codes(ROTATE, FLIP, raw_gain)
    assert _pattern_left(_relion(tmp, tmp / name, raw_gain, rot, flip, n_frames=4)[0], sens) < 0.1
    # the check can fail: the flip tiltflow's old TIFF reader needed leaves the pattern in (both programs)
    wrong = orient_gain(read_mrc(raw_gain)[0], ROTATE, 1)
    assert _pattern_left(_builtin(tmp / name, wrong).sums.image, sens) > 0.3
    assert _pattern_left(_relion(tmp, tmp / name, raw_gain, ROTATE, 1, n_frames=4)[0], sens) > 0.3


def test_relion_backend_step_matches_builtin_on_tiff(movies, tmp_path):
    """``tiltflow motioncor --backend relion`` through the step: same images and trajectory as builtin."""
    import pandas as pd

    from tiltflow import star
    from tiltflow.motion.metadata import read_motion_star
    from tiltflow.steps.common import run_star_step
    from tiltflow.steps.motioncor import Options

    tmp, drift, _, _ = movies
    shutil.copy(tmp / "m.tif", tmp_path / "TS_01_000_0.0.tif")
    rows = [{star.MOVIE: "TS_01_000_0.0.tif", star.FRAME_COUNT: 8, star.NOMINAL_TILT: 0.0, star.NOMINAL_AXIS: 85.0,
             star.PRE_EXPOSURE: 0.0, "tfDose": 3.0}]
    glob = {star.VOLTAGE: 300.0, star.CS: 2.7, star.AMP_CONTRAST: 0.1, star.ORIGINAL_PIXEL_SIZE: 1.0}
    in_star = star.write_tilt_series(star.TiltSeriesStar("TS_01", glob, pd.DataFrame(rows)), tmp_path / "in/TS_01.star")
    got = {}
    for backend in ("builtin", "relion"):
        opts = Options(gain=tmp / "gain" / "gain.mrc", backend=backend, even_odd=False, device="cpu")
        ts = star.read_tilt_series(run_star_step("motioncor", in_star, f"mc_{backend}", opts, tmp_path))
        row = ts.tilts.iloc[0]
        got[backend] = (read_mrc(tmp_path / row[star.MICROGRAPH])[0].astype(np.float64),
                        read_motion_star(tmp_path / row[star.MICROGRAPH_METADATA])[0])
    assert _corr(got["builtin"][0], got["relion"][0]) > 0.8
    assert rms_error(got["relion"][1].drift(), got["builtin"][1].drift()) < 0.25
    assert rms_error(got["relion"][1].drift(), drift) < 0.35
    log = (tmp_path / "mc_relion/TS_01/frames/TS_01_000_0_0.log").read_text()
    assert "--use_own" in log and "--eer_grouping" in log and "# tiltflow: RELION version " in log


def test_relion_backend_refuses_even_odd_it_cannot_write(movies, tmp_path):
    from tiltflow.backends.relion import offers_even_odd
    from tiltflow.errors import TiltflowError

    tmp = movies[0]
    if offers_even_odd(EXE):
        pytest.skip("this RELION writes even/odd sums")
    call = RelionMotionCall(executable=Path(EXE), movie=tmp / "m.mrc", pixel_size=1.0, even_odd=True)
    with pytest.raises(TiltflowError, match="cannot write even/odd"):
        run_relion_motioncorr(call, workdir=tmp_path, log_path=tmp_path / "log", label="m", n_frames=8)
    assert not list(tmp_path.iterdir())  # refused before anything was written


def test_left_out_frames_and_the_reference_frame(movies):
    """--first_frame_sum 2 --last_frame_sum 7: frames 1 and 8 unused (NaN), shifts relative to frame 2."""
    tmp, drift, _, _ = movies
    _, traj = _relion(tmp, tmp / "m.mrc", tmp / "raw_gain.mrc", ROTATE, FLIP, n_frames=8, first_frame=2, last_frame=7)
    assert traj.used.tolist() == [False] + [True] * 6 + [False]
    np.testing.assert_array_equal(traj.shifts[1], [0.0, 0.0])
    assert rms_error(traj.drift()[1:7], drift[1:7]) < 0.35


def test_tiltflow_run_says_before_any_work_that_relion_3_has_no_even_odd():
    from tiltflow.backends.relion import offers_even_odd
    from tiltflow.errors import TiltflowError
    from tiltflow.runner.params import load_params

    assert load_params(None, {"motioncor_backend": "relion", "even_odd": False}).motioncor_backend == "relion"
    if offers_even_odd(EXE):
        assert load_params(None, {"motioncor_backend": "relion"}).even_odd
    else:
        with pytest.raises(TiltflowError, match="cannot write even/odd sums.*set even_odd false"):
            load_params(None, {"motioncor_backend": "relion"})


def test_relion_skips_short_movies_and_the_wrapper_says_so(movies, tmp_path):
    from tiltflow.errors import TiltflowError

    tmp = movies[0]
    call = RelionMotionCall(executable=Path(EXE), movie=tmp / "m.mrc", pixel_size=1.0)
    with pytest.raises(TiltflowError, match="fewer than 3 frames"):
        run_relion_motioncorr(call, workdir=tmp_path, log_path=tmp_path / "log", label="m", n_frames=2)


def test_eer_movie_and_epu_gain(tmp_path):
    """EER (RELION reads only 4096x4096): file-order frames, an EPU .gain needing MotionCor's (0, 1).

    Kept cheap: a blocky 512^2 texture blown up 8x, whole-pixel drift, 9 fractions, both outputs binned 8x.
    """
    from builders import specimen
    from tiltflow.io.eer import write_eer

    n_frames, group, shape = 3, 3, (4096, 4096)
    drift = np.round(drift_path(n_frames, np.random.default_rng(5), scale=1.5))
    base = np.kron(specimen((512, 512), np.random.default_rng(5), (1.0, 30.0)), np.ones((8, 8))).astype(np.float32)
    sens = _sensitivity(shape, seed=9)
    rng = np.random.default_rng(6)
    fractions = np.empty((n_frames * group, *shape), np.uint8)
    for i, (dx, dy) in enumerate(drift):  # frame i shows the specimen moved by +drift[i]
        p = np.clip(0.3 / group * (1 + 0.5 * np.roll(base, (int(dy), int(dx)), axis=(0, 1))) * sens, 0, 1)
        fractions[i * group:(i + 1) * group] = rng.random((group, *shape), dtype=np.float32) < p
    movie = write_eer(tmp_path / "m.eer", fractions, pixel_size=1.0)
    del fractions
    gain_file = tmp_path / "epu.gain"
    # stored so that MotionCor3 (TIFF rows reversed) needs -FlipGain 1: the file rows are 1/sens as they are
    tifffile.imwrite(gain_file, (1.0 / sens).astype(np.float32))
    res = run_session(gain_file, tmp_path / "gain", Options(rotate=0, flip=1, movie=movie), tmp_path)
    assert res.warnings == [] and res.orientation_scores[0][:2] == (0, 1)
    gain = read_mrc(tmp_path / "gain" / "gain.mrc")[0]
    np.testing.assert_allclose(gain, 1.0 / sens, rtol=1e-6)
    with open_movie(movie, eer_grouping=group) as m:
        ours = correct_movie(m, pixel_size=1.0, gain=gain,
                             settings=MotionSettings(even_odd=False, smooth=False, bin_factor=8))
    rot, flip = relion_gain_codes(0, 1, gain_file)  # the documented conversion: RELION (0, 0) on the .gain
    kw = dict(n_frames=n_frames, eer_grouping=group, bin_factor=8)
    for g, r, f in ((gain_file, rot, flip), (tmp_path / "gain" / "gain.mrc", 0, 0)):  # EPU file; backend staging
        img, traj = _relion(tmp_path, movie, g, r, f, **kw)
        _compare(ours, img, traj, drift)
