"""What ``tiltflow watch`` knows about each tilt series while SerialEM collects: read from the folder.

A :class:`SeriesTrack` follows one mdoc: its complete sections (``completeness.complete_part``), the
partial import of those sections (the import step's own ``build_series`` and ``series_to_star``, so
each tilt's row is the one the finished series' import will have), and per tilt whether its movie is
complete and what has been done with it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from tiltflow import star
from tiltflow.errors import TiltflowError
from tiltflow.live import completeness
from tiltflow.live.completeness import SizeWatch, Timing
from tiltflow.live.tasks import live_dir, movie_root_of, one_row, same_motion_inputs, tilt_star
from tiltflow.runner.params import RunParams

# series states
COLLECTING, COMPLETE, FINISHING, FINISHED, FAILED, INCOMPLETE = (
    "collecting", "complete", "finishing", "finished", "failed", "incomplete")
# tilt states
WAITING, QUEUED, RUNNING, DONE, TILT_FAILED = "waiting", "queued", "running", "done", "failed"


@dataclass
class TiltTrack:
    """One tilt of a series being watched: its movie's state and why it waits, if it does."""

    root: str
    frames: int | None  # the mdoc's frame count
    size: SizeWatch = field(default_factory=SizeWatch)
    state: str = WAITING
    why: str = "movie not there yet"
    error: str | None = None
    ready_at: float | None = None  # monotonic time the movie was found complete
    done_at: float | None = None


@dataclass
class SeriesTrack:
    """One tilt series being watched: its mdoc as last read, its tilts and how far it has got."""

    name: str
    mdoc: Path
    signature: tuple[int, int] = (-1, -1)  # (size, mtime_ns) of the mdoc last read
    sections: int = 0
    last_section: float = 0.0  # monotonic time the section count last grew
    md: object | None = None  # the MdocFile of the complete sections
    partial: star.TiltSeriesStar | None = None
    warnings: list[str] = field(default_factory=list)
    problem: str | None = None  # why the sections cannot be imported (yet)
    tilts: dict[str, TiltTrack] = field(default_factory=dict)
    state: str = COLLECTING
    finished_sections: int = 0  # section count the last finish ran on
    error: str | None = None
    complete_at: float | None = None
    finished_at: float | None = None

    @property
    def tilts_done(self) -> int:
        """Tilts whose processing is done."""
        return sum(t.state == DONE for t in self.tilts.values())


def read_series(track: SeriesTrack, root: Path, params: RunParams, now: float) -> bool:
    """Re-read the mdoc if it changed, and re-import while a section names a movie not there yet (a late
    movie: the import's row names the file as found). True when there are new complete sections.
    """
    try:
        st = track.mdoc.stat()
    except OSError:
        return False
    sig = (st.st_size, st.st_mtime_ns)
    if sig != track.signature:
        track.signature = sig
        md = completeness.complete_part(completeness.read_text(track.mdoc), track.mdoc)
        n = 0 if md is None else sum(s.kind == "ZValue" for s in md.sections)
        if n != track.sections and md is not None:
            track.sections, track.last_section, track.md = n, now, md
            _import_partial(track, md, root, params)
            return True
    if track.md is not None and _movie_missing(track, root):
        _import_partial(track, track.md, root, params)
    return False


def _movie_missing(track: SeriesTrack, root: Path) -> bool:
    return track.partial is not None and any(
        not star.resolve(m, root).is_file() for m in track.partial.tilts[star.MOVIE])


def _import_partial(track: SeriesTrack, md, root: Path, params: RunParams) -> None:
    """The import step's table of the complete sections, round-tripped through STAR as a batch run's
    motioncor reads it (``live/<TS>/import.star``).
    """
    from tiltflow.metadata.movies import MovieIndex
    from tiltflow.metadata.series import IncompleteMdoc, InvalidMdoc, build_series
    from tiltflow.runner.options import frames_dir
    from tiltflow.steps.importer import check_importable, series_to_star

    frames = frames_dir(params)
    try:
        ts = build_series(md, MovieIndex(frames), params.tilt_axis, params.dose_per_tilt)
        check_importable(ts)
        tss, notes = series_to_star(ts, params.kv, params.cs, params.amp_contrast, params.hand, root=root)
    except (IncompleteMdoc, InvalidMdoc, TiltflowError) as exc:
        track.problem = str(exc)
        return
    track.problem = None
    track.warnings = list(ts.warnings) + list(notes)
    path = root / live_dir(track.name) / "import.star"
    star.write_tilt_series(tss, path)
    track.partial = star.read_tilt_series(path)
    current = set()
    for i in range(len(track.partial.tilts)):
        row = track.partial.tilts.iloc[i]
        mroot = movie_root_of(row[star.MOVIE])
        current.add(mroot)
        if mroot not in track.tilts:
            frames_n = int(row[star.FRAME_COUNT]) if star.FRAME_COUNT in row else 0
            track.tilts[mroot] = TiltTrack(mroot, frames_n or None)
    for mroot in [k for k, t in track.tilts.items() if k not in current and t.state != RUNNING]:
        del track.tilts[mroot]  # a retaken image: the import keeps the newer one


def restore_tilt(track: SeriesTrack, tilt: TiltTrack, root: Path) -> bool:
    """A tilt done by an earlier watch on this outdir (its results there, for the same import row)."""
    if track.partial is None:
        return False
    mc, preview = root / tilt_star(track.name, tilt.root, "mc"), root / tilt_star(track.name, tilt.root, "ctf")
    if not (mc.is_file() and preview.is_file()):
        return False
    try:
        return same_motion_inputs(star.read_tilt_series(mc), tilt_row(track, tilt.root))
    except TiltflowError:
        return False


def tilt_row(track: SeriesTrack, mroot: str) -> star.TiltSeriesStar:
    """The one-row import table of tilt ``mroot``."""
    assert track.partial is not None
    for i in range(len(track.partial.tilts)):
        if movie_root_of(track.partial.tilts.iloc[i][star.MOVIE]) == mroot:
            return one_row(track.partial, i)
    raise KeyError(mroot)


def check_movie(track: SeriesTrack, tilt: TiltTrack, root: Path, timing: Timing, now: float) -> bool:
    """Update a waiting tilt; True when its movie has become complete."""
    row = tilt_row(track, tilt.root)
    movie = star.resolve(row.tilts.iloc[0][star.MOVIE], root)
    if not movie.is_file():
        # the mdoc's movie name is resolved as import does; a late movie may appear under that name later
        tilt.why = "movie not there yet"
        return False
    stable = tilt.size.update(movie.stat().st_size, now)
    why = completeness.movie_problem(movie, tilt.frames, stable, timing)
    tilt.why = why or ""
    return why is None


def series_complete(track: SeriesTrack, expected: int | None, timing: Timing, now: float) -> bool:
    """Every tilt processed and either the expected tilt count reached or no new section for a while."""
    if track.partial is None or track.problem or not track.tilts:
        return False
    if any(t.state not in (DONE, TILT_FAILED) for t in track.tilts.values()):
        return False
    if expected is not None:
        return track.sections >= expected
    return now - track.last_section >= timing.series_idle


def monotonic() -> float:
    """The clock of every time the watch keeps (monotonic: a change of the wall clock cannot cut a wait short)."""
    return time.monotonic()
