"""Background removal by least squares on a smooth basis: what is left is the Thon-ring oscillation.

Why a projection and not a running mean: the ring period changes by an order of magnitude across the
fitted band (wide first rings at 30 A, a few pixels at 5 A), so no single smoothing width fits. A smooth
basis whose knots are wider than the rings explains the background and the envelope trend but not the
rings. Projecting the *same* basis out of the data and out of every candidate CTF^2 makes the score a
partial correlation, so whatever part of a wide ring the basis absorbs is absorbed on both sides alike.
"""

from __future__ import annotations


def bspline_basis(x, n: int, lo: float, hi: float):
    """Uniform cubic B-splines on ``[lo, hi]``: a (len(x), n) matrix, a partition of unity on the interval."""
    import torch

    n = max(int(n), 4)
    h = (hi - lo) / (n - 3)
    t = (x - lo) / h
    centres = torch.arange(n, dtype=x.dtype, device=x.device) - 1.0
    u = (t[:, None] - centres[None, :]).abs()
    inner = (4 - 6 * u**2 + 3 * u**3) / 6
    outer = (2 - u).clamp(min=0) ** 3 / 6
    return torch.where(u < 1, inner, outer)


class Background:
    """Least-squares projector onto the complement of a smooth basis (columns of ``basis``)."""

    def __init__(self, basis):
        import torch

        q, r = torch.linalg.qr(basis.double())
        keep = r.diagonal().abs() > 1e-9 * r.diagonal().abs().max()  # drop columns empty in this range
        self.q = q[:, keep].to(basis.dtype)

    def fit(self, y):
        """The smooth part of ``y`` (last dimension = samples)."""
        return (y @ self.q) @ self.q.T

    def residual(self, y):
        """``y`` minus its smooth part: the oscillation left for correlation with CTF^2."""
        return y - self.fit(y)


def ring_basis_size(span_k2: float, widest_period_k2: float, lo: int = 4, hi: int = 14) -> int:
    """Basis size whose knots are about twice the widest Thon-ring period (both in k^2 units)."""
    if widest_period_k2 <= 0:
        return hi
    n = int(span_k2 / (2.0 * widest_period_k2)) + 3
    return max(lo, min(hi, n))
