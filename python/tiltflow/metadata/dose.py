"""Dose per tilt and pre-exposure.

Sources, in order of trust: the user's value; ``ExposureDose`` when above zero (SerialEM's
calibrated dose on the specimen); ``FrameDosesAndNumber`` (sum of dose x count over its pairs;
the SerialEM help page spells it ``...Numbers``, both are read); ``DoseRate`` x ``ExposureTime``
(``DoseRate`` is electrons per physical camera pixel per second, so it is divided by the area of
that pixel at the specimen: ``(PixelSpacing / Binning)^2``).

Real files disagree (in cryoCAT's 018.mdoc the frame doses sum to 0.32 e/Å² while ``ExposureDose``
is 2.24 and ``PriorRecordDose`` steps by 2.24), so the chosen source is compared with the others and
with ``PriorRecordDose`` and every disagreement above 10 % is reported.

Pre-exposure of a tilt = the dose of every exposure before it in acquisition order, retakes
included (a dropped image still irradiated the sample); the first tilt has 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from statistics import median

from tiltflow.metadata.models import Tilt

#: relative difference above which two dose sources "disagree"
DISAGREEMENT = 0.10

FRAME_DOSE_KEYS = ("FrameDosesAndNumber", "FrameDosesAndNumbers")


def _float(keys: dict[str, str], key: str) -> float | None:
    try:
        v = float(keys[key].split()[0])
    except (KeyError, ValueError, IndexError):
        return None
    return v if v == v else None  # NaN -> None


def frame_doses(keys: dict[str, str]) -> tuple[float, int] | None:
    """(total dose, total frames) from ``FrameDosesAndNumber = d1 n1  d2 n2 ...``."""
    for k in FRAME_DOSE_KEYS:
        if k not in keys:
            continue
        try:
            vals = [float(x) for x in keys[k].split()]
        except ValueError:
            return None
        if len(vals) < 2 or len(vals) % 2:
            return None
        pairs = list(zip(vals[::2], vals[1::2], strict=True))
        return sum(d * n for d, n in pairs), int(round(sum(n for _, n in pairs)))
    return None


def dose_sources(keys: dict[str, str], pixel_spacing: float | None, binning: float | None) -> dict[str, float]:
    """Every positive dose estimate (e/Å²) the section offers, by source name, in order of trust."""
    out: dict[str, float] = {}
    ed = _float(keys, "ExposureDose")
    if ed is not None and ed > 0:
        out["ExposureDose"] = ed
    fd = frame_doses(keys)
    if fd is not None and fd[0] > 0:
        out["FrameDosesAndNumber"] = fd[0]
    rate = _float(keys, "DoseRate")
    t = _float(keys, "ExposureTime")
    ps = _float(keys, "PixelSpacing") or pixel_spacing
    b = _float(keys, "Binning") or binning or 1.0
    if rate and t and ps and rate > 0 and t > 0 and ps > 0:
        physical = ps / b  # Å per physical camera pixel at the specimen
        out["DoseRate x ExposureTime"] = rate * t / physical**2
    return out


def assign_doses(
    tilts: Sequence[Tilt],
    pixel_spacing: float | None,
    binning: float | None,
    user_dose: float | None = None,
) -> list[str]:
    """Set ``dose``/``dose_source`` of each tilt; return warnings about disagreeing sources."""
    per_source: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for t in tilts:
        sources = dose_sources(t.keys, pixel_spacing, binning)
        if user_dose is not None:
            t.dose, t.dose_source = float(user_dose), "user"
        elif sources:
            t.dose_source, t.dose = next(iter(sources.items()))
        else:
            t.dose, t.dose_source = None, ""
        if t.dose:
            for name, value in sources.items():
                if name != t.dose_source:
                    per_source.setdefault((t.dose_source, name), []).append((t.dose, value))
    warnings = []
    for (used, name), pairs in per_source.items():
        chosen = median(p[0] for p in pairs)
        other = median(p[1] for p in pairs)
        if abs(other - chosen) > DISAGREEMENT * chosen:
            warnings.append(
                f"dose sources disagree: {name} gives {other:.3g} e/A^2 per tilt, "
                f"{used} {chosen:.3g} (using {used})"
            )
    return warnings


def assign_pre_exposure(ordered: Sequence[Tilt]) -> None:
    """Pre-exposure in acquisition order: 0 for the first, then the running sum of doses.

    After a tilt without dose the pre-exposure is unknown (None) for all later tilts.
    """
    total: float | None = 0.0
    for t in ordered:
        t.pre_exposure = total
        if total is not None:
            total = total + t.dose if t.dose is not None else None


def check_prior_record_dose(ordered: Sequence[Tilt]) -> list[str]:
    """Compare pre-exposure with SerialEM's ``PriorRecordDose`` (counted from the first tilt)."""
    pairs = [(t, t.prior_record_dose) for t in ordered if t.prior_record_dose is not None and t.pre_exposure is not None]
    if len(pairs) < 2 or len(pairs) != len(ordered):
        return []
    base = ordered[0].prior_record_dose or 0.0
    worst = None
    for t, prd in pairs:
        expected = prd - base
        diff = abs(expected - (t.pre_exposure or 0.0))
        scale = max(expected, t.pre_exposure or 0.0)
        if scale > 0 and diff > DISAGREEMENT * scale and (worst is None or diff > worst[0]):
            worst = (diff, t, expected)
    if worst is None:
        return []
    diff, t, expected = worst
    return [
        f"PriorRecordDose disagrees with the summed doses: ZValue {t.z_value} ({t.tilt_angle:.1f} deg) "
        f"has {expected:.2f} e/A^2 from PriorRecordDose, {t.pre_exposure:.2f} from doses "
        "(PriorRecordDose also counts Preview/View exposures; the summed doses are used)"
    ]


def total_dose(tilts: Sequence[Tilt]) -> float | None:
    """e/Å² over ``tilts``, or None when any of them has no dose."""
    doses = [t.dose for t in tilts]
    if not doses or any(d is None for d in doses):
        return None
    return float(sum(d for d in doses if d is not None))
