"""A simulated session is what SerialEM writes, and its ground truth describes it (tiny preset)."""

from __future__ import annotations

import hashlib
import re
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from tiltflow.io.gain import orient_gain
from tiltflow.io.movies import open_movie
from tiltflow.io.mrc import read_mrc
from tiltflow.simulate import load_truth, make_config, simulate_session

CFG = dict(seed=5, gain_rotate=1, gain_flip=2, size=(160, 128), dark_tilts=1, threads=1, tilt_error=0.3)


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    root = tmp_path_factory.mktemp("a") / "session"
    truth = simulate_session(make_config("tiny", **CFG), root)
    return root, truth


def _movie(root: Path, t) -> np.ndarray:
    with open_movie(root / t.movie) as m:
        return m.read(dtype=np.float64)


def _gain(root: Path, truth) -> np.ndarray:
    gain, _ = read_mrc(root / truth.gain.file)
    return orient_gain(gain, truth.gain.rotate, truth.gain.flip)


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_the_same_bytes(tmp_path):
    small = dict(CFG, tilt_step=25.0, size=(96, 96))
    a, b, c = tmp_path / "a" / "session", tmp_path / "b" / "session", tmp_path / "c" / "session"
    simulate_session(make_config("tiny", **small), a)
    simulate_session(make_config("tiny", **dict(small, threads=2)), b)  # parallel tilts: same bytes
    simulate_session(make_config("tiny", **dict(small, seed=6)), c)
    da, db, dc = _digests(a), _digests(b), _digests(c)
    assert len(da) == 5 + 4  # 5 movies, mdoc, gain, phantom, truth and nothing else
    assert da == db
    movies = [k for k in da if k.endswith(".tif")]
    assert all(da[k] != dc[k] for k in movies)


def test_output_files_and_truth_schema(sim):
    root, truth = sim
    t = load_truth(root)
    assert t.version == 1 and t.pixel_size == 8.0 and t.voltage == 300.0 and t.amplitude_contrast == 0.1
    assert (t.gain.file, t.gain.rotate, t.gain.flip) == ("gain.mrc", 1, 2)
    (s,) = t.series
    assert (s.name, s.mdoc, s.tilt_axis, s.hand, s.scheme) == ("TS_01", "TS_01.mrc.mdoc", 85.0, 1, "dose-symmetric")
    assert [x.z_value for x in s.tilts] == list(range(11)) == [x.acquisition_index for x in s.tilts]
    nominal = [x.nominal_tilt_angle for x in s.tilts]
    assert np.allclose(nominal, [0, 10, -10, -20, 20, 30, -30, -40, 40, 50, -50], atol=0.05)
    err = s.angles - s.nominal_angles
    assert 0.05 < np.abs(err).max() < 1.5  # --tilt-error 0.3: true angles differ from the mdoc's
    assert [x.pre_exposure for x in s.tilts] == [3.0 * i for i in range(11)]
    assert [x.dark for x in s.tilts] == [False] * 10 + [True]
    for x in s.tilts:
        assert (root / x.movie).is_file()
        assert re.fullmatch(r"TS_01_\d{3}_-?\d+\.\d\.tif", x.movie)
        fs = np.array(x.frame_shifts_px)
        assert fs.shape == (4, 2) and np.allclose(fs.sum(axis=0), 0, atol=1e-9)
        assert x.defocus_u >= x.defocus_v and 3e4 <= x.defocus_v <= 5e4 and -90 <= x.defocus_angle < 90
    assert len({round(x.defocus_u) for x in s.tilts}) > 5  # defocus changes across the series
    vol, apix = read_mrc(root / s.phantom)
    b = s.phantom_binning
    assert apix == pytest.approx(s.phantom_pixel_size) == pytest.approx(8.0 * b)
    assert vol.shape == tuple(int(np.ceil(n / b)) for n in s.tomogram_size_xyz[::-1]) and vol.max() > 0
    assert s.tomogram_size_xyz[:2] == [160, 128] and s.tomogram_size_xyz[2] >= 60 * 10 / 8
    assert any(p["in_box"] for p in s.particles) and s.gold and s.vesicles
    assert "hand" in t.conventions and "frame_shifts_px" in t.conventions


