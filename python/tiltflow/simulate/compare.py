"""How close a run came to the simulator's ground truth: the one place for these metrics.

Why one place: the demo summary, the runner tests and the benchmarks in ``bench/`` must report the same
numbers for the same results, with the same gauge and sign conventions (those of ``truth.CONVENTIONS``):

- motion: the estimated drift (``Trajectory.drift``: content moved by +drift, mean removed) against the
  true ``frame_shifts_px`` (mean removed), RMS over frames and tilts, movie pixels;
- defocus: the fitted mean defocus (U+V)/2 against the true one, RMS over tilts, micrometres;
- alignment shifts: RELION shifts in movie pixels against the truth after removing the gauge - a 3-D
  translation of the tomogram origin, which moves tilt i's shift by ``(Rz Ry d)[:2]`` and cannot be
  observed - fitted by least squares; RMS over tilts. The truth is ``shift_px`` plus where the motion-corrected
  sum was registered (the first used frame's drift: ``_sum_reference_offsets``), since the alignment is of
  the sums, not of the mean-position images;
- tilt axis: median fitted ``rlnTomoZRot`` minus the true axis, wrapped to [-90, 90) degrees; tilt angles:
  RMS of fitted ``rlnTomoYTilt`` minus the true angle;
- tomogram: Pearson correlation of the (contrast-inverted, dark = dense) tomogram with the phantom sampled
  on the tomogram's grid (RELION's voxel positions), both low-pass filtered, at the best integer shift
  within a few voxels (the same gauge, in 3-D);
- tomogram resolution: the Fourier shell correlation of the same pair at that shift, the phantom low-passed
  to the tomogram's Nyquist before it is sampled (no aliasing), and the resolutions where it first drops
  below 0.5 and 0.143 (what a CTF correction must improve beyond the first CTF zero).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tiltflow import star
from tiltflow.columns import TF_EXCLUDED
from tiltflow.errors import TiltflowError
from tiltflow.geometry import projection_rotations
from tiltflow.shells import rfft_shells
from tiltflow.simulate.truth import GroundTruth, SeriesTruth, load_truth


# --- the metrics on arrays (what benchmarks call directly) -------------------------------------------------
def motion_rms_px(estimated_drift: np.ndarray, true_frame_shifts: np.ndarray) -> float:
    """RMS of (drift - truth) over the frames both have, each mean-removed over those frames (pixels)."""
    est = np.asarray(estimated_drift, float).reshape(-1, 2)
    tru = np.asarray(true_frame_shifts, float).reshape(-1, 2)
    ok = np.isfinite(est).all(axis=1) & np.isfinite(tru).all(axis=1)
    if not ok.any():
        return math.nan
    d = (est[ok] - est[ok].mean(axis=0)) - (tru[ok] - tru[ok].mean(axis=0))
    return float(np.sqrt((d ** 2).sum(axis=1).mean()))


def rms(values) -> float:
    """Root mean square of the finite values (nan when there are none)."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    return float(np.sqrt((v ** 2).mean())) if v.size else math.nan


def gauge_free_shift_rms(est_px: np.ndarray, true_px: np.ndarray, tilt_deg: np.ndarray, axis_deg) -> float:
    """RMS of the shift error after removing the best 3-D origin translation (pixels)."""
    est = np.asarray(est_px, float).reshape(-1, 2)
    tru = np.asarray(true_px, float).reshape(-1, 2)
    n = len(est)
    if n == 0:
        return math.nan
    p = projection_rotations(0.0, np.asarray(tilt_deg, float), np.broadcast_to(axis_deg, (n,)))[:, :2, :]
    a = p.reshape(2 * n, 3)
    b = (est - tru).reshape(2 * n)
    d, *_ = np.linalg.lstsq(a, b, rcond=None)
    resid = (b - a @ d).reshape(n, 2)
    return float(np.sqrt((resid ** 2).sum(axis=1).mean()))


