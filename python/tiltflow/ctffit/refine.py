"""2-D refinement of defocus, astigmatism (and phase shift) against the whole spectrum.

Why a coarse astigmatism grid before the gradient steps: the score is flat in the astigmatism vector at
zero, and an astigmatism of a few hundred A already moves the outer rings by a full period, so a
gradient method started at zero astigmatism can stop in a wrong basin. A small grid over magnitude and
azimuth (at the 1-D defocus) picks the basin; BFGS with autograd gradients then refines
(defocus, ax, ay[, phase]) to well under the grid spacing.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from tiltflow.ctffit.background import Background, bspline_basis, ring_basis_size
from tiltflow.ctffit.model import Optics, ctf_squared, dose_envelope
from tiltflow.ctffit.search import widest_ring_period_k2
from tiltflow.ctffit.spectrum import frequency_grid

#: weight of the astigmatism restraint: score - RESTRAINT_WEIGHT * 0.5 * (|U - V| / tolerance)^2
RESTRAINT_WEIGHT = 0.002


@dataclass
class Pixels2D:
    """The spectrum's pixels in the fitting annulus (one half-plane: the other is its Friedel mate)."""

    k2: object
    cos2: object
    sin2: object
    value: object  # flattened spectrum with the smooth background projected out
    background: Background
    envelope: object = None  # expected relative ring strength per pixel (dose), None = flat


def annulus_pixels(flat_spectrum, pixel_size: float, k_lo: float, k_hi: float, defocus_min: float,
                   optics: Optics, pre_exposure: float = 0.0) -> Pixels2D:
    """Select the annulus and remove a smooth background that may vary with azimuth (cos/sin 2phi terms).

    ``pre_exposure`` (e/A^2) weights the model by the expected fading of the rings with dose
    (:func:`~tiltflow.ctffit.model.dose_envelope`), the same matched filter as the 1-D search: without it
    a damaged tilt's 2-D fit weighs the empty outer band like the rings and drifts off the 1-D answer.

    The azimuthal terms absorb anisotropic backgrounds (drift, a tilted specimen's uneven envelope)
    without being able to imitate astigmatism, which moves rings rather than changing their level.
    """
    n = ring_basis_size(k_hi * k_hi - k_lo * k_lo, widest_ring_period_k2(defocus_min, optics))
    keep, k2v, cos2, sin2, bg = _annulus(int(flat_spectrum.shape[-1]), float(pixel_size), float(k_lo), float(k_hi),
                                         n, str(flat_spectrum.device))
    env = dose_envelope(k2v.sqrt(), pre_exposure, optics.voltage) if pre_exposure > 0 else None
    return Pixels2D(k2=k2v, cos2=cos2, sin2=sin2, value=bg.residual(flat_spectrum[keep]), background=bg,
                    envelope=env)


@functools.lru_cache(maxsize=8)
def _annulus(box: int, pixel_size: float, k_lo: float, k_hi: float, n: int, device: str):
    """The annulus' pixels and its background projector (``n`` radial splines): the same for a series' tilts.

    (A QR of some 10^5 x 30 values per fit was 6 % of the CTF step; the tensors are shared, read only.)
    """
    import torch

    kx, ky = frequency_grid(box, pixel_size, torch.device(device))
    k2 = kx * kx + ky * ky
    half = (ky > 0) | ((ky == 0) & (kx > 0))
    keep = half & (k2 >= k_lo * k_lo) & (k2 <= k_hi * k_hi)
    k2v = k2[keep]
    phi = torch.atan2(ky[keep], kx[keep])
    cos2, sin2 = torch.cos(2 * phi), torch.sin(2 * phi)
    radial = bspline_basis(k2v.double(), n, k_lo * k_lo, k_hi * k_hi).float()
    basis = torch.cat([radial, radial * cos2[:, None], radial * sin2[:, None]], dim=1)
    return keep, k2v, cos2, sin2, Background(basis)


def score_2d(px: Pixels2D, defocus, ax, ay, optics: Optics, phase_shift=0.0):
    """Normalised correlation of the background-free spectrum with background-free CTF^2 (batched)."""
    model = ctf_squared(px.k2, px.cos2, px.sin2, defocus, ax, ay, optics, phase_shift)
    if px.envelope is not None:
        model = model * px.envelope
    m = px.background.residual(model)
    y = px.value
    return (m * y).sum(-1) / (m.norm(dim=-1) * y.norm() + 1e-30)


@dataclass
class Refined:
    """Refined parameters: mean defocus, astigmatism vector (A), phase shift (rad) and the score."""

    defocus: float
    ax: float
    ay: float
    phase_shift: float
    score: float


def _penalty(ax, ay, restraint: float | None):
    if not restraint or restraint <= 0:
        return 0.0
    full = 2 * (ax * ax + ay * ay + 1e-12) ** 0.5  # |U - V|
    return RESTRAINT_WEIGHT * 0.5 * (full / restraint) ** 2


