"""One tilt-series mdoc -> :class:`TiltSeries`: global values, tilts, completeness, order and dose.

Completeness matters because SerialEM appends a section per image while it acquires: a file copied
mid-acquisition must be reported as incomplete, never imported as a shorter series. Signs checked:
the last section lacks keys that every other section has, the file ends inside a line (no final
newline: SerialEM always ends a section with a blank line), a section header cut short, or fewer
sections than the user expects.
"""

from __future__ import annotations

import math
import re
from dataclasses import replace

from tiltflow.metadata import dose as dose_mod
from tiltflow.metadata import order as order_mod
from tiltflow.metadata.discover import series_name
from tiltflow.metadata.mdoc import MdocFile, MdocSection
from tiltflow.metadata.models import Tilt, TiltSeries
from tiltflow.metadata.movies import MovieIndex

DEFAULT_VOLTAGE = 300.0

_AXIS_PATTERNS = (
    re.compile(r"tilt\s*axis\s*angle\s*=\s*([-+]?\d+(?:\.\d*)?)", re.IGNORECASE),  # SerialEM, Tomo5 TiltAxisAngle
)
_VERSION = re.compile(r"SerialEM\s+Version\s+([\w.\-]+)", re.IGNORECASE)


class IncompleteMdoc(Exception):
    """The mdoc is still being written (or was cut short)."""


class InvalidMdoc(Exception):
    """The mdoc is a tilt series but cannot be used as one."""


def _num(text: str | None) -> float | None:
    """First number of a value (``StagePosition = 1 2`` -> 1.0); None for empty, NaN or text."""
    try:
        v = float(str(text).split()[0])
    except (ValueError, IndexError):
        return None
    if v != v:
        return None
    return v


def _int(text: str | None) -> int | None:
    """:func:`_num` as an integer (``NumSubFrames = 10``)."""
    v = _num(text)
    return None if v is None else int(v)


def writer_of(md: MdocFile) -> str:
    """Which program wrote the mdoc (``SerialEM``, ``Tomo5`` or ``unknown``), as their files differ."""
    titles = " ".join(md.titles)
    if "SerialEM" in titles or "SerialEM" in md.header.get("Version", ""):
        return "SerialEM"
    if titles.startswith("Tomography") or "TiltAxisAngle" in titles:
        return "Tomo5"
    return "unknown"


def check_complete(md: MdocFile, expected_tilts: int | None = None) -> None:
    """Raise :class:`IncompleteMdoc` when ``md`` looks cut short."""
    zs = [s for s in md.sections if s.kind == "ZValue"]
    bad = [s for s in md.sections if not s.complete]
    if bad:
        raise IncompleteMdoc(f"section header cut short at line {bad[-1].line}")
    if expected_tilts is not None and len(zs) < expected_tilts:
        raise IncompleteMdoc(f"{len(zs)} of the expected {expected_tilts} tilts")
    if len(zs) >= 2:
        common = set.intersection(*(set(s.keys) for s in zs[:-1]))
        missing = sorted(common - set(zs[-1].keys))
        if missing:
            raise IncompleteMdoc(
                f"last section [ZValue = {zs[-1].index}] is partial (no {', '.join(missing[:4])}"
                f"{' ...' if len(missing) > 4 else ''})"
            )
    if zs and "TiltAngle" not in zs[-1].keys:
        raise IncompleteMdoc(f"last section [ZValue = {zs[-1].index}] has no TiltAngle")
    if not md.ends_with_newline and writer_of(md) != "Tomo5":
        raise IncompleteMdoc("file ends without a final newline (SerialEM may still be writing it)")


def complete_sections(md: MdocFile, expected_tilts: int | None = None) -> tuple[MdocFile, str | None]:
    """An mdoc SerialEM is still writing (it appends one section per tilt, ``AdocAppendSection``): its
    complete sections and a warning saying what was left out. Unchanged (and no warning) when the file is
    complete, when ``expected_tilts`` asks for a definite count, or when the problem is not at its end; then
    :func:`check_complete` reports it as before.
    """
    try:
        check_complete(md, expected_tilts)
        return md, None
    except IncompleteMdoc as exc:
        problem = str(exc)
    zs = [i for i, sec in enumerate(md.sections) if sec.kind == "ZValue" or not sec.complete]
    if expected_tilts is not None or len(zs) < 2:
        return md, None
    last = md.sections[zs[-1]]
    trimmed = replace(md, sections=md.sections[: zs[-1]], ends_with_newline=True)
    try:
        check_complete(trimmed)
    except IncompleteMdoc:
        return md, None
    n = sum(1 for sec in trimmed.sections if sec.kind == "ZValue")
    return trimmed, (f"the mdoc is still being written ({problem}): imported its {n} complete sections and left "
                     f"out [{last.kind} = {last.index}]")


