"""Local (patch-based) motion on top of the global trajectory, as RELION's third-order polynomial model.

The globally aligned movie is cut into ``px x py`` overlapping patches; each patch stack is aligned with
:func:`tiltflow.motion.estimate.align` (residual shifts relative to the global ones), smoothed in time, and
one smooth field is fitted to all patches at once: RELION's ``ThirdOrderPolynomialModel``

    s(z, x, y) = sum over (1, x, x^2, y, y^2, xy) of (c1 z + c2 z^2 + c3 z^3) * term

with ``z`` the frame number counted from the first frame used (so the field is 0 there, like the global
shifts) and ``x, y`` the pixel position divided by the movie size minus 0.5. Owning RELION's model means
the per-movie STAR file we write carries the local motion in a form RELION's Bayesian polishing reads, and a
least-squares fit of 18 coefficients per axis over all patches and frames is robust to the noisy patches
of a low-dose tilt. Patches that hit the search limit or did not converge are left out; if the model
still does not explain the patches (RMSD above ``max_rmsd``) local correction is dropped, as RELION does.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from tiltflow.motion import estimate, trajectory

log = logging.getLogger("tiltflow.motion")

N_COEFFS = 18  # per axis, RELION's ThirdOrderPolynomialModel::NUM_COEFFS_PER_DIM


@dataclass(frozen=True)
class LocalParams:
    """Patch grid and alignment settings for local motion."""

    patches: tuple[int, int] = (5, 5)  # x, y
    overlap: float = 0.5  # patch size = (1 + overlap) x grid spacing
    bfactor: float = 500.0
    max_shift: float = 20.0  # px, residual after global alignment
    max_rmsd: float = 2.0  # px: drop the model if it explains the patches worse than this
    group: int = 1


@dataclass
class LocalModel:
    """RELION's polynomial coefficients (``(36,)``: x then y, movie pixels) and the patch observations."""

    coeffs: np.ndarray
    observations: np.ndarray  # (m, 5): frame z, x px, y px (movie pixels), shift x, shift y (relative to z=0)
    rmsd: float
    n_patches: int


def design(z, x, y) -> np.ndarray:
    """The 18 columns of RELION's model for observations at frame ``z`` and normalised position ``x, y``."""
    z, x, y = (np.asarray(a, dtype=float) for a in (z, x, y))
    zs = (z, z**2, z**3)
    terms = (np.ones_like(x), x, x**2, y, y**2, x * y)
    return np.stack([t * zk for t in terms for zk in zs], axis=-1)


def evaluate(coeffs: np.ndarray, z: float, x, y) -> tuple[np.ndarray, np.ndarray]:
    """Local shift (x, y) of the model at frame ``z`` and normalised positions ``x, y``."""
    a = design(np.full(np.shape(x), z, dtype=float), x, y)
    return a @ coeffs[:N_COEFFS], a @ coeffs[N_COEFFS:]


def patch_boxes(shape: tuple[int, int], patches: tuple[int, int], overlap: float) -> list[tuple[int, int, int, int]]:
    """``(y0, x0, h, w)`` of each patch (row by row), even-sized, overlapping, inside the image."""
    h, w = shape
    nx, ny = patches
    ph = min(h, int(round(h / ny * (1 + overlap) / 2)) * 2)
    pw = min(w, int(round(w / nx * (1 + overlap) / 2)) * 2)
    boxes = []
    for iy in range(ny):
        for ix in range(nx):
            cy, cx = (iy + 0.5) * h / ny, (ix + 0.5) * w / nx
            y0 = int(np.clip(round(cy - ph / 2), 0, h - ph))
            x0 = int(np.clip(round(cx - pw / 2), 0, w - pw))
            boxes.append((y0, x0, ph, pw))
    return boxes