def axis_error_deg(estimated: float, true: float) -> float:
    """Signed axis difference wrapped to [-90, 90): an axis and its opposite are the same line."""
    return float((estimated - true + 90.0) % 180.0 - 90.0)


def _lowpass(vol: np.ndarray, pixel: float, resolution: float) -> np.ndarray:
    """Gaussian low-pass to ``resolution`` A (amplitude 1/e at 1/resolution)."""
    f = np.fft.rfftn(vol)
    freqs = [np.fft.fftfreq(n, d=pixel) for n in vol.shape[:-1]] + [np.fft.rfftfreq(vol.shape[-1], d=pixel)]
    k2 = sum(np.meshgrid(*[q ** 2 for q in freqs], indexing="ij", sparse=True))
    return np.fft.irfftn(f * np.exp(-k2 * resolution ** 2), s=vol.shape, axes=(0, 1, 2))


def sample_phantom(phantom: np.ndarray, phantom_binning: int, phantom_size_xyz, tomo_shape_zyx,
                   tomo_binning: float, tomo_size_xyz) -> tuple[np.ndarray, np.ndarray]:
    """The phantom at the tomogram's voxel positions (linear interpolation) and the inside mask.

    Tomogram voxel i sits at bin-1 position ``B*i - int(S/2)`` relative to the centre (RELION); phantom voxel
    j at ``b*j + (b-1)/2 - int(S_truth/2)`` (truth CONVENTIONS['phantom']).
    """
    import torch

    b = float(phantom_binning)
    coords = []
    for axis in range(3):  # x, y, z
        n_tomo = tomo_shape_zyx[2 - axis]
        rel = tomo_binning * np.arange(n_tomo) - int(tomo_size_xyz[axis] // 2)
        j = (rel + int(phantom_size_xyz[axis] // 2) - (b - 1) / 2) / b
        n_ph = phantom.shape[2 - axis]
        coords.append(2.0 * j / max(n_ph - 1, 1) - 1.0)  # align_corners=True normalisation
    gz, gy, gx = np.meshgrid(coords[2], coords[1], coords[0], indexing="ij")
    grid = torch.from_numpy(np.stack([gx, gy, gz], axis=-1)[None].astype(np.float32))
    vol = torch.from_numpy(np.ascontiguousarray(phantom, dtype=np.float32))[None, None]
    out = torch.nn.functional.grid_sample(vol, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    inside = (np.abs(gx) <= 1) & (np.abs(gy) <= 1) & (np.abs(gz) <= 1)
    return out[0, 0].numpy().astype(np.float64), inside


def best_shift_correlation(a: np.ndarray, b: np.ndarray, mask: np.ndarray, max_shift: int = 6) -> float:
    """Pearson correlation of ``a`` and ``b`` inside ``mask`` at the best integer shift of ``a``."""
    return best_shift(a, b, mask, max_shift)[0]


def best_shift(a: np.ndarray, b: np.ndarray, mask: np.ndarray, max_shift: int = 6) -> tuple[float, tuple[int, int, int]]:
    """``(correlation, (dz, dy, dx))``: ``np.roll(a, shift)`` matches ``b`` best inside ``mask``."""
    a = np.where(mask, a - a[mask].mean(), 0.0)
    b = np.where(mask, b - b[mask].mean(), 0.0)
    norm = math.sqrt(float((a ** 2).sum()) * float((b ** 2).sum()))
    if norm == 0:
        return math.nan, (0, 0, 0)
    shape = [n + max_shift for n in a.shape]  # padded: no wrap-around within max_shift
    ax = (0, 1, 2)
    cc = np.fft.irfftn(np.conj(np.fft.rfftn(a, shape, axes=ax)) * np.fft.rfftn(b, shape, axes=ax), s=shape, axes=ax)
    best, shift = -math.inf, (0, 0, 0)
    r = range(-max_shift, max_shift + 1)
    xs = np.r_[0:max_shift + 1, -max_shift:0]
    for dz in r:
        for dy in r:
            row = cc[dz, dy, xs]
            j = int(np.argmax(row))
            if float(row[j]) > best:
                best, shift = float(row[j]), (dz, dy, int(xs[j]))
    return best / norm, shift


def tomogram_correlation(tomogram: np.ndarray, tomo_pixel: float, tomo_binning: float, tomo_size_xyz,
                         series: SeriesTruth, phantom: np.ndarray, resolution: float | None = None,
                         max_shift: int = 6) -> float:
    """Correlation of ``-tomogram`` (dark = dense) with the phantom; see the module docstring."""
    sampled, inside = sample_phantom(phantom, series.phantom_binning, series.tomogram_size_xyz, tomogram.shape,
                                     tomo_binning, tomo_size_xyz)
    if inside.sum() < 27:
        return math.nan
    res = resolution if resolution is not None else max(4.0 * tomo_pixel, 30.0)
    t = _lowpass(-np.asarray(tomogram, float), tomo_pixel, res)
    p = _lowpass(sampled, tomo_pixel, res)
    return best_shift_correlation(t, p, inside, max_shift)


@dataclass
class ShellCorrelation:
    """Fourier shell correlation against the phantom: shells (1/A) and the resolutions (A) at 0.5, 0.143."""

    frequency: np.ndarray  # 1/A, shell centres
    fsc: np.ndarray
    resolution_05: float
    resolution_0143: float


def fourier_shell_correlation(a: np.ndarray, b: np.ndarray, pixel: float) -> tuple[np.ndarray, np.ndarray]:
    """FSC of two volumes in shells one voxel of the smallest axis wide, up to Nyquist: (1/A, FSC)."""
    fa, fb = np.fft.rfftn(a), np.fft.rfftn(b)
    shells = rfft_shells(a.shape)
    num = shells.sum((fa * np.conj(fb)).real)
    den = np.sqrt(shells.sum(np.abs(fa) ** 2) * shells.sum(np.abs(fb) ** 2))
    fsc = np.where(den > 0, num / np.maximum(den, 1e-300), 0.0)
    return shells.centres(pixel), fsc


def resolution_at(frequency: np.ndarray, fsc: np.ndarray, threshold: float) -> float:
    """Resolution (A) of the first shell below ``threshold`` (the one before it; NaN if the first is)."""
    below = np.nonzero(fsc[1:] < threshold)[0]  # the DC-most shell is skipped: it holds a few voxels
    last = len(fsc) - 1 if below.size == 0 else int(below[0])
    return math.nan if last < 1 else float(1.0 / frequency[last])


def first_zero_resolution(defocus: float, voltage: float = 300.0, cs: float = 2.7,
                          amplitude_contrast: float = 0.1) -> float:
    """Resolution (A) of the first CTF zero at ``defocus`` (A underfocus): ``chi(k) = pi - atan(Q / sqrt(1 - Q^2))``.

    The CTF ``-sqrt(1 - Q^2) sin(chi) - Q cos(chi)`` (RELION, IMOD ctfphaseflip) with ``chi = pi lambda D k^2
    - pi/2 Cs lambda^3 k^4``: the smaller root of that quadratic in ``k^2``.
    """
    from tiltflow.ctfmodel import electron_wavelength

    lam = electron_wavelength(voltage)
    target = math.pi - math.atan2(amplitude_contrast, math.sqrt(1.0 - amplitude_contrast**2))
    a, b = 0.5 * math.pi * cs * 1e7 * lam**3, math.pi * lam * defocus
    u = target / b if a == 0 else (b - math.sqrt(max(b * b - 4 * a * target, 0.0))) / (2 * a)
    return 1.0 / math.sqrt(u)


def mean_fsc_between(shells: ShellCorrelation, low_resolution: float, high_resolution: float) -> float:
    """Mean FSC of the shells from ``low_resolution`` to ``high_resolution`` (A); NaN when none lies there."""
    k = shells.frequency
    sel = (k >= 1.0 / low_resolution) & (k <= 1.0 / high_resolution)
    return float(shells.fsc[sel].mean()) if sel.any() else math.nan


def lowpass_phantom(phantom: np.ndarray, phantom_pixel: float, nyquist_pixel: float) -> np.ndarray:
    """The phantom without frequencies beyond the Nyquist of ``nyquist_pixel`` (hard cut, on its own grid)."""
    if nyquist_pixel <= phantom_pixel * 1.0001:
        return phantom
    f = np.fft.rfftn(phantom)
    freqs = [np.fft.fftfreq(n, d=phantom_pixel) for n in phantom.shape[:-1]]
    freqs.append(np.fft.rfftfreq(phantom.shape[-1], d=phantom_pixel))
    k2 = sum(np.meshgrid(*[q ** 2 for q in freqs], indexing="ij", sparse=True))
    return np.fft.irfftn(f * (k2 <= (0.5 / nyquist_pixel) ** 2), s=phantom.shape, axes=(0, 1, 2))


#: voxels of the raised-cosine edge of the FSC mask (RELION's postprocess uses a soft mask for the same reason)
SOFT_EDGE = 8


def soft_box_mask(inside: np.ndarray, edge: int = SOFT_EDGE) -> np.ndarray:
    """A box mask with raised-cosine edges over the bounding box of ``inside`` (a box: the phantom's extent).

    Why soft: the FSC multiplies both volumes by the mask, and a hard edge spreads their strong low-resolution
    agreement into every shell (a floor of about 0.08-0.18 out to Nyquist on the 6-8 um demo, where the
    phantom has no content); a cosine edge of ``edge`` voxels (at most a sixth of the box) removes it.
    """
    m = np.ones(inside.shape)
    for axis, n in enumerate(inside.shape):
        idx = np.nonzero(inside.any(axis=tuple(j for j in range(inside.ndim) if j != axis)))[0]
        if idx.size == 0:
            return np.zeros(inside.shape)
        lo, hi = float(idx[0]), float(idx[-1])
        w = max(1.0, min(float(edge), (hi - lo) / 6.0))
        x = np.arange(n, dtype=float)
        ramp = np.clip(np.minimum(x - lo + 1.0, hi - x + 1.0) / w, 0.0, 1.0)
        shape = [1] * inside.ndim
        shape[axis] = n
        m = m * (0.5 - 0.5 * np.cos(np.pi * ramp)).reshape(shape)
    return m


def tomogram_shells(tomogram: np.ndarray, tomo_pixel: float, tomo_binning: float, tomo_size_xyz,
                    series: SeriesTruth, phantom: np.ndarray, max_shift: int = 6) -> ShellCorrelation:
    """FSC of ``-tomogram`` (dark = dense) with the phantom, at the best integer shift; see the docstring."""
    ph_px = series.phantom_pixel_size
    smooth = lowpass_phantom(np.asarray(phantom, float), ph_px, tomo_pixel)
    sampled, inside = sample_phantom(smooth, series.phantom_binning, series.tomogram_size_xyz, tomogram.shape,
                                     tomo_binning, tomo_size_xyz)
    t = -np.asarray(tomogram, float)
    res = max(4.0 * tomo_pixel, 30.0)
    _, shift = best_shift(_lowpass(t, tomo_pixel, res), _lowpass(sampled, tomo_pixel, res), inside, max_shift)
    t = np.roll(t, shift, axis=(0, 1, 2))
    m = soft_box_mask(inside)
    t = (t - (t * m).sum() / m.sum()) * m
    p = (sampled - (sampled * m).sum() / m.sum()) * m
    k, fsc = fourier_shell_correlation(t, p, tomo_pixel)
    return ShellCorrelation(k, fsc, resolution_at(k, fsc, 0.5), resolution_at(k, fsc, 0.143))


# --- the metrics on a results folder -----------------------------------------------------------------------
@dataclass
class SeriesComparison:
    """One series' results against its truth (NaN/None: that step's output is missing)."""

    name: str
    tilts: int
    tilts_used: int | None = None
    motion_rms_px: float | None = None
    defocus_rms_um: float | None = None
    shift_rms_px: float | None = None
    tilt_axis_error_deg: float | None = None
    tilt_angle_rms_deg: float | None = None
    tomogram_correlation: float | None = None
    tomogram_fsc_05: float | None = None  # A, FSC against the phantom
    tomogram_fsc_0143: float | None = None
    first_zero_A: float | None = None  # first CTF zero of the highest-defocus tilt
    tomogram_fsc_beyond_zero: float | None = None  # mean FSC from that zero to the phantom's Nyquist
    tomogram: str | None = None
    star_file: str | None = None


@dataclass
class TomogramMetrics:
    """One tomogram against the phantom: correlation, shells, and the mean FSC either side of the first
    CTF zero of the highest-defocus tilt (up to the coarser of the phantom's and the tomogram's Nyquist).
    """

    correlation: float
    shells: ShellCorrelation
    first_zero_A: float
    below_zero: float
    beyond_zero: float
    nyquist_A: float


def tomogram_metrics(rec: star.TiltSeriesStar, path: Path, truth: GroundTruth, series: SeriesTruth) -> TomogramMetrics:
    """The metrics of the tomogram at ``path`` that the reconstruct step's STAR ``rec`` describes."""
    from tiltflow.io.mrc import read_mrc

    vol, pixel = read_mrc(path)
    g = rec.globals
    size = (int(g[star.TOMO_SIZE_X]), int(g[star.TOMO_SIZE_Y]), int(g[star.TOMO_SIZE_Z]))
    binning = float(g[star.TOMO_BINNING])
    px = float(pixel) if pixel else binning * rec.pixel_size
    phantom = np.asarray(read_mrc(truth.path(series.phantom))[0])
    vol = np.asarray(vol)
    shells = tomogram_shells(vol, px, binning, size, series, phantom)
    zero = first_zero_resolution(max(0.5 * (t.defocus_u + t.defocus_v) for t in series.tilts), truth.voltage,
                                 truth.cs, truth.amplitude_contrast)
    nyquist = 2.0 * max(series.phantom_pixel_size, px)
    return TomogramMetrics(tomogram_correlation(vol, px, binning, size, series, phantom), shells, zero,
                           mean_fsc_between(shells, 1.0 / float(shells.frequency[1]), zero),
                           mean_fsc_between(shells, zero, nyquist), nyquist)


def _read(root: Path, step: str, name: str) -> star.TiltSeriesStar | None:
    p = root / step / name / f"{name}.star"
    return star.read_tilt_series(p) if p.is_file() else None


def _truth_rows(tilts, series: SeriesTruth) -> list:
    return [series.tilt_for_movie(str(m)) for m in tilts[star.MOVIE]]


def compare_series(root: str | Path, truth: GroundTruth, series: SeriesTruth,
                   with_tomogram: bool = True) -> SeriesComparison:
    """Every metric that the results in ``root`` (a tiltflow/Nextflow results folder) allow."""
    from tiltflow.motion.metadata import read_motion_star
    from tiltflow.qc.report.collect import read_series

    root = Path(root)
    name = series.name
    out = SeriesComparison(name, tilts=len(series.tilts))
    mc = _read(root, "motioncor", name)
    if mc is not None and star.MICROGRAPH_METADATA in mc.tilts:
        errs = []
        for t, meta in zip(_truth_rows(mc.tilts, series), mc.tilts[star.MICROGRAPH_METADATA], strict=True):
            traj, _ = read_motion_star(star.resolve(meta, root))
            e = motion_rms_px(traj.drift(), np.array(t.frame_shifts_px))
            errs.append(e)
        out.motion_rms_px = rms(errs)  # RMS of per-movie RMS = RMS over all frames (equal frame counts)
    tilts = read_series(root, name).tilts()  # the report's reading: every tilt, one rule for "excluded"
    if star.DEFOCUS_U in tilts:
        tr = _truth_rows(tilts, series)
        est = star.mean_defocus_angstrom(tilts)
        true = np.array([(t.defocus_u + t.defocus_v) / 2 for t in tr])
        keep = ~tilts[TF_EXCLUDED].to_numpy(bool) & ~np.array([t.dark for t in tr])
        out.defocus_rms_um = rms(star.angstrom_to_um(est - true)[keep])
    ali = _read(root, "align", name)
    if ali is not None and star.X_SHIFT in ali.tilts:
        tr = _truth_rows(ali.tilts, series)
        out.tilts_used = len(ali.tilts)
        est = ali.tilts[[star.X_SHIFT, star.Y_SHIFT]].to_numpy(float) / truth.pixel_size
        true = np.array([t.shift_px for t in tr]) + _sum_reference_offsets(root, mc, ali, tr)
        angles = np.array([t.tilt_angle for t in tr])
        out.shift_rms_px = gauge_free_shift_rms(est, true, angles, series.tilt_axis)
        out.tilt_axis_error_deg = axis_error_deg(float(np.median(ali.tilts[star.Z_ROT].astype(float))),
                                                 series.tilt_axis)
        out.tilt_angle_rms_deg = rms(ali.tilts[star.Y_TILT].astype(float).to_numpy() - angles)
    rec = _read(root, "reconstruct", name)
    if rec is not None and rec.globals.get(star.TOMOGRAM):
        out.tomogram = str(rec.globals[star.TOMOGRAM])
        path = star.resolve(out.tomogram, root)
        if with_tomogram and path.is_file():
            m = tomogram_metrics(rec, path, truth, series)
            out.tomogram_correlation = m.correlation
            out.tomogram_fsc_05, out.tomogram_fsc_0143 = m.shells.resolution_05, m.shells.resolution_0143
            out.first_zero_A, out.tomogram_fsc_beyond_zero = m.first_zero_A, m.beyond_zero
    relion = root / "relion" / "tilt_series" / f"{name}.star"
    if relion.is_file():
        out.star_file = str(relion.relative_to(root))
    return out


def _sum_reference_offsets(root: Path, mc: star.TiltSeriesStar | None, ali: star.TiltSeriesStar, rows) -> np.ndarray:
    """Where each motion-corrected sum shows the specimen, relative to the truth's mean-position image.

    ``shift_px`` is defined for the image at the movie's mean position (frame shifts sum to zero), but
    the sum of aligned frames shows the specimen where the frames were registered to: frame i's content
    sits at ``+frame_shifts_px[i]`` and is moved by the applied correction ``trajectory.shifts[i]`` (RELION
    writes them relative to the first used frame, i.e. the sum is registered to that frame). So the
    tilt image's true shift is ``shift_px + mean_i(frame_shifts_px[i] + shifts[i])`` over the used frames
    (= the first frame's drift when the estimate is exact). Zero when there is no motioncor output.
    """
    from tiltflow.motion.metadata import read_motion_star

    off = np.zeros((len(rows), 2))
    if mc is None or star.MICROGRAPH_METADATA not in mc.tilts:
        return off
    meta = {str(m): v for m, v in zip(mc.tilts[star.MOVIE], mc.tilts[star.MICROGRAPH_METADATA], strict=True)}
    for k, (movie, t) in enumerate(zip(ali.tilts[star.MOVIE], rows, strict=True)):
        path = meta.get(str(movie))
        if path is None:
            continue
        traj, _ = read_motion_star(star.resolve(path, root))
        fs = np.asarray(t.frame_shifts_px, float).reshape(-1, 2)
        used = traj.used[: len(fs)]
        if used.any():
            off[k] = (fs[: len(used)][used] + traj.shifts[: len(fs)][used]).mean(axis=0)
    return off


def compare(session: str | Path, results: str | Path, with_tomogram: bool = True) -> list[SeriesComparison]:
    """Compare every series of the simulated ``session`` (its ground_truth.json) with ``results``."""
    truth = load_truth(session)
    results = Path(results)
    if not results.is_dir():
        raise TiltflowError("results folder not found", results)
    return [compare_series(results, truth, s, with_tomogram) for s in truth.series]
