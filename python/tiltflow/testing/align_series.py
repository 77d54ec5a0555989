"""Analytic synthetic tilt series: Gaussian blobs in a slab, projected exactly in RELION's model.

Why analytic: a test of the aligner must not share a projector with the aligner, or a sign error in
that projector would cancel out. A 3-D Gaussian of width sigma projects to a 2-D Gaussian of the same
width centred at ``geometry.project_points`` of its centre, so every image is exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tiltflow import geometry


@dataclass
class Phantom:
    """Blobs relative to the tomogram centre (pixels): centres (m, 3) x, y, z; sigmas (m,); amplitudes (m,)."""

    centres: np.ndarray
    sigmas: np.ndarray
    amplitudes: np.ndarray

    def render(self, shape_zyx: tuple[int, int, int]) -> np.ndarray:
        """The phantom as a volume (z, y, x) with RELION's centre ``int(size/2)`` (for benchmarks)."""
        d, h, w = shape_zyx
        z = np.arange(d) - geometry.centre(d)
        y = np.arange(h) - geometry.centre(h)
        x = np.arange(w) - geometry.centre(w)
        vol = np.zeros(shape_zyx, np.float32)
        for (cx, cy, cz), s, a in zip(self.centres, self.sigmas, self.amplitudes, strict=True):
            gz = np.exp(-0.5 * ((z - cz) / s) ** 2)
            gy = np.exp(-0.5 * ((y - cy) / s) ** 2)
            gx = np.exp(-0.5 * ((x - cx) / s) ** 2)
            vol += (a * gz[:, None, None] * gy[None, :, None] * gx[None, None, :]).astype(np.float32)
        return vol


@dataclass
class SyntheticSeries:
    """A projected series with its true geometry (RELION sense: p = R (X - c) + shift + c_img)."""

    images: np.ndarray  # (n, h, w) float32
    tilt_angles: np.ndarray  # true tilts (deg) = nominal + tilt_offset
    nominal_tilts: np.ndarray
    tilt_axis: float
    shifts_px: np.ndarray  # (n, 2) x, y
    dark: np.ndarray  # (n,) bool
    phantom: Phantom
    tilt_offset: float = 0.0


def make_phantom(
    size: int, thickness: float, n_blobs: int = 300, rng: np.random.Generator | None = None,
    extent: float = 0.55, z_offset: float = 0.0,
) -> Phantom:
    """Blobs of width 1.2-4 px filling a slab ``thickness`` px thick (x, y within +-extent*size)."""
    rng = rng or np.random.default_rng(0)
    xy = rng.uniform(-extent * size, extent * size, size=(n_blobs, 2))
    z = rng.uniform(-thickness / 2, thickness / 2, size=n_blobs) + z_offset
    sig = rng.uniform(1.2, 4.0, size=n_blobs) * size / 128
    amp = rng.choice([1.0, 1.0, 1.0, -0.6], size=n_blobs) * rng.uniform(0.5, 1.0, size=n_blobs)
    return Phantom(np.column_stack([xy, z]), sig, amp)


def project(phantom: Phantom, shape_hw: tuple[int, int], y_tilt, z_rot, shifts_px, x_tilt=None) -> np.ndarray:
    """Exact line integrals of the phantom for each tilt: (n, h, w)."""
    y_tilt = np.atleast_1d(np.asarray(y_tilt, float))
    n = len(y_tilt)
    z_rot = np.broadcast_to(np.asarray(z_rot, float), (n,))
    x_tilt = np.zeros(n) if x_tilt is None else np.asarray(x_tilt, float)
    pts = geometry.project_points(phantom.centres, x_tilt, y_tilt, z_rot, shifts_px)  # (n, m, 2)
    h, w = shape_hw
    ys = np.arange(h) - geometry.centre(h)
    xs = np.arange(w) - geometry.centre(w)
    s = phantom.sigmas
    weight = phantom.amplitudes * s * np.sqrt(2 * np.pi)
    out = np.empty((n, h, w), np.float32)
    for i in range(n):
        gx = np.exp(-0.5 * ((xs[None, :] - pts[i, :, 0:1]) / s[:, None]) ** 2)  # (m, w)
        gy = np.exp(-0.5 * ((ys[None, :] - pts[i, :, 1:2]) / s[:, None]) ** 2)  # (m, h)
        gx *= (weight / (2 * np.pi * s**2))[:, None]
        out[i] = (gy.T @ gx).astype(np.float32)
    return out


