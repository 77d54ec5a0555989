"""Local (patch-based) motion on top of the global trajectory, as RELION's third-order polynomial model.

The globally aligned movie is cut into ``px x py`` overlapping patches; each patch stack is aligned with
:func:`tiltflow.motion.estimate.align` (its residual shifts relative to the global ones), and one smooth
field is fitted to all patches and frames at once: RELION's ``ThirdOrderPolynomialModel``

    s(z, x, y) = sum over (1, x, x^2, y, y^2, xy) of (c1 z + c2 z^2 + c3 z^3) * term

with ``z`` the frame number counted from the first frame used (so the field is 0 there, like the global
shifts) and ``x, y`` the pixel position divided by the movie size minus 0.5. Owning RELION's model means
the per-movie STAR file we write carries the local motion in a form RELION's Bayesian polishing reads.

Low-dose patches are noisy, and a free 18-term field would fit that noise and extrapolate it to the frame's
corners. So each patch gets a free offset (its trajectory is known only up to a constant, which beats
anchoring it to its noisiest point, frame 0), and the spatial form - none, a plane, or RELION's quadratic
- is chosen by the Bayesian information criterion: a tilt with no local motion gets no local correction.
Patches that hit the search limit or did not converge are left out; a field that still fits the patches
worse than ``max_rmsd`` is dropped, as RELION does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tiltflow.motion import estimate

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
    observations: np.ndarray  # (m, 5): frame z, x px, y px (movie pixels), patch shift x, y (mean zero)
    rmsd: float  # of the observations around the field (plus a free offset per patch)
    n_patches: int
    model: str = "quadratic"  # "plane" or "quadratic" in space (always cubic in time)


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


def estimate_local(aligned, full_shape: tuple[int, int], params: LocalParams) -> tuple[LocalModel | None, str]:
    """Fit the local model to the globally aligned frames ``aligned`` (``(n, h, w)`` real, any scale).

    ``full_shape`` is the movie size; ``aligned`` may be a Fourier-binned copy of it. Returns the model, or
    None when there is no usable or no significant local motion, and a one-line note saying which.
    """
    n, h, w = aligned.shape
    if n < 3:
        return None, "skipped: fewer than 3 frames"
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
        cy = ((y0 + ph / 2) * sy) - 0.5
        cx = ((x0 + pw / 2) * sx) - 0.5
        for z in range(n):
            rows.append((used, z, cx, cy, res.shifts[z, 0], res.shifts[z, 1]))
        used += 1
    if used < 3:
        return None, f"skipped: only {used} usable patches"
    obs = np.array(rows)
    model, coeffs, rmsd = select(obs, full_shape)
    if model == "none":
        return None, f"no significant local motion in {used} patches (patch RMS {rmsd:.3f} px): global only"
    if rmsd > params.max_rmsd:
        return None, f"skipped: the field fits the {used} patches with RMSD {rmsd:.2f} px > {params.max_rmsd:g}"
    return LocalModel(coeffs, obs[:, 1:], rmsd, used, model), (
        f"{used} patches, {model} field, fit RMSD {rmsd:.3f} px")


#: which of RELION's 18 columns each candidate model uses (terms 1, x, x^2, y, y^2, xy; 3 powers of z each)
_TERMS = {"none": (), "plane": (0, 1, 3), "quadratic": (0, 1, 2, 3, 4, 5)}


def fit(obs: np.ndarray, full_shape: tuple[int, int], model: str = "quadratic",
        patch_ids: np.ndarray | None = None) -> tuple[np.ndarray, float, int]:
    """Least-squares fit of RELION's model to observations ``(z, x, y, sx, sy)`` (movie pixels).

    ``patch_ids`` gives each observation's patch: every patch then gets a free offset, because a patch's
    trajectory is only known up to a constant. Returns ``(coeffs (36,), residual sum of squares, k)``
    with ``k`` the number of parameters per axis.
    """
    h, w = full_shape
    cols = [3 * t + p for t in _TERMS[model] for p in range(3)]
    a = design(obs[:, 0], obs[:, 1] / w - 0.5, obs[:, 2] / h - 0.5)[:, cols]
    if patch_ids is not None:
        ids = np.asarray(patch_ids, dtype=int)
        a = np.hstack([a, (ids[:, None] == np.unique(ids)[None, :]).astype(float)])
    target = obs[:, 3:5]
    if a.shape[1] == 0:
        return np.zeros(2 * N_COEFFS), float((target**2).sum()), 0
    sol = np.linalg.lstsq(a, target, rcond=None)[0]
    coeffs = np.zeros((2, N_COEFFS))
    coeffs[:, cols] = sol[:len(cols)].T
    rss = float(((target - a @ sol) ** 2).sum())
    return coeffs.ravel(), rss, a.shape[1]


def select(obs: np.ndarray, full_shape: tuple[int, int]) -> tuple[str, np.ndarray, float]:
    """Pick none / plane / quadratic by the Bayesian information criterion; ``obs`` is ``(patch, z, x, y, sx, sy)``.

    Noise in the patch shifts would otherwise be fitted as a field and extrapolated to the frame's corners
    (pixels of false motion where there is none); a more complex field must earn its parameters.
    """
    ids = obs[:, 0]
    n_patches = len(np.unique(ids))
    m = 2 * len(obs)  # x and y observations
    best = None
    for model in ("none", "plane", "quadratic"):
        if model == "quadratic" and n_patches < 6:
            continue
        coeffs, rss, k = fit(obs[:, 1:], full_shape, model, patch_ids=ids)
        bic = m * np.log(max(rss, 1e-12) / m) + 2 * k * np.log(m)
        if best is None or bic < best[0]:
            best = (bic, model, coeffs, float(np.sqrt(rss / len(obs))))
    assert best is not None
    return best[1], best[2], best[3]


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
