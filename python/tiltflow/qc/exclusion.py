"""Which tilts to leave out, and why: automatic rules from what the steps measured, plus user overrides.

Why a reason string per tilt: facility staff need to check a decision without re-running anything, so every
exclusion names the measured value and the limit it broke ("CTF fit resolution 24.0 A, limit 15.0 A").

Tilt indices in overrides are the **0-based acquisition index** (``tfAcquisitionIndex``; the order in which
SerialEM took the images, as ``tiltflow inspect`` lists them; for a stack mdoc this equals the ZValue).

The alignment residual is only known after alignment, so it cannot feed the exclude step;
:func:`residual_exclusions` is the rule the align step (or the report) applies to its residuals.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from tiltflow.errors import TiltflowError


@dataclass(frozen=True)
class Thresholds:
    """Limits of the automatic rules; ``None`` (or a non-positive tolerance) switches a rule off.

    ``min_ctf_resolution`` is the *worst acceptable* fit resolution in A (a fit reaching only 24 A fails a
    15 A limit), named as the ``--min-ctf-resolution`` option.
    """

    max_motion: float | None = 60.0  # A, total accumulated motion (rlnAccumMotionTotal)
    max_early_motion: float | None = 30.0  # A, motion in the first frames (rlnAccumMotionEarly)
    min_ctf_resolution: float | None = 20.0  # A, worst acceptable rlnCtfMaxResolution
    min_ctf_score: float | None = 0.0  # rlnCtfFigureOfMerit below this: the fit found no rings
    dark_tol: float = 0.7  # AreTomo's DarkTol: dark when |mean|/std <= dark_tol x that of the lowest tilt
    blank_tol: float = 0.3  # blank when specimen contrast < blank_tol x the series median (and < 0.1)
    min_intensity: float = 0.2  # WarpTools' rule: dark when mean < min_intensity x cos(tilt) x mean(lowest tilt)
    max_residual: float | None = None  # A, alignment residual (applied by residual_exclusions)


@dataclass
class TiltMeasures:
    """What the steps measured for one tilt (``None``/NaN when a step did not measure it)."""

    index: int  # acquisition index (0-based)
    tilt_angle: float
    motion_total: float | None = None
    motion_early: float | None = None
    ctf_resolution: float | None = None
    ctf_score: float | None = None
    dark_ratio: float | None = None  # |mean| / std of the micrograph
    contrast: float | None = None  # neighbour correlation of the binned micrograph (specimen structure)
    mean_intensity: float | None = None  # mean of the micrograph (counts; the same scale for every tilt)
    no_image: str = ""  # why motion correction made no image of it (tfMovieProblem): always excluded


@dataclass
class Decision:
    """The verdict for one tilt: ``reasons`` lists every rule it broke (automatic or the user's)."""

    index: int
    tilt_angle: float
    excluded: bool
    reasons: list[str] = field(default_factory=list)
    source: str = "auto"  # auto, user-exclude, user-keep

    @property
    def reason(self) -> str:
        """One line for ``tfExcludeReason`` and the logs ("" when kept without comment)."""
        return "; ".join(self.reasons)


def _num(v) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def auto_reasons(m: TiltMeasures, t: Thresholds, dark_reference: float | None,
                 contrast_median: float | None, intensity_reference: float | None = None) -> list[str]:
    """Every automatic rule ``m`` breaks, as "excluded: ..." strings with the numbers.

    Two dark rules: AreTomo's |mean|/std ratio (weak when specimen contrast, not shot noise, sets the std)
    and WarpTools' mean intensity against cos(tilt) x the lowest tilt's (needs unnormalised counts, so it
    is skipped when the reference mean is not positive).
    """
    if m.no_image:  # nothing else to judge: no image, no CTF fit
        return [f"excluded: no motion-corrected image ({m.no_image})"]
    out: list[str] = []
    mean = _num(m.mean_intensity)
    if mean is not None and intensity_reference and intensity_reference > 0 and t.min_intensity > 0:
        limit = t.min_intensity * math.cos(math.radians(m.tilt_angle)) * intensity_reference
        if mean < limit:
            out.append(f"excluded: dark image, mean intensity {mean:.3g} < {t.min_intensity:g} x cos(tilt) x "
                       f"{intensity_reference:.3g} (lowest tilt)")
    ratio = _num(m.dark_ratio)
    if ratio is not None:
        if ratio <= 0:
            out.append("excluded: dark or empty image (constant or non-finite pixels)")
        elif 0 < t.dark_tol < 1 and dark_reference and ratio <= t.dark_tol * dark_reference and not out:
            out.append(f"excluded: dark image, |mean|/std {ratio:.3g} <= {t.dark_tol:g} x {dark_reference:.3g} "
                       f"(lowest tilt)")
    c = _num(m.contrast)
    if (c is not None and t.blank_tol > 0 and contrast_median and contrast_median > 0 and not out
            and c < t.blank_tol * contrast_median and c < 0.1):
        out.append(f"excluded: blank image, specimen contrast {c:.3f} < {t.blank_tol:g} x {contrast_median:.3f} "
                   f"(series median)")
    v = _num(m.motion_total)
    if t.max_motion is not None and v is not None and v > t.max_motion:
        out.append(f"excluded: total motion {v:.1f} A, limit {t.max_motion:g} A")
    v = _num(m.motion_early)
    if t.max_early_motion is not None and v is not None and v > t.max_early_motion:
        out.append(f"excluded: early motion {v:.1f} A, limit {t.max_early_motion:g} A")
    v = _num(m.ctf_resolution)
    if t.min_ctf_resolution is not None and m.ctf_resolution is not None:
        if v is None or math.isinf(v) or v > t.min_ctf_resolution:
            shown = "none (no rings fitted)" if v is None or math.isinf(v) else f"{v:.1f} A"
            out.append(f"excluded: CTF fit resolution {shown}, limit {t.min_ctf_resolution:g} A")
    v = _num(m.ctf_score)
    if t.min_ctf_score is not None and v is not None and v < t.min_ctf_score:
        out.append(f"excluded: CTF fit score {v:.3f}, limit {t.min_ctf_score:g}")
    return out


def dark_reference(measures: Sequence[TiltMeasures]) -> float | None:
    """AreTomo's reference |mean|/std: that of the lowest-|tilt| image, or the median of the brighter half."""
    vals = [(abs(m.tilt_angle), _num(m.dark_ratio)) for m in measures]
    vals = [(a, r) for a, r in vals if r is not None]
    if not vals:
        return None
    ref = min(vals)[1]
    if ref <= 0:  # the lowest tilt is itself dark: use the median of the brighter half of the series
        rs = sorted(r for _, r in vals if r > 0)
        ref = rs[(3 * len(rs)) // 4] if rs else 0.0
    return ref if ref and ref > 0 else None


#: the reason a user-kept tilt carries (tfExcludeReason); align reads it so that it keeps the tilt too
USER_KEEP = "kept by user (--keep-tilts)"


def decide(measures: Sequence[TiltMeasures], thresholds: Thresholds, exclude: Iterable[int] = (),
           keep: Iterable[int] = ()) -> list[Decision]:
    """Apply the automatic rules, then the user's lists (``keep`` wins over an automatic exclusion).

    A tilt in both ``exclude`` and ``keep`` is a contradiction the user must resolve: TiltflowError.
    """
    exclude, keep = set(exclude), set(keep)
    both = sorted(exclude & keep)
    if both:
        raise TiltflowError(f"tilt(s) {', '.join(map(str, both))} given in both --exclude-tilts and --keep-tilts")
    ref = dark_reference(measures)
    ratios = {m.index: _num(m.dark_ratio) for m in measures}
    bright = [c for m in measures if (c := _num(m.contrast)) is not None
              and (ref is None or (ratios[m.index] or 0) > thresholds.dark_tol * ref)]
    cmed = sorted(bright)[len(bright) // 2] if bright else None
    means = [(abs(m.tilt_angle), v) for m in measures if (v := _num(m.mean_intensity)) is not None]
    iref = min(means)[1] if means else None
    out = []
    for m in measures:
        auto = auto_reasons(m, thresholds, ref, cmed, iref)
        if m.index in exclude:
            d = Decision(m.index, m.tilt_angle, True, ["excluded by user (--exclude-tilts)"] + auto, "user-exclude")
        elif m.index in keep and m.no_image:  # an explicit keep cannot bring back an image that is not there
            d = Decision(m.index, m.tilt_angle, True, auto + ["--keep-tilts ignored: no image"], "auto")
        elif m.index in keep:
            note = [USER_KEEP] + [f"overrides {r}" for r in auto]
            d = Decision(m.index, m.tilt_angle, False, note, "user-keep")
        else:
            d = Decision(m.index, m.tilt_angle, bool(auto), auto, "auto")
        out.append(d)
    return out


def residual_exclusions(residuals: Mapping[int, float] | Sequence[float], limit: float | None) -> dict[int, str]:
    """Tilts whose alignment residual (A) exceeds ``limit``: ``{index: reason}``; for the align step/report.

    ``residuals`` maps a tilt's index (any index the caller uses) to its residual, or is a sequence
    indexed from 0. ``limit`` None or <= 0 switches the rule off.
    """
    items = residuals.items() if isinstance(residuals, Mapping) else enumerate(residuals)
    if limit is None or limit <= 0:
        return {}
    out = {}
    for i, r in items:
        v = _num(r)
        if v is not None and v > limit:
            out[int(i)] = f"excluded: alignment residual {v:.1f} A, limit {limit:g} A"
    return out


# --- overrides -----------------------------------------------------------------------------------
_ITEM = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+))?\s*$")


def parse_tilt_list(text: str | None, option: str = "--exclude-tilts") -> dict[str, set[int]]:
    """Parse ``"TS_01:3,4;TS_02:7-9"`` into ``{"TS_01": {3, 4}, "TS_02": {7, 8, 9}}``.

    Series are separated by ``;`` (or whitespace), indices by ``,``; ``a-b`` is an inclusive range. Indices
    are 0-based acquisition indices (``tfAcquisitionIndex``, as ``tiltflow inspect`` lists them).
    """
    out: dict[str, set[int]] = {}
    if not text or not text.strip():
        return out
    for part in re.split(r"[;\s]+", text.strip()):
        if not part:
            continue
        name, sep, items = part.rpartition(":")
        if not sep or not name or not items.strip():
            raise TiltflowError(f"{option}: '{part}' is not SERIES:INDEX[,INDEX...] (e.g. TS_01:3,4)")
        idx = out.setdefault(name, set())
        for item in items.split(","):
            m = _ITEM.match(item)
            if not m:
                raise TiltflowError(f"{option}: '{item}' in '{part}' is not a tilt index or a range a-b")
            a, b = int(m.group(1)), int(m.group(2) or m.group(1))
            if b < a:
                raise TiltflowError(f"{option}: range '{item}' in '{part}' runs backwards")
            idx.update(range(a, b + 1))
    return out


def check_indices(series: str, wanted: set[int], valid: Iterable[int], option: str) -> None:
    """One-line error naming the indices of ``wanted`` the series does not have."""
    valid = set(valid)
    bad = sorted(wanted - valid)
    if bad:
        lo, hi = (min(valid), max(valid)) if valid else (0, -1)
        raise TiltflowError(f"{option}: tilt series {series} has no tilt with acquisition index "
                            f"{', '.join(map(str, bad))} (valid: {lo}-{hi})")


def validate_overrides(overrides: Mapping[str, set[int]], series_names: Iterable[str], option: str) -> None:
    """Session-level check (``tiltflow run``): every series named in an override exists."""
    names = set(series_names)
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise TiltflowError(f"{option}: no tilt series named {', '.join(unknown)} "
                            f"(series: {', '.join(sorted(names)) or 'none'})")
