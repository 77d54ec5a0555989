"""SIRT with the exact adjoint projector pair (IMOD/ASTRA's simultaneous iterative reconstruction).

``x <- x + relaxation * C * A^T (R * (b - A x))`` with ``R = 1 / A 1`` (inverse ray lengths) and
``C = 1 / A^T 1`` (inverse number of rays through a voxel), starting from zero. It converges toward
the least-squares volume and, stopped early, acts as a regulariser (less noise than WBP, softer).
Measured on an analytic phantom (tests, bench): with the images' true DC it beats WBP (r 0.93 vs 0.85
at 50 iterations, noise-free); with zero-mean images, as real cryo-EM data are, its correlation
with the phantom stays below WBP's (0.65-0.7 vs 0.84) and falls slowly with more iterations, so
WBP stays the default and SIRT is for users who want its look (few iterations, 5-15).

Memory: the volume and the normalisation ``C`` stay on ``store`` (the CPU by default for large
volumes); each pass moves one z-slab at a time to the compute device, so GPU memory holds a slab.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from tiltflow.tomo.projector import ProjectionSetup


def _slabs(d: int, slab: int):
    for z0 in range(0, d, max(1, slab)):
        yield z0, min(d, z0 + max(1, slab))


def sirt(
    images: torch.Tensor,
    setup: ProjectionSetup,
    iterations: int = 20,
    relaxation: float = 1.0,
    slab: int = 64,
    store: torch.device | str | None = None,
    progress: Callable[[int, float], None] | None = None,
    free_offsets: bool = False,
    initial: torch.Tensor | None = None,
) -> torch.Tensor:
    """Reconstruct (d, h_v, w_v) on ``store`` (default: the images' device) from ``images`` (n, h, w).

    ``progress(iteration, relative residual)`` is called after every iteration. With ``free_offsets``
    each image's mean over the pixels that see the volume is a free parameter (cryo-EM images carry an
    arbitrary per-tilt offset; a uniform volume cannot explain one, since ray lengths change with tilt).
    """
    dev = images.device
    store = torch.device(store) if store is not None else dev
    d, hv, wv = setup.volume_shape
    b = images.float()
    ray = sum(setup.forward(torch.ones((z1 - z0, hv, wv), device=dev), z_slab=(z0, z1)) for z0, z1 in _slabs(d, slab))
    r_inv = torch.where(ray > 1e-3, 1.0 / ray.clamp_min(1e-3), torch.zeros_like(ray))
    covered = (ray > 1e-3).float()
    ones = covered  # back-projection of "1 on every pixel that sees the volume"
    c_inv = torch.empty((d, hv, wv), dtype=torch.float32, device=store)
    for z0, z1 in _slabs(d, slab):
        cnt = setup.backproject(ones, z_slab=(z0, z1))
        c_inv[z0:z1] = torch.where(cnt > 1e-3, 1.0 / cnt.clamp_min(1e-3), torch.zeros_like(cnt)).to(store)
    x = torch.zeros((d, hv, wv), dtype=torch.float32, device=store) if initial is None else initial.float().to(store)
    b_norm = float((b * covered).norm()) or 1.0
    for it in range(int(iterations)):
        if it == 0 and initial is None:
            proj = torch.zeros_like(b)
        else:
            proj = sum(setup.forward(x[z0:z1].to(dev), z_slab=(z0, z1)) for z0, z1 in _slabs(d, slab))
        res = (b - proj) * covered
        if free_offsets:  # a per-image constant is no information (phase contrast, dose): fit it away
            res -= covered * (res.sum(dim=(1, 2), keepdim=True) / covered.sum(dim=(1, 2), keepdim=True).clamp_min(1))
        if progress is not None:
            progress(it, float(res.norm()) / b_norm)
        res = res * r_inv
        for z0, z1 in _slabs(d, slab):
            upd = setup.backproject(res, z_slab=(z0, z1)).to(store)
            x[z0:z1].add_(upd * c_inv[z0:z1], alpha=relaxation)
    return x
