"""Builders of test inputs shared by several test modules: find one here before writing a new one.

- Motion correction: :func:`motion_series` (MRC movies with a known drift, a gain, the import STAR file) and
  its pieces :func:`specimen`, :func:`drift_path`, :func:`frames`, :func:`write_movie`; :func:`rms_error`.
- Reconstruction: :func:`aligned_series` (Gaussian blobs at ``POS`` projected with RELION's model, the stack
  and the align step's STAR file), :func:`phantom_at` (the truth at a tomogram's voxels), :func:`corr`,
  :func:`reconstruct_cli`. A test changes the blobs with ``monkeypatch.setattr(builders, "POS", ...)``.
- Reports: :func:`results_folder` (a results folder as ``tiltflow run`` writes it, through any step).

Tests import it as ``import builders`` / ``from builders import ...`` (pytest puts tests/ on sys.path).
Programs a test needs from the machine are found in ``programs.py``.
"""

from __future__ import annotations

from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd
import tifffile

from tiltflow import star
from tiltflow.cli import main as cli
from tiltflow.geometry import centre, project_points
from tiltflow.io.mrc import write_mrc

# --- motion correction: movies with a known drift ----------------------------------------------------------
# Frame ``i`` shows the specimen translated by ``+drift[i]`` (x, y pixels, mean over frames 0), the simulator's
# ``frame_shifts_px`` convention; counts are Poisson. The gain written next to it is multiplicative
# (``corrected = raw * gain``), so raw frames are ``counts / gain``.


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


