"""Small synthetic movies and tilt series with known drift, shared by the motion-correction tests.

Frame ``i`` shows the specimen translated by ``+drift[i]`` (x, y pixels, mean over frames 0), the simulator's
``frame_shifts_px`` convention; counts are Poisson. The gain written next to it is multiplicative
(``corrected = raw * gain``), so raw frames are ``counts / gain``.
"""

from __future__ import annotations

from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd

from tiltflow import star


def specimen(shape: tuple[int, int], rng: np.random.Generator, feature_px: tuple[float, float] = (3.0, 40.0)):
    """Band-limited random texture, unit variance (features between ``feature_px`` pixels)."""
    h, w = shape
    spec = np.fft.rfft2(rng.standard_normal((h, w)))
    f = np.hypot(np.fft.fftfreq(h)[:, None], np.fft.rfftfreq(w)[None, :])
    band = np.exp(-((f * feature_px[0]) ** 2)) * (1 - np.exp(-((f * feature_px[1]) ** 2)))
    img = np.fft.irfft2(spec * band, s=(h, w))
    return img / img.std()


def drift_path(n: int, rng: np.random.Generator, scale: float = 1.0) -> np.ndarray:
    """A beam-induced-looking trajectory: fast start, slowing down, plus a slow linear drift."""
    t = np.arange(n, dtype=float)
    dx = scale * (5 * (1 - np.exp(-t / 2.5)) + 0.3 * t)
    dy = scale * (-3 * (1 - np.exp(-t / 2.0)) - 0.2 * t)
    d = np.stack([dx, dy], axis=1) + rng.normal(0, 0.02, (n, 2))
    return d - d.mean(axis=0)


def frames(shape, drift, *, counts=5.0, contrast=0.3, seed=0, noise=True) -> np.ndarray:
    """``(n, h, w)`` frames of one specimen moved by ``drift``, Poisson counts (or expected counts)."""
    rng = np.random.default_rng(seed)
    h, w = shape
    pad = int(np.ceil(np.abs(drift).max())) + 8
    big = specimen((h + 2 * pad, w + 2 * pad), rng)
    spec = np.fft.rfft2(big)
    fy = np.fft.fftfreq(big.shape[0])[:, None]
    fx = np.fft.rfftfreq(big.shape[1])[None, :]
    out = []
    for dx, dy in drift:
        moved = np.fft.irfft2(spec * np.exp(-2j * np.pi * (fx * dx + fy * dy)), s=big.shape)[pad:pad + h, pad:pad + w]
        lam = np.clip(counts * (1 + contrast * moved), 0, None)
        out.append(rng.poisson(lam).astype(np.float32) if noise else lam.astype(np.float32))
    return np.array(out)


def write_movie(path: Path, data: np.ndarray, pixel_size: float = 1.0) -> Path:
    with mrcfile.new(path, overwrite=True) as m:
        m.set_data(np.ascontiguousarray(data.astype(np.float32)))
        m.voxel_size = pixel_size
    return path


def make_series(root: Path, *, name="TS_01", n_tilts=3, n_frames=8, shape=(96, 128), pixel=2.0,
                dose_per_tilt=3.0, counts=6.0, seed=0, gain=True, movie_dir="frames") -> dict:
    """A tilt series of MRC movies under ``root`` (paths relative to it) with a STAR file and a gain.

    Returns ``{"star", "gain", "drifts" (per tilt, (n_frames, 2)), "movies"}``.
    """
    rng = np.random.default_rng(seed)
    (root / movie_dir).mkdir(parents=True, exist_ok=True)
    gain_img = rng.uniform(0.8, 1.25, size=shape).astype(np.float32) if gain else None
    rows, drifts, movies = [], [], []
    for k in range(n_tilts):
        angle = [0.0, 3.0, -3.0, -6.0, 6.0, 9.0][k % 6]
        movie = f"{movie_dir}/{name}_{k:03d}_{angle:.1f}.mrc"
        d = drift_path(n_frames, rng)
        data = frames(shape, d, counts=counts, seed=seed * 100 + k)
        if gain_img is not None:
            data = data / gain_img
        write_movie(root / movie, data, pixel)
        drifts.append(d)
        movies.append(root / movie)
        rows.append({star.MOVIE: movie, star.FRAME_COUNT: n_frames, star.NOMINAL_TILT: angle,
                     star.NOMINAL_AXIS: 85.0, star.PRE_EXPOSURE: k * dose_per_tilt, star.NOMINAL_DEFOCUS: -4.0,
                     "tfZValue": k, "tfAcquisitionIndex": k, "tfDose": dose_per_tilt})
    glob = {star.VOLTAGE: 300.0, star.CS: 2.7, star.AMP_CONTRAST: 0.1, star.ORIGINAL_PIXEL_SIZE: pixel,
            star.HAND: -1, star.OPTICS_GROUP: "optics1"}
    ts = star.TiltSeriesStar(name, glob, pd.DataFrame(rows))
    star_path = star.write_tilt_series(ts, root / "import" / name / f"{name}.star")
    gain_path = None
    if gain_img is not None:
        gain_path = root / "gain" / "gain.mrc"
        gain_path.parent.mkdir(parents=True, exist_ok=True)
        with mrcfile.new(gain_path, overwrite=True) as m:
            m.set_data(gain_img)
            m.voxel_size = pixel
    return {"star": star_path, "gain": gain_path, "drifts": drifts, "movies": movies}


def rms_error(estimated_drift: np.ndarray, true_drift: np.ndarray) -> float:
    """RMS over frames of |estimate - truth| after removing each one's mean."""
    e = estimated_drift - estimated_drift.mean(axis=0)
    t = true_drift - true_drift.mean(axis=0)
    return float(np.sqrt(((e - t) ** 2).sum(axis=1).mean()))


# --- the helpers themselves ------------------------------------------------------------------------


def test_frames_follow_the_drift_convention():
    """Frame i's content is the specimen moved by +drift[i]: a bright spot moves with the drift."""
    drift = np.array([[-2.0, 1.0], [2.0, -1.0]])
    fr = frames((64, 64), drift, counts=1000, contrast=0.5, noise=False)
    diff = fr[1] - fr[0]
    # the cross-correlation of frame 1 with frame 0 peaks at the displacement (+4, -2)
    cc = np.fft.irfft2(np.fft.rfft2(fr[1] - fr[1].mean()) * np.conj(np.fft.rfft2(fr[0] - fr[0].mean())), s=(64, 64))
    py, px = np.unravel_index(np.argmax(cc), cc.shape)
    assert ((px + 32) % 64 - 32, (py + 32) % 64 - 32) == (4, -2)
    assert np.abs(diff).max() > 0


def test_make_series_writes_a_readable_tilt_series(tmp_path):
    s = make_series(tmp_path, n_tilts=2, n_frames=4, shape=(32, 48))
    ts = star.read_tilt_series(s["star"])
    assert len(ts.tilts) == 2 and ts.pixel_size == 2.0
    with mrcfile.open(s["movies"][0]) as m:
        assert m.data.shape == (4, 32, 48)