def test_mdoc_has_serialem_layout(sim):
    root, truth = sim
    s = truth.series[0]
    text = (root / s.mdoc).read_text()
    head = text.split("[T =")[0].splitlines()
    assert [ln.split(" = ")[0] for ln in head if ln] == ["PixelSpacing", "Voltage", "Version", "ImageFile",
                                                         "ImageSize", "DataMode"]
    assert "ImageSize = 160 128" in head and "ImageFile = TS_01.mrc" in head
    titles = re.findall(r"^\[T = (.*)\]$", text, re.M)
    assert titles[0].startswith("SerialEM:") and "Tilt axis angle = 85.0, binning = 1" in titles[1]
    sections = re.split(r"^\[ZValue = (\d+)\]$", text, flags=re.M)[1:]
    zs = [int(z) for z in sections[0::2]]
    assert zs == list(range(11))
    times = []
    for z, body in zip(zs, sections[1::2], strict=True):
        keys = dict(ln.split(" = ", 1) for ln in body.strip().splitlines())
        t = s.tilts[z]
        assert float(keys["TiltAngle"]) == t.nominal_tilt_angle
        assert float(keys["ExposureDose"]) == 3.0 and float(keys["PriorRecordDose"]) == t.pre_exposure
        assert keys["FrameDosesAndNumber"] == "0.75 4" and keys["NumSubFrames"] == "4"
        assert keys["SubFramePath"] == "X:\\Frames\\session\\" + t.movie
        assert float(keys["TargetDefocus"]) == -4.0 and float(keys["PixelSpacing"]) == 8.0
        assert float(keys["RotationAngle"]) == 175.0
        assert re.fullmatch(r"\d\d-[A-Z][a-z]{2}-\d{4}  \d\d:\d\d:\d\d", keys["DateTime"])
        times.append(datetime.strptime(keys["DateTime"], "%d-%b-%Y  %H:%M:%S"))
        mn, mx, mean = (float(v) for v in keys["MinMaxMean"].split())
        assert 0 <= mn < mean < mx
    assert times == sorted(times) and len(set(times)) == len(times)
    assert text.endswith("\n")


def test_metadata_library_reads_the_simulated_session_back(sim):
    from tiltflow.metadata import session as session_mod

    root, truth = sim
    s = truth.series[0]
    sess = session_mod.load_session(root)
    assert not [k for k in sess.skipped if k.is_problem]
    ts = sess.get("TS_01")
    assert ts.tilt_axis == 85.0 and ts.pixel_size == 8.0 and ts.writer == "SerialEM"
    assert [t.tilt_angle for t in ts.tilts] == [t.nominal_tilt_angle for t in s.tilts]  # acquisition order
    assert [t.dose for t in ts.tilts] == [3.0] * 11
    assert [t.pre_exposure for t in ts.tilts] == pytest.approx([t.pre_exposure for t in s.tilts])
    assert all(t.movie is not None and t.movie.name == Path(x.movie).name for t, x in zip(ts.tilts, s.tilts, strict=True))
    assert ts.scheme == "dose-symmetric"


def test_gain_reference_removes_the_detector_pattern(sim):
    root, truth = sim
    g = _gain(root, truth)
    s = truth.series[0]
    raw = sum(_movie(root, t).sum(axis=0) for t in s.tilts if not t.dark)
    assert g.shape == raw.shape == (128, 160)
    sens = 1.0 / g
    r_raw = np.corrcoef(raw.ravel(), sens.ravel())[0, 1]
    r_corr = np.corrcoef((raw * g).ravel(), sens.ravel())[0, 1]
    assert r_raw > 0.7 and abs(r_corr) < 0.25
    # the file holds the gain in camera orientation: used as stored, it does not flatten the movies
    stored, _ = read_mrc(root / truth.gain.file)
    assert stored.shape == (160, 128)
    unrotated = np.rot90(stored, k=1)  # some other orientation of the right shape
    r_wrong = abs(np.corrcoef((raw * unrotated).ravel(), sens.ravel())[0, 1])
    assert r_wrong > 0.35 and r_wrong > abs(r_corr) + 0.2