def astigmatism_grid(px: Pixels2D, defocus: float, optics: Optics, phase_shift: float,
                     max_astigmatism: float, n_angles: int = 12) -> tuple[float, float, float]:
    """Best (ax, ay) on a grid of |U - V| up to ``max_astigmatism`` (A) and 12 azimuths, at fixed defocus."""
    import torch

    mags = [m for m in (100, 200, 400, 700, 1000, 1500, 2000, 3000, 4000) if m <= max_astigmatism]
    cands = [(0.0, 0.0)]
    for m in mags:
        for i in range(n_angles):
            a = math.pi * i / n_angles * 2  # 2 * azimuth, azimuth in [0, 180)
            cands.append((0.5 * m * math.cos(a), 0.5 * m * math.sin(a)))
    ax = torch.tensor([c[0] for c in cands], dtype=torch.float32, device=px.k2.device)[:, None]
    ay = torch.tensor([c[1] for c in cands], dtype=torch.float32, device=px.k2.device)[:, None]
    s = score_2d(px, defocus, ax, ay, optics, phase_shift)
    best = int(torch.argmax(s))
    return float(ax[best, 0]), float(ay[best, 0]), float(s[best])


def refine_2d(
    px: Pixels2D,
    optics: Optics,
    defocus: float,
    phase_shift: float = 0.0,
    fit_astigmatism: bool = True,
    fit_phase_shift: bool = False,
    fit_defocus: bool = True,
    restraint: float | None = None,
    max_astigmatism: float = 3000.0,
    start_astigmatism: tuple[float, float] | None = None,
) -> Refined:
    """Refine from the 1-D result; returns the best of the refined and the starting point."""
    import torch

    if start_astigmatism is not None:
        ax0, ay0 = start_astigmatism
    elif fit_astigmatism:
        ax0, ay0, _ = astigmatism_grid(px, defocus, optics, phase_shift, max_astigmatism)
    else:
        ax0, ay0 = 0.0, 0.0
    scale = 1000.0  # optimise in um-sized units so all parameters are of order one
    x0 = np.array([defocus / scale, ax0 / scale, ay0 / scale, phase_shift])
    free = np.array([fit_defocus, fit_astigmatism, fit_astigmatism, fit_phase_shift])
    if not free.any():
        with torch.no_grad():
            s = float(score_2d(px, defocus, ax0, ay0, optics, phase_shift))
        return Refined(defocus=defocus, ax=ax0, ay=ay0, phase_shift=phase_shift, score=s)

    def full(xf):
        x = torch.tensor(x0, dtype=torch.float64, device=px.k2.device)
        return x.index_put((torch.from_numpy(np.flatnonzero(free)).to(px.k2.device),), xf)

    def value_and_grad(xf_np):
        xf = torch.tensor(xf_np, dtype=torch.float64, device=px.k2.device, requires_grad=True)
        q = full(xf)
        d, ax, ay, ps = q[0] * scale, q[1] * scale, q[2] * scale, q[3]
        loss = -(score_2d(px, d.float(), ax.float(), ay.float(), optics, ps.float()) - _penalty(ax, ay, restraint))
        loss.backward()
        return float(loss.detach()), xf.grad.cpu().numpy()

    start_f, _ = value_and_grad(x0[free])
    xf, end_f = _bfgs(value_and_grad, x0[free])
    x = x0.copy()
    x[free] = xf
    d, ax, ay, ps = x[0] * scale, x[1] * scale, x[2] * scale, float(x[3])
    if not math.isfinite(end_f) or end_f > start_f:
        d, ax, ay, ps = defocus, ax0, ay0, phase_shift
    with torch.no_grad():
        s = float(score_2d(px, d, ax, ay, optics, ps))
    return Refined(defocus=d, ax=ax, ay=ay, phase_shift=ps, score=s)


def _bfgs(value_and_grad, x0: np.ndarray, max_iter: int = 60, gtol: float = 1e-7) -> tuple[np.ndarray, float]:
    """Minimise with BFGS and a backtracking (Armijo) line search; returns (x, value).

    A few lines instead of ``torch.optim.LBFGS``: that optimizer's first construction imports torch's
    compiler stack (seconds per process), which costs more than the whole fit of a tilt.
    """
    x = np.asarray(x0, dtype=np.float64)
    f, g = value_and_grad(x)
    h = np.eye(len(x))
    for _ in range(max_iter):
        if not np.all(np.isfinite(g)) or np.linalg.norm(g) < gtol:
            break
        p = -h @ g
        slope = float(g @ p)
        if slope >= 0:  # not a descent direction: restart from steepest descent
            h = np.eye(len(x))
            p, slope = -g, -float(g @ g)
        t = 1.0
        while True:
            xn = x + t * p
            fn, gn = value_and_grad(xn)
            if (math.isfinite(fn) and fn <= f + 1e-4 * t * slope) or t < 1e-6:
                break
            t *= 0.5
        if not math.isfinite(fn) or fn > f:
            break
        s, y = xn - x, gn - g
        sy = float(s @ y)
        if sy > 1e-12:
            rho = 1.0 / sy
            i = np.eye(len(x))
            h = (i - rho * np.outer(s, y)) @ h @ (i - rho * np.outer(y, s)) + rho * np.outer(s, s)
        converged = abs(f - fn) < 1e-12 * max(1.0, abs(f))
        x, f, g = xn, fn, gn
        if converged:
            break
    return x, f