def estimate_local(aligned, full_shape: tuple[int, int], params: LocalParams) -> LocalModel | None:
    """Fit the local model to the globally aligned frames ``aligned`` (``(n, h, w)`` real, any scale).

    ``full_shape`` is the movie size; ``aligned`` may be a Fourier-binned copy of it.
    """
    n, h, w = aligned.shape
    if n < 3:
        return None
    sy, sx = full_shape[0] / h, full_shape[1] / w
    rows = []
    used = 0
    aparams = estimate.AlignParams(bfactor=params.bfactor, max_shift=params.max_shift, group=params.group)
    for y0, x0, ph, pw in patch_boxes((h, w), params.patches, params.overlap):
        stack = aligned[:, y0:y0 + ph, x0:x0 + pw]
        spec = estimate.prepare(stack, taper=max(2, min(ph, pw) // 8))
        res = estimate.align(spec, (ph, pw), (ph * sy, pw * sx), aparams)
        if not res.converged or np.abs(res.shifts).max() > 0.9 * params.max_shift:
            continue
        smoothed, _ = trajectory.smooth(res.shifts)
        rel = smoothed - smoothed[0]
        cy = ((y0 + ph / 2) * sy) - 0.5
        cx = ((x0 + pw / 2) * sx) - 0.5
        for z in range(n):
            rows.append((z, cx, cy, rel[z, 0], rel[z, 1]))
        used += 1
    if used < 3:
        log.info("local motion: only %d usable patches, local correction skipped", used)
        return None
    obs = np.array(rows)
    coeffs = fit(obs, full_shape, quadratic=used >= 6)
    fx, fy = _predict(coeffs, obs, full_shape)
    rmsd = float(np.sqrt(np.mean((fx - obs[:, 3]) ** 2 + (fy - obs[:, 4]) ** 2)))
    if rmsd > params.max_rmsd:
        log.info("local motion: polynomial fit RMSD %.2f px > %.2f px, local correction skipped", rmsd, params.max_rmsd)
        return None
    return LocalModel(coeffs, obs, rmsd, used)


def fit(obs: np.ndarray, full_shape: tuple[int, int], quadratic: bool = True) -> np.ndarray:
    """Least-squares coefficients (``(36,)``) of RELION's model for observations ``(z, x, y, sx, sy)``."""
    h, w = full_shape
    a = design(obs[:, 0], obs[:, 1] / w - 0.5, obs[:, 2] / h - 0.5)
    keep = np.ones(N_COEFFS, bool)
    if not quadratic:  # too few patches to pin x^2, y^2, xy: keep the plane
        keep[6:9] = keep[12:18] = False
    cx = np.zeros(N_COEFFS)
    cy = np.zeros(N_COEFFS)
    cx[keep] = np.linalg.lstsq(a[:, keep], obs[:, 3], rcond=None)[0]
    cy[keep] = np.linalg.lstsq(a[:, keep], obs[:, 4], rcond=None)[0]
    return np.concatenate([cx, cy])


def _predict(coeffs: np.ndarray, obs: np.ndarray, full_shape: tuple[int, int]):
    h, w = full_shape
    a = design(obs[:, 0], obs[:, 1] / w - 0.5, obs[:, 2] / h - 0.5)
    return a @ coeffs[:N_COEFFS], a @ coeffs[N_COEFFS:]


def field(coeffs: np.ndarray, z: float, shape: tuple[int, int], device=None):
    """The model's shift at every pixel of a movie frame: ``(h, w, 2)`` tensor (x, y), movie pixels."""
    import torch

    h, w = shape
    x = (torch.arange(w, dtype=torch.float32, device=device) / w - 0.5).reshape(1, w)
    y = (torch.arange(h, dtype=torch.float32, device=device) / h - 0.5).reshape(h, 1)
    zk = np.array([z, z**2, z**3])

    def axis(cc: np.ndarray):
        a = [float(cc[3 * t:3 * t + 3] @ zk) for t in range(6)]  # weights of 1, x, x^2, y, y^2, xy
        return (a[0] + a[1] * x + a[2] * x * x) + (a[3] * y + a[4] * y * y) + a[5] * (y * x)

    c = np.asarray(coeffs, dtype=float)
    return torch.stack([axis(c[:N_COEFFS]), axis(c[N_COEFFS:])], dim=-1)


def resample(image, shift_field):
    """``out(p) = image(p - shift(p))`` by bicubic interpolation (``image`` ``(h, w)``, field ``(h, w, 2)``)."""
    import torch
    import torch.nn.functional as F

    h, w = image.shape
    ys = torch.arange(h, dtype=torch.float32, device=image.device).reshape(h, 1).expand(h, w)
    xs = torch.arange(w, dtype=torch.float32, device=image.device).reshape(1, w).expand(h, w)
    sx = xs - shift_field[..., 0]
    sy = ys - shift_field[..., 1]
    grid = torch.stack([(2 * sx + 1) / w - 1, (2 * sy + 1) / h - 1], dim=-1).unsqueeze(0)
    out = F.grid_sample(image.reshape(1, 1, h, w), grid, mode="bicubic", padding_mode="reflection",
                        align_corners=False)
    return out.reshape(h, w)
