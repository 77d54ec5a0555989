"""Tilt schemes: the target angles of a tilt series in the order the microscope acquires them.

Why the order matters: dose (pre-exposure), drift and defocus follow acquisition, not angle, and the
importer must recover it from the mdoc. The three schemes SerialEM offers:

* ``dose-symmetric`` (Hagen et al. 2017) with group size ``g``: start at ``start``; the starting group
  (start angle included) goes to the positive side, then groups of ``g`` alternate sides. For ``g = 2``
  and 3 degree steps this gives 0, +3, -3, -6, +6, +9, -9, -12, ... as in EMPIAR-10164 TS_01; for ``g = 1``
  it is the classic 0, +3, -3, +6, -6. When one side is exhausted the other finishes.
* ``bidirectional``: ``start`` up to the maximum, then ``start - step`` down to the minimum.
* ``unidirectional``: minimum to maximum.
"""

from __future__ import annotations

from tiltflow.errors import TiltflowError

_EPS = 1e-6


def _ladder(start: float, stop: float, step: float) -> list[float]:
    """``start, start + step, ...`` up to ``stop`` (inclusive, step may be negative)."""
    out = []
    k = 0
    while True:
        a = start + k * step
        if (step > 0 and a > stop + _EPS) or (step < 0 and a < stop - _EPS):
            break
        out.append(round(a, 6) + 0.0)
        k += 1
    return out


def acquisition_order(scheme: str, tilt_min: float, tilt_max: float, step: float, group_size: int = 2,
                      start: float = 0.0) -> list[float]:
    """Target tilt angles (degrees) in acquisition order."""
    if step <= 0:
        raise TiltflowError(f"tilt step must be above 0, got {step}")
    if scheme == "unidirectional":
        return _ladder(tilt_min, tilt_max, step)
    if not (tilt_min - _EPS <= start <= tilt_max + _EPS):
        raise TiltflowError(f"start angle {start} is outside the tilt range {tilt_min}..{tilt_max}")
    pos = _ladder(start, tilt_max, step)[1:]
    neg = _ladder(start, tilt_min, -step)[1:]
    if scheme == "bidirectional":
        return [round(start, 6) + 0.0] + pos + neg
    if scheme != "dose-symmetric":
        raise TiltflowError(f"unknown tilt scheme {scheme!r}")
    if group_size < 1:
        raise TiltflowError(f"group size must be at least 1, got {group_size}")
    order = [round(start, 6) + 0.0]
    take = max(group_size - 1, 1)  # the start angle belongs to the first (positive) group
    side = 1
    while pos or neg:
        branch = pos if side > 0 else neg
        if not branch:
            branch = neg if side > 0 else pos
        order += branch[:take]
        del branch[:take]
        side = -side
        take = group_size
    return order