def tilt_axis_from(md: MdocFile) -> tuple[float | None, str]:
    """Tilt-axis angle from the ``[T = ... Tilt axis angle = x ...]`` title, else RotationAngle - 90."""
    for title in md.titles:
        for pat in _AXIS_PATTERNS:
            m = pat.search(title)
            if m:
                return float(m.group(1)), "title"
    zs = [s for s in md.sections if s.kind == "ZValue"]
    rots = [r for r in (_num(s.keys.get("RotationAngle")) for s in zs) if r is not None]
    if rots:
        axis = sorted(rots)[len(rots) // 2] - 90.0
        axis = (axis + 180.0) % 360.0 - 180.0
        return axis, "RotationAngle - 90"
    return None, ""


def _tilt(section: MdocSection) -> Tilt:
    k = section.keys
    try:
        z = int(section.index)
    except ValueError as exc:
        raise InvalidMdoc(f"section [ZValue = {section.index}] at line {section.line} is not a number") from exc
    angle = _num(k.get("TiltAngle"))
    if angle is None:
        if k.get("TiltAngle", "").strip():  # say what the value is, not that there is none
            raise InvalidMdoc(f"section [ZValue = {z}] has TiltAngle = {k['TiltAngle'].strip()}, which is not a "
                              f"number of degrees")
        raise InvalidMdoc(f"section [ZValue = {z}] has no TiltAngle")
    frames = _int(k.get("NumSubFrames"))
    if frames is None:
        fd = dose_mod.frame_doses(k)
        frames = fd[1] if fd else None
    dt_text = " ".join(k.get("DateTime", "").split())
    return Tilt(
        z_value=z,
        tilt_angle=float(angle),
        sub_frame_path=k.get("SubFramePath") or None,
        frame_count=frames,
        prior_record_dose=_num(k.get("PriorRecordDose")),
        target_defocus=_num(k.get("TargetDefocus")),
        exposure_time=_num(k.get("ExposureTime")),
        date_time=order_mod.parse_datetime(dt_text),
        date_time_text=dt_text,
        keys=dict(k),
    )


def build_series(
    md: MdocFile,
    movies: MovieIndex,
    tilt_axis: float | None = None,
    dose_per_tilt: float | None = None,
    pixel_size: float | None = None,
    expected_tilts: int | None = None,
) -> TiltSeries:
    """Read one tilt-series mdoc (its complete sections when the last one is still being written, with a
    warning). Raises IncompleteMdoc / InvalidMdoc.
    """
    md, partial = complete_sections(md, expected_tilts)
    check_complete(md, expected_tilts)
    warnings: list[str] = [partial] if partial else []
    zs = [s for s in md.sections if s.kind == "ZValue"]
    tilts = [_tilt(s) for s in zs]
    zvals = sorted(t.z_value for t in tilts)
    if len(set(zvals)) != len(zvals):
        raise InvalidMdoc("repeated ZValue sections")
    if zvals != list(range(zvals[0], zvals[0] + len(zvals))):
        warnings.append(f"ZValues are not consecutive ({zvals[0]}..{zvals[-1]} for {len(zvals)} sections)")

    first = zs[0].keys
    raw_ps = md.header.get("PixelSpacing") or first.get("PixelSpacing")
    image_ps = _num(raw_ps)
    if raw_ps is None or not raw_ps.strip():
        raise InvalidMdoc("no PixelSpacing")
    if image_ps is None or not math.isfinite(image_ps) or image_ps <= 0:
        raise InvalidMdoc(f"PixelSpacing = {raw_ps.strip()}: expected the pixel size in A, a number above 0")
    binning = _num(first.get("Binning")) or 1.0
    movie_ps = float(pixel_size) if pixel_size else image_ps / max(binning, 1.0)
    voltage = _num(md.header.get("Voltage")) or _num(first.get("Voltage"))
    size = md.header.get("ImageSize", "").split()
    image_size = (int(size[0]), int(size[1])) if len(size) == 2 and all(s.isdigit() for s in size) else None
    version = _VERSION.search(md.header.get("Version", ""))
    writer = writer_of(md)

    axis: float | None
    if tilt_axis is not None:
        axis, axis_source = float(tilt_axis), "user"
    else:
        axis, axis_source = tilt_axis_from(md)
        if axis is None:
            warnings.append("no tilt-axis angle (no title, no RotationAngle): give --tilt-axis")
        elif axis_source != "title":
            warnings.append(f"no tilt-axis title: using RotationAngle - 90 = {axis:.1f} deg")
        elif writer == "Tomo5":
            warnings.append(
                f"tilt axis {axis:.2f} deg from a Tomo5 title: Tomo5 angles are known to be off, check it"
            )
    if pixel_size is None and binning > 1:
        warnings.append(
            f"movie pixel size {movie_ps:.4g} A = PixelSpacing / Binning ({image_ps:g} / {binning:g}); "
            "give --pixel-size if the movies were saved at another binning (super-resolution)"
        )
    if not md.ends_with_newline:
        warnings.append("file ends without a final newline (Tomo5 does this; last section is complete)")

    # order, retakes, dose
    ordered, order_source = order_mod.acquisition_order(tilts)
    if order_source != "DateTime":
        missing = [t.z_value for t in tilts if t.date_time is None]
        warnings.append(
            f"no usable DateTime for {len(missing)} of {len(tilts)} tilts: acquisition order from {order_source}"
        )
    warnings += dose_mod.assign_doses(ordered, image_ps, binning, dose_per_tilt)
    dose_mod.assign_pre_exposure(ordered)
    warnings += dose_mod.check_prior_record_dose(ordered)
    kept, dropped = order_mod.drop_retakes(ordered)
    for t in dropped:
        newer = next(k for k in kept if abs(k.tilt_angle - t.tilt_angle) < order_mod.RETAKE_TOLERANCE)
        warnings.append(
            f"retake: dropped ZValue {t.z_value} ({t.tilt_angle:.2f} deg, {t.movie_name or 'no movie'}, "
            f"{t.date_time_text or 'no time'}); kept the newer ZValue {newer.z_value}"
        )
    for i, t in enumerate(kept):
        t.acquisition_index = i
    no_dose = [t.z_value for t in kept if not t.dose]
    if no_dose:
        which = "all tilts" if len(no_dose) == len(kept) else f"ZValue {_ranges(no_dose)}"
        warnings.append(f"no dose in the mdoc for {which} (ExposureDose 0 or absent): give --dose-per-tilt")

    for t in kept + dropped:
        t.movie = movies.find(t.sub_frame_path, md.path.parent)
    missing_movies = [t.movie_name for t in kept if t.movie is None and t.movie_name]
    if missing_movies:
        shown = ", ".join(missing_movies[:5]) + (f" ... (+{len(missing_movies) - 5})" if len(missing_movies) > 5 else "")
        warnings.append(f"{len(missing_movies)} of {len(kept)} movies not found: {shown}")
    no_path = [t.z_value for t in kept if not t.sub_frame_path]
    if no_path:
        warnings.append(f"no SubFramePath for ZValue {_ranges(no_path)}")

    return TiltSeries(
        name=series_name(md.path),
        mdoc=md.path,
        pixel_size=movie_ps,
        image_pixel_size=image_ps,
        binning=binning,
        voltage=voltage if voltage else DEFAULT_VOLTAGE,
        voltage_from_mdoc=bool(voltage),
        image_size=image_size,
        data_mode=_int(md.header.get("DataMode")),
        tilt_axis=axis,
        tilt_axis_source=axis_source,
        writer=writer,
        serialem_version=version.group(1) if version else None,
        titles=list(md.titles),
        header=dict(md.header),
        tilts=kept,
        dropped=dropped,
        order_source=order_source,
        scheme=order_mod.detect_scheme([t.tilt_angle for t in kept]),
        warnings=warnings,
    )


def _ranges(values: list[int]) -> str:
    """[1, 2, 3, 7] -> '1-3, 7'."""
    values = sorted(values)
    out, start, prev = [], values[0], values[0]
    for v in values[1:] + [None]:
        if v is not None and v == prev + 1:
            prev = v
            continue
        out.append(f"{start}-{prev}" if prev != start else f"{start}")
        if v is not None:
            start = prev = v
    return ", ".join(out)