def test_counts_follow_the_dose(sim):
    root, truth = sim
    s = truth.series[0]
    g = _gain(root, truth)
    per_frame = s.dose_per_tilt / truth.frames * truth.pixel_size**2  # electrons per pixel and frame
    for t in s.tilts:
        mean = float((_movie(root, t) * g).mean())
        want = per_frame * t.transmission * (0.02 if t.dark else 1.0)
        assert mean == pytest.approx(want, rel=0.03), t.movie  # amplitude contrast costs < 1 %
    assert s.tilts[0].transmission == pytest.approx(np.exp(-60 / 350 / np.cos(np.radians(s.tilts[0].tilt_angle))))


def _shift(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(dx, dy) such that b(x) = a(x - d), by cross-correlation with a parabolic sub-pixel peak."""
    a, b = a - a.mean(), b - b.mean()
    c = np.fft.fftshift(np.fft.ifft2(np.conj(np.fft.fft2(a)) * np.fft.fft2(b)).real)
    iy, ix = np.unravel_index(np.argmax(c), c.shape)

    def sub(m, z, p):
        return 0.5 * (m - p) / (m - 2 * z + p)

    return np.array([ix - c.shape[1] // 2 + sub(c[iy, ix - 1], c[iy, ix], c[iy, ix + 1]),
                     iy - c.shape[0] // 2 + sub(c[iy - 1, ix], c[iy, ix], c[iy + 1, ix])])


def test_frame_drift_in_the_truth_is_the_motion_in_the_movie(sim):
    root, truth = sim
    g = _gain(root, truth)
    s = truth.series[0]
    moved = 0
    for t in s.tilts[:5]:
        fr = _movie(root, t) * g
        fs = np.array(t.frame_shifts_px)
        want = fs[-1] - fs[0]
        got = _shift(fr[0], fr[-1])
        assert np.linalg.norm(got - want) < 0.35, (t.movie, got, want)
        moved += np.linalg.norm(want) > 1.0
    assert moved >= 2  # the test has teeth: frames really move by more than a pixel


def test_mrc_movies_in_a_frames_folder(tmp_path):
    import struct

    root = tmp_path / "mrcsession"
    truth = simulate_session(make_config("tiny", tilt_step=25.0, movie_format="mrc", frames_subdir="frames",
                                         threads=1, dose_per_tilt=4.3), root)
    s = truth.series[0]
    assert all(t.movie.startswith("frames/") and t.movie.endswith(".mrc") for t in s.tilts)
    head = (root / s.tilts[0].movie).read_bytes()[:1024]
    mode, stamp, flags = struct.unpack("<i", head[12:16])[0], *struct.unpack("<2i", head[152:160])
    assert (mode, stamp, flags) == (0, 1146047817, 0)  # IMOD's unsigned bytes, as SerialEM writes frames
    with open_movie(root / s.tilts[0].movie) as m:
        assert m.n_frames == 4 and m.shape == (128, 128) and m.dtype == np.uint8
        summed = m.read(dtype=np.float64).sum(axis=0)
    text = (root / s.mdoc).read_text()
    assert "SubFramePath = X:\\Frames\\mrcsession\\frames\\TS_01_000_0.0.mrc" in text
    mmm = re.search(r"^MinMaxMean = (.*)$", text, re.M).group(1).split()  # ZValue 0, from the counts in memory
    assert [float(mmm[0]), float(mmm[1])] == [summed.min(), summed.max()]