def motion_series(root: Path, *, name="TS_01", n_tilts=3, n_frames=8, shape=(96, 128), pixel=2.0,
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


def as_tiff(series: dict) -> dict:
    """Rewrite the series' MRC movies as TIFF (uint16 counts) and point the STAR file at them."""
    ts = star.read_tilt_series(series["star"])
    tiffs = []
    for i, movie in enumerate(series["movies"]):
        tif = movie.with_suffix(".tif")
        tifffile.imwrite(tif, np.round(mrcfile.read(movie)).astype(np.uint16))
        movie.unlink()
        ts.tilts.loc[ts.tilts.index[i], star.MOVIE] = str(Path(ts.tilts[star.MOVIE].iloc[i]).with_suffix(".tif"))
        tiffs.append(tif)
    star.write_tilt_series(ts, series["star"])
    return {**series, "movies": tiffs}


def rms_error(estimated_drift: np.ndarray, true_drift: np.ndarray) -> float:
    """RMS over frames of |estimate - truth| after removing each one's mean."""
    e = estimated_drift - estimated_drift.mean(axis=0)
    t = true_drift - true_drift.mean(axis=0)
    return float(np.sqrt(((e - t) ** 2).sum(axis=1).mean()))


# --- reconstruction: an aligned series of Gaussian blobs with known geometry ----------------------------
TS_PX = 5.0  # A, bin-1 micrographs
N1 = (134, 128)  # x, y bin-1 image size; 134 % 3 = 2: stack binning 3 leaves an offset of 1 px
RNG = np.random.default_rng(3)
NB = 14
POS = np.column_stack([RNG.uniform(-45, 45, NB), RNG.uniform(-45, 45, NB), RNG.uniform(-8, 8, NB)])  # bin-1 px
SIG = RNG.uniform(4, 6, NB)
AMP = RNG.uniform(0.5, 1.5, NB)
TILTS = np.arange(-60, 61, 4.0)
SHIFTS = RNG.normal(0, 6, (len(TILTS), 2))  # bin-1 px
ZROT = 84.0


def blob_images(shifts=SHIFTS, noise=0.0, seed=0):
    n = len(TILTS)
    uv = project_points(POS, np.zeros(n), TILTS, np.full(n, ZROT), shifts)
    yy, xx = np.mgrid[: N1[1], : N1[0]]
    out = np.zeros((n, N1[1], N1[0]))
    for i in range(n):
        for (u, v), s, a in zip(uv[i], SIG, AMP, strict=True):
            r2 = (xx - centre(N1[0]) - u) ** 2 + (yy - centre(N1[1]) - v) ** 2
            out[i] += a * np.sqrt(2 * np.pi) * s * np.exp(-r2 / (2 * s * s))
    if noise:
        out += noise * out.std() * np.random.default_rng(seed).normal(size=out.shape)
    return out.astype(np.float32) + 10.0  # an offset, as real images have


def _bin(stack, b):
    """Average b x b blocks of the central region, as the stack step (newstack -bin) does."""
    n, ny, nx = stack.shape
    oy, ox = (ny % b) // 2, (nx % b) // 2
    my, mx = ny // b, nx // b
    return stack[:, oy:oy + my * b, ox:ox + mx * b].reshape(n, my, b, mx, b).mean(axis=(2, 4))


def aligned_series(root, b=3, halves=False, rows=None, name="TS_01"):
    """Micrographs, a stack binned by ``b`` (+ even/odd) and the align step's STAR file."""
    d = root / "stack" / name
    d.mkdir(parents=True, exist_ok=True)
    imgs = blob_images()
    mics = []
    for i in range(len(TILTS)):
        p = root / "motioncor" / name / f"{name}_{i:03d}.mrc"
        write_mrc(p, imgs[i], TS_PX)
        mics.append(str(p.relative_to(root)))
    write_mrc(d / f"{name}.mrc", _bin(imgs, b), TS_PX * b)
    g = {star.TOMO_NAME: name, star.TS_PIXEL_SIZE: TS_PX, star.VOLTAGE: 300.0,
         "tfStack": f"stack/{name}/{name}.mrc", "tfStackBinning": b, "tfStackPixelSize": TS_PX * b}
    if halves:
        for k, suffix in (("tfStackEven", "_EVN"), ("tfStackOdd", "_ODD")):
            write_mrc(d / f"{name}{suffix}.mrc", _bin(blob_images(noise=0.3, seed=len(suffix) + ord(suffix[1])), b), TS_PX * b)
            g[k] = f"stack/{name}/{name}{suffix}.mrc"
    tilts = pd.DataFrame({
        star.MICROGRAPH: mics, star.NOMINAL_TILT: TILTS, star.X_TILT: 0.0, star.Y_TILT: TILTS, star.Z_ROT: ZROT,
        star.X_SHIFT: SHIFTS[:, 0] * TS_PX, star.Y_SHIFT: SHIFTS[:, 1] * TS_PX,
        star.PRE_EXPOSURE: np.arange(len(TILTS)) * 3.0,
    })
    if rows is not None:
        tilts = tilts.iloc[:rows]
    path = root / "align" / name / f"{name}.star"
    star.write_tilt_series(star.TiltSeriesStar(name, g, tilts), path)
    return path.relative_to(root)


def phantom_at(size_bin1, shape, binning):
    """The phantom sampled at the tomogram's voxels: voxel i <-> bin-1 position binning * i."""
    axes = [binning * np.arange(n) - (s // 2) for n, s in zip(shape, size_bin1[::-1], strict=True)]
    z, y, x = np.meshgrid(*axes, indexing="ij")
    v = np.zeros(shape)
    for p, s, a in zip(POS, SIG, AMP, strict=True):
        v += a * np.exp(-((x - p[0]) ** 2 + (y - p[1]) ** 2 + (z - p[2]) ** 2) / (2 * s * s))
    return v


def corr(a, b) -> float:
    a = np.asarray(a, float).ravel() - np.mean(a)
    b = np.asarray(b, float).ravel() - np.mean(b)
    return float(a @ b / np.sqrt((a @ a) * (b @ b)))


def reconstruct_cli(root, monkeypatch, *args):
    """``tiltflow reconstruct`` in-process with ``--root root``; these series carry no CTF, so no CTF correction unless a test asks for one."""
    monkeypatch.setenv("TILTFLOW_THREADS", "1")
    extra = [] if "--ctf-correction" in args else ["--ctf-correction", "none"]
    return cli(["reconstruct", "--root", str(root), *[str(a) for a in args], *extra, "--device", "cpu"])


# --- reports: a results folder as `tiltflow run` writes it ----------------------------------------------------
ANGLES = [0.0, 10.0, -10.0, -20.0, 20.0, 30.0, -30.0, -40.0, 40.0]


def _mic(i: int, dark: bool = False) -> np.ndarray:
    rng = np.random.default_rng(i)
    f = np.fft.rfft2(rng.normal(size=(96, 96)))
    ky, kx = np.meshgrid(np.fft.fftfreq(96), np.fft.rfftfreq(96), indexing="ij")
    s = np.fft.irfft2(f * np.exp(-(kx**2 + ky**2) / (2 * 0.04**2)), s=(96, 96))
    return rng.poisson(200.0 * (0.02 if dark else 1.0) * (1 + 0.3 * s / s.std()).clip(0)).astype(np.float32)


def _write(path: Path, data: np.ndarray, ps: float = 4.0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with mrcfile.new(path, overwrite=True) as m:
        m.set_data(data.astype(np.float32))
        m.voxel_size = ps


def results_folder(out: Path, names=("TS_01", "TS_02"), through: str = "reconstruct") -> Path:
    """A results folder as `tiltflow run` writes it: motioncor/ctf (synthesised), then the real exclude and
    stack steps, then align/reconstruct STARs with a small tomogram; ``out`` is the project root.
    """
    from tiltflow.steps import exclude, stack
    from tiltflow.steps.common import run_star_step

    out.mkdir(parents=True, exist_ok=True)
    for k, name in enumerate(names):
        rows = []
        for i, a in enumerate(ANGLES):
            mic = Path("motioncor") / name / f"{name}_{i:03d}_{a:.1f}.mrc"
            _write(out / mic, _mic(10 * k + i, dark=(i == 8)))
            row = {star.NOMINAL_TILT: a, star.NOMINAL_AXIS: 85.0, star.PRE_EXPOSURE: 3.0 * i, "tfDose": 3.0,
                   star.MICROGRAPH: str(mic), star.MOTION_TOTAL: 90.0 if i == 3 else 6.0 + i,
                   star.MOTION_EARLY: 2.0, star.MOTION_LATE: 4.0 + i,
                   star.DEFOCUS_U: 30000.0 + 300 * i, star.DEFOCUS_V: 29000.0 + 300 * i,
                   star.DEFOCUS_ANGLE: 30.0, star.CTF_MAX_RES: 24.0 if i == 5 else 8.0 + 0.5 * i,
                   star.CTF_FOM: 0.2, "tfAcquisitionIndex": i}
            if k == 0:  # a saved diagnostic spectrum for the first series
                ps = Path("ctf") / name / f"{name}_{i:03d}_PS.mrc"
                _write(out / ps, np.fft.fftshift(np.abs(np.fft.fft2(_mic(i))) ** 2))
                row[star.CTF_IMAGE] = f"{ps}:mrc"
            rows.append(row)
        g = {star.TS_PIXEL_SIZE: 4.0, star.VOLTAGE: 300.0, star.CS: 2.7, star.AMP_CONTRAST: 0.1, star.HAND: 1}
        ctf = star.write_tilt_series(star.TiltSeriesStar(name, g, pd.DataFrame(rows)),
                                     out / "ctf" / name / f"{name}.star")
        (out / "ctf" / name / "console.log").write_text(f"x INFO start ctf {name}\nx INFO done ctf {name} in 12.5 s\n")
        if through == "ctf":
            continue
        ex = run_star_step("exclude", ctf, "exclude", exclude.Options(min_ctf_resolution=15.0, hand="keep",
                                                                      exclude_tilts=f"{name}:2"), out)
        st = star.read_tilt_series(run_star_step("stack", ex, "stack", stack.Options(), out))
        al = st.copy()
        n = len(al.tilts)
        al.tilts[star.X_TILT] = 0.0
        al.tilts[star.Y_TILT] = al.tilts[star.NOMINAL_TILT]
        al.tilts[star.Z_ROT] = 84.2
        al.tilts[star.X_SHIFT] = np.linspace(-20, 20, n)
        al.tilts[star.Y_SHIFT] = np.linspace(5, -5, n)
        al.tilts[star.TF_ALIGN_RESIDUAL] = np.linspace(1.0, 3.0, n)
        al.globals["tfHandMeasured"] = 1 if k == 0 else -1
        al.globals["tfHandZ"] = 5.0
        al.globals[star.TS_STAR_FILE] = f"align/{name}/{name}.star"
        star.write_tilt_series(al, out / "align" / name / f"{name}.star")
        rec = al.copy()
        tomo = Path("reconstruct") / name / f"rec_{name}.mrc"
        vol = np.random.default_rng(k).normal(size=(16, 48, 48)).astype(np.float32)
        vol[6:10, 20:28, 20:28] += 5.0
        _write(out / tomo, vol, 10.0)
        rec.globals[star.TOMOGRAM] = str(tomo)
        if k == 0:  # TS_01: CTF-corrected, with the uncorrected central slices reconstruct writes
            rec.globals.update({"tfCtfCorrection": "phaseflip", "tfDoseWeighting": 1})
            rec.tilts["tfDoseHalfWeightAngst"] = rec.tilts[star.PRE_EXPOSURE].astype(float) * 0.5
            for key, img, sfx in (("tfTomogramUncorrectedXY", vol[7], "xy"), ("tfTomogramUncorrectedXZ",
                                                                             vol[:, 24], "xz")):
                p = Path("reconstruct") / name / f"rec_{name}_uncorrected_{sfx}.mrc"
                _write(out / p, -img, 10.0)
                rec.globals[key] = str(p)
        star.write_tilt_series(rec, out / "reconstruct" / name / f"{name}.star")
    return out


# --- stack: the motion-corrected micrographs of one series (acquisition order) ---------------------------------
MIC_NAME = "TS_01"
MIC_ANGLES = [0.0, 3.0, -3.0, -6.0, 6.0, 9.0, -9.0]  # dose-symmetric acquisition order
MIC_PS = 1.5
MIC_SHAPE = (24, 30)  # ny, nx


def _mic_image(i: int) -> np.ndarray:
    rng = np.random.default_rng(i)
    return (rng.normal(size=MIC_SHAPE) + 10 * i).astype(np.float32)


def micrograph_series(root: Path, halves: bool = True, excluded: dict[int, str] | None = None,
                angles: list[float] = MIC_ANGLES, shapes: dict[int, tuple[int, int]] | None = None) -> Path:
    """Write micrographs + the per-series STAR (acquisition order) under ``root``; return the STAR."""
    mc = root / "motioncor" / MIC_NAME
    mc.mkdir(parents=True)
    rows = []
    for i, a in enumerate(angles):
        stem = f"{MIC_NAME}_{i:03d}_{a:.1f}"
        shape = (shapes or {}).get(i, MIC_SHAPE)
        img = _mic_image(i) if shape == MIC_SHAPE else np.zeros(shape, np.float32)
        for suffix, data in (("", img), ("_EVN", img + 0.5), ("_ODD", img - 0.5)):
            with mrcfile.new(mc / f"{stem}{suffix}.mrc") as m:
                m.set_data(data)
                m.voxel_size = MIC_PS
        row = {
            star.MOVIE: f"frames/{stem}.tif",
            star.NOMINAL_TILT: a,
            star.NOMINAL_AXIS: 85.0,
            star.PRE_EXPOSURE: 3.0 * i,
            star.NOMINAL_DEFOCUS: -4.0,
            star.TF_DOSE: 3.0,
            star.MICROGRAPH: f"motioncor/{MIC_NAME}/{stem}.mrc",
        }
        if halves:
            row[star.MICROGRAPH_EVEN] = f"motioncor/{MIC_NAME}/{stem}_EVN.mrc"
            row[star.MICROGRAPH_ODD] = f"motioncor/{MIC_NAME}/{stem}_ODD.mrc"
        if excluded is not None:
            row[star.TF_EXCLUDED] = int(i in excluded)
            row[star.TF_EXCLUDE_REASON] = excluded.get(i, "")
        rows.append(row)
    ts = star.TiltSeriesStar(MIC_NAME, {star.TS_PIXEL_SIZE: MIC_PS, star.VOLTAGE: 300.0}, pd.DataFrame(rows))
    return star.write_tilt_series(ts, mc / f"{MIC_NAME}.star")
