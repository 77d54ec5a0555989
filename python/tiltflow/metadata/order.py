"""Acquisition order, retakes and the tilt scheme.

Order comes from the clock, never from file names: ``DateTime`` (``30-Nov-15  15:21:38`` before
SerialEM 4.1, ``01-Aug-2022  18:58:35`` after, Tomo5 ``24-Mar-2023 12:13:13``), else ``TimeStamp``
(seconds since 2020), else the ``ZValue`` (SerialEM stacks follow acquisition; PACEtomo and other
post-sorts do not, which is why the clock comes first). Schemes are reported as detected, not
assumed: real sessions mix them (dose-symmetric to +-20 then one branch, then the other).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime

from tiltflow.metadata.models import Tilt

_DATE_FORMATS = (
    "%d-%b-%y %H:%M:%S",
    "%d-%b-%Y %H:%M:%S",
    "%d-%b-%y %H:%M",
    "%d-%b-%Y %H:%M",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%dT%H:%M:%S",
    "%Y/%m/%d %H:%M:%S",
)

#: two tilts closer than this (degrees) are the same angle: the later one is a retake
RETAKE_TOLERANCE = 0.5


def parse_datetime(text: str | None) -> datetime | None:
    """SerialEM/Tomo5 DateTime -> datetime; None for empty or unknown formats."""
    if not text:
        return None
    t = " ".join(text.split())
    if not t:
        return None
    t = re.sub(r"\.\d+$", "", t)  # fractional seconds
    for fmt in _DATE_FORMATS:
        try:
            return datetime.strptime(t, fmt)
        except ValueError:
            continue
    return None


def acquisition_order(tilts: Sequence[Tilt]) -> tuple[list[Tilt], str]:
    """Tilts sorted in acquisition order, and what the order is based on.

    DateTime when every tilt has one, else TimeStamp when every tilt has one, else ZValue.
    Ties (same second) keep ZValue order.
    """
    tilts = list(tilts)
    if tilts and all(t.date_time is not None for t in tilts):
        return sorted(tilts, key=lambda t: (t.date_time, t.z_value)), "DateTime"
    stamps = [_timestamp(t) for t in tilts]
    if tilts and all(s is not None for s in stamps):
        pairs = sorted(zip(stamps, tilts, strict=True), key=lambda p: (p[0], p[1].z_value))
        return [t for _, t in pairs], "TimeStamp"
    return sorted(tilts, key=lambda t: t.z_value), "ZValue"


def _timestamp(t: Tilt) -> float | None:
    try:
        return float(t.keys["TimeStamp"])
    except (KeyError, ValueError):
        return None


def drop_retakes(ordered: Sequence[Tilt], tolerance: float = RETAKE_TOLERANCE) -> tuple[list[Tilt], list[Tilt]]:
    """Keep the newest image of each angle; return (kept in acquisition order, dropped)."""
    kept: list[Tilt] = []
    dropped: list[Tilt] = []
    for t in reversed(list(ordered)):  # newest first
        if any(abs(t.tilt_angle - k.tilt_angle) < tolerance for k in kept):
            dropped.append(t)
        else:
            kept.append(t)
    kept.reverse()
    dropped.reverse()
    return kept, dropped


def _sides(angles: Sequence[float], tolerance: float) -> list[int]:
    start = angles[0]
    return [0 if abs(x - start) < tolerance else (1 if x > start else -1) for x in angles]


def _side_runs(sides: Sequence[int]) -> list[tuple[int, int]]:
    """Runs of consecutive tilts on one side of the start angle: [(side, length), ...]."""
    runs: list[tuple[int, int]] = []
    for s in sides:
        if not s:
            continue
        if runs and runs[-1][0] == s:
            runs[-1] = (s, runs[-1][1] + 1)
        else:
            runs.append((s, 1))
    return runs


def detect_scheme(angles: Sequence[float], tolerance: float = RETAKE_TOLERANCE) -> str:
    """Name the tilt scheme of ``angles`` given in acquisition order.

    Seen from the first angle, every scheme sweeps each side outwards; they differ in how often the
    side changes: never (unidirectional), once (bidirectional), repeatedly (dose-symmetric, Hagen
    groups of any size, including hybrids that finish one branch and then the other). A side that
    goes back towards the start makes the series irregular.
    """
    a = [float(x) for x in angles]
    if len(a) < 2:
        return "single"
    sides = _sides(a, tolerance)
    for side in (1, -1):
        dist = [abs(x - a[0]) for x, s in zip(a, sides, strict=True) if s == side]
        if any(d1 < d0 + tolerance for d0, d1 in zip(dist, dist[1:], strict=False)):
            return "irregular"
    runs = _side_runs(sides)
    if len(runs) <= 1:
        return "unidirectional"
    if len(runs) == 2:
        return "bidirectional"
    return "dose-symmetric"


def dose_symmetric_group_size(angles: Sequence[float], tolerance: float = RETAKE_TOLERANCE) -> int | None:
    """Typical number of consecutive tilts on one side in a dose-symmetric series (Hagen: 2)."""
    if len(angles) < 3:
        return None
    runs = [n for _, n in _side_runs(_sides([float(x) for x in angles], tolerance))]
    inner = runs[1:-1] if len(runs) > 2 else runs  # the first and last runs are often partial
    if not inner:
        return None
    return sorted(inner)[len(inner) // 2]
