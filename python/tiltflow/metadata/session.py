"""``load_session``: the library entry point that every command (inspect, import, run) uses."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from tiltflow.errors import TiltflowError
from tiltflow.metadata.discover import classify, find_mdocs, override_duplicates, series_name
from tiltflow.metadata.mdoc import read_mdoc
from tiltflow.metadata.models import Session, Skipped
from tiltflow.metadata.movies import MovieIndex
from tiltflow.metadata.series import IncompleteMdoc, InvalidMdoc, build_series

log = logging.getLogger("tiltflow.metadata")


def load_session(
    paths: str | Path | Iterable[str | Path],
    frames_dir: str | Path | None = None,
    tilt_axis: float | None = None,
    dose_per_tilt: float | None = None,
    pixel_size: float | None = None,
    expected_tilts: int | None = None,
) -> Session:
    """Read every tilt series under ``paths`` (folders and/or mdoc files).

    User values (``tilt_axis`` degrees, ``dose_per_tilt`` e/Å², ``pixel_size`` Å of the movies)
    override the mdoc. Files that are not tilt series, or that cannot be used, end up in
    ``Session.skipped`` with a reason; nothing here raises for one bad file except a missing path.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    paths = list(paths)
    if not paths:
        raise TiltflowError("no session folder or mdoc file given")
    if frames_dir is not None and not Path(frames_dir).is_dir():
        raise TiltflowError("frames folder not found", frames_dir)
    if dose_per_tilt is not None and not dose_per_tilt > 0:
        raise TiltflowError(f"--dose-per-tilt must be above 0, got {dose_per_tilt}")
    if pixel_size is not None and not pixel_size > 0:
        raise TiltflowError(f"--pixel-size must be above 0, got {pixel_size}")
    mdocs, skipped = override_duplicates(find_mdocs(paths))
    movies = MovieIndex(frames_dir)
    session = Session(skipped=skipped)
    seen: dict[str, Path] = {}
    for path in mdocs:
        try:
            md = read_mdoc(path)
        except OSError as exc:
            session.skipped.append(Skipped(path, "invalid", f"cannot read: {exc.strerror or exc}"))
            continue
        why = classify(md)
        if why is not None:
            if why.kind == "empty" and not md.ends_with_newline and (md.header or md.titles):
                why = Skipped(path, "incomplete", "no [ZValue] section yet and no final newline (being written?)")
            session.skipped.append(why)
            continue
        name = series_name(path)
        if name in seen:
            session.skipped.append(Skipped(path, "duplicate", f"tilt-series name {name} already taken by {seen[name]} "
                                                               "(import the two folders into different --outdir)"))
            continue
        try:
            ts = build_series(md, movies, tilt_axis, dose_per_tilt, pixel_size, expected_tilts)
        except IncompleteMdoc as exc:
            session.skipped.append(Skipped(path, "incomplete", f"incomplete mdoc: {exc}"))
            continue
        except InvalidMdoc as exc:
            session.skipped.append(Skipped(path, "invalid", str(exc)))
            continue
        seen[name] = path
        session.series.append(ts)
    session.series.sort(key=lambda s: s.name)
    for s in session.skipped:
        log.debug("skipped %s: %s", s.path, s.reason)
    return session
