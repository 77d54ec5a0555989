"""Plain-data view of a session (what ``tiltflow inspect --json`` prints and the report can reuse)."""

from __future__ import annotations

from typing import Any

from tiltflow.metadata.models import Session, Tilt, TiltSeries
from tiltflow.metadata.order import dose_symmetric_group_size


def _r(x: float | None, nd: int = 4) -> float | None:
    return None if x is None else round(float(x), nd)


def tilt_dict(t: Tilt) -> dict[str, Any]:
    """One tilt as JSON values, for ``tiltflow inspect``."""
    return {
        "z_value": t.z_value,
        "tilt_angle": _r(t.tilt_angle),
        "acquisition_index": t.acquisition_index,
        "dose": _r(t.dose),
        "dose_source": t.dose_source or None,
        "pre_exposure": _r(t.pre_exposure),
        "prior_record_dose": _r(t.prior_record_dose),
        "movie": str(t.movie) if t.movie is not None else t.movie_name,
        "movie_found": t.movie_found,
        "sub_frame_path": t.sub_frame_path,
        "frame_count": t.frame_count,
        "target_defocus": _r(t.target_defocus),
        "exposure_time": _r(t.exposure_time),
        "date_time": t.date_time.isoformat() if t.date_time else None,
    }


def dose_per_tilt(ts: TiltSeries) -> float | None:
    """Median dose per tilt (e/Å²), None when any tilt has no dose."""
    doses = sorted(t.dose for t in ts.tilts if t.dose is not None)
    if len(doses) != len(ts.tilts) or not doses:
        return None
    return doses[len(doses) // 2]


def series_dict(ts: TiltSeries) -> dict[str, Any]:
    """One tilt series and its tilts as JSON values, for ``tiltflow inspect``."""
    lo, hi = ts.angle_range
    return {
        "name": ts.name,
        "mdoc": str(ts.mdoc),
        "writer": ts.writer,
        "serialem_version": ts.serialem_version,
        "pixel_size": _r(ts.pixel_size, 5),
        "image_pixel_size": _r(ts.image_pixel_size, 5),
        "binning": ts.binning,
        "voltage": ts.voltage,
        "image_size": list(ts.image_size) if ts.image_size else None,
        "data_mode": ts.data_mode,
        "tilt_axis": _r(ts.tilt_axis, 3),
        "tilt_axis_source": ts.tilt_axis_source or None,
        "n_tilts": ts.n_tilts,
        "angle_range": [_r(lo, 3), _r(hi, 3)],
        "scheme": ts.scheme,
        "group_size": dose_symmetric_group_size([t.tilt_angle for t in ts.tilts]) if ts.scheme == "dose-symmetric" else None,
        "order_source": ts.order_source,
        "dose_per_tilt": _r(dose_per_tilt(ts)),
        "total_dose": _r(ts.total_dose, 3),
        "movies_found": sum(t.movie_found for t in ts.tilts),
        "movies_missing": ts.missing_movies,
        "dropped_retakes": [tilt_dict(t) for t in ts.dropped],
        "warnings": list(ts.warnings),
        "tilts": [tilt_dict(t) for t in ts.tilts],
    }


def session_dict(session: Session) -> dict[str, Any]:
    """The whole session as JSON values: its series and the files set aside."""
    return {
        "series": [series_dict(ts) for ts in session.series],
        "skipped": [{"path": str(s.path), "kind": s.kind, "reason": s.reason} for s in session.skipped],
    }


def skipped_lines(session: Session, limit: int = 5) -> list[tuple[str, str, str]]:
    """(file, kind, reason) rows for people: problems one by one, other kinds grouped when numerous.

    A SerialEM session holds one frame mdoc per movie (thousands); listing each would bury the
    incomplete file that matters.
    """
    rows: list[tuple[str, str, str]] = []
    by_kind: dict[str, list] = {}
    for s in session.skipped:
        by_kind.setdefault(s.kind, []).append(s)
    # problems first: they are what a user must act on
    for kind, items in sorted(by_kind.items(), key=lambda kv: not kv[1][0].is_problem):
        if items[0].is_problem or len(items) <= limit:
            rows += [(str(s.path), kind, s.reason) for s in items]
        else:
            first = items[0]
            rows.append((f"{len(items)} files like {first.path}", kind, first.reason))
    return rows