def make_series(
    size: int = 128, tilt_step: float = 3.0, tilt_max: float = 60.0, tilt_axis: float = 85.0,
    max_shift: float = 8.0, noise: float = 0.5, thickness: float | None = None, n_dark: int = 2,
    tilt_offset: float = 0.0, seed: int = 0, n_blobs: int = 300,
) -> SyntheticSeries:
    """A demo-like series: +-tilt_max, random shifts, Gaussian noise (x the signal std), dark highest tilts.

    Images are offset to a positive mean (as counts are), so the AreTomo mean/std rule applies; the
    ``n_dark`` highest-|tilt| images are mostly blocked (a grid bar): 10 % of the signal, low counts
    whose shot noise dominates, as in real dark frames.
    """
    rng = np.random.default_rng(seed)
    thickness = size / 4 if thickness is None else thickness
    phantom = make_phantom(size, thickness, n_blobs=n_blobs, rng=rng)
    nominal = np.arange(-tilt_max, tilt_max + 1e-6, tilt_step)
    tilts = nominal + tilt_offset
    shifts = rng.uniform(-max_shift, max_shift, size=(len(tilts), 2))
    imgs = project(phantom, (size, size), tilts, tilt_axis, shifts)
    sd = float(imgs.std())
    imgs = imgs + rng.normal(0, noise * sd, imgs.shape).astype(np.float32)
    imgs = imgs + 4.0 * sd  # positive mean, like counts
    dark = np.zeros(len(tilts), bool)
    if n_dark:
        order = np.argsort(-np.abs(nominal), kind="stable")[:n_dark]
        dark[order] = True
        imgs[order] = imgs[order] * 0.1 + rng.normal(0, 0.6 * sd, (n_dark, size, size)).astype(np.float32)
    return SyntheticSeries(imgs.astype(np.float32), tilts, nominal, tilt_axis, shifts, dark, phantom, tilt_offset)


def write_stack_project(root, s: SyntheticSeries, name: str = "TS_01", pixel_size: float = 10.0,
                        axis_in_mdoc: float | None = None):
    """Write what the stack step would for ``s`` under ``root``: the MRC stack and its STAR file.

    Returns the STAR path (``root/stack/<name>/<name>.star``); paths inside are relative to ``root``.
    """
    from pathlib import Path

    import pandas as pd

    from tiltflow import star
    from tiltflow.io.mrc import write_mrc

    root = Path(root)
    write_mrc(root / "stack" / name / f"{name}.mrc", s.images, pixel_size)
    n = len(s.nominal_tilts)
    tilts = pd.DataFrame({
        star.MICROGRAPH: [f"motioncor/{name}_{i:03d}.mrc" for i in range(n)],
        star.NOMINAL_TILT: s.nominal_tilts,
        star.NOMINAL_AXIS: np.full(n, s.tilt_axis if axis_in_mdoc is None else axis_in_mdoc),
        star.PRE_EXPOSURE: np.arange(n) * 3.0,
        star.TF_DOSE: np.full(n, 3.0),
    })
    g = {star.TS_PIXEL_SIZE: pixel_size, star.VOLTAGE: 300.0, star.TF_STACK: f"stack/{name}/{name}.mrc",
         star.TF_STACK_PIXEL_SIZE: pixel_size, star.TF_STACK_BINNING: 1}
    path = root / "stack" / name / f"{name}.star"
    star.write_tilt_series(star.TiltSeriesStar(name, g, tilts), path)
    return path
