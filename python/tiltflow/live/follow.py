"""Follow a session and announce each tilt series as it becomes complete: the pipeline's ``--watch`` mode.

Why a Python command: the pipeline's FOLLOW task runs ``tiltflow follow``, so a series enters the
per-series chain by exactly the rule ``tiltflow watch`` applies (:func:`tiltflow.live.state.series_complete`:
complete sections only, every movie complete - stable size and the mdoc's frame count - and ``--tilts``
sections or ``--series-idle`` s without a new one), and the watch ends by ``tiltflow watch``'s rule too
(nothing new for ``until`` s, or the stop file). Nextflow's ``channel.watchPath`` has no timer (it emits
on file events only, so it can see neither an idle series nor an idle session) and its watcher thread keeps
the pipeline alive until the watched channel itself ends, so the pipeline watches the folder this command
writes instead of the session (subworkflows/local/watch_mdocs):

- ``READY/watch_series_<TS>``: the series' mdoc path, written (atomically) once, when the series is complete;
- ``READY/watch_end``: written last, when the watch ends, listing the series never found complete.

A series that gets more sections after it was announced is not announced again (Nextflow has run it);
``tiltflow watch`` re-finishes such a series.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tiltflow.atomic import write_text
from tiltflow.errors import TiltflowError
from tiltflow.live import state as st
from tiltflow.live.completeness import Timing
from tiltflow.runner.params import RunParams

SERIES_PREFIX = "watch_series_"
END = "watch_end"


@dataclass
class FollowResult:
    """How the follow ended: the series announced (in order) and those never complete, with why."""

    stopped_by: str
    announced: list[str] = field(default_factory=list)
    incomplete: dict[str, str] = field(default_factory=dict)


def follow_session(session: Path, ready: Path, root: Path, params: RunParams, timing: Timing,
                   expected: int | None, stop_file: Path | None = None, tick: float = 1.0,
                   clock: Callable[[], float] = time.monotonic,
                   sleep: Callable[[float], None] = time.sleep) -> FollowResult:
    """Announce the complete series of ``session`` into ``ready`` until idle for ``timing.idle`` s or the
    stop file (partial imports go under ``root/live/<TS>``, as in ``tiltflow watch``).
    """
    from tiltflow.metadata.discover import series_name
    from tiltflow.runner.pipeline import find_mdocs

    ready.mkdir(parents=True, exist_ok=True)
    tracks: dict[str, st.SeriesTrack] = {}
    result = FollowResult("idle")
    last_new = clock()
    while True:
        now = clock()
        try:
            mdocs = find_mdocs(session)
        except TiltflowError:
            mdocs = []  # no mdoc yet: the session has not started
        for mdoc in mdocs:
            track = tracks.setdefault(series_name(mdoc), st.SeriesTrack(series_name(mdoc), mdoc))
            if st.read_series(track, root, params, now):
                last_new = now
            for tilt in track.tilts.values():
                if tilt.state == st.WAITING and st.check_movie(track, tilt, root, timing, now):
                    tilt.state = st.DONE  # its movie is complete: all this rule needs of a tilt
                    last_new = now
            if track.state == st.COLLECTING and st.series_complete(track, expected, timing, now):
                track.state = st.COMPLETE
                write_text(ready / f"{SERIES_PREFIX}{track.name}", f"{mdoc.resolve()}\n")
                result.announced.append(track.name)
                last_new = now
        stop = stop_file is not None and stop_file.exists()
        if stop or now - last_new >= timing.idle:
            result.stopped_by = "stop file" if stop else "idle"
            for t in tracks.values():
                if t.state == st.COLLECTING:
                    waiting = [x.why for x in t.tilts.values() if x.state == st.WAITING]
                    result.incomplete[t.name] = t.problem or (waiting[0] if waiting else
                                                              f"{t.sections} section(s), not complete")
            lines = [f"{n}\t{why}" for n, why in sorted(result.incomplete.items())]
            write_text(ready / END, "".join(f"{line}\n" for line in [f"stopped by {result.stopped_by}", *lines]))
            return result
        sleep(tick)
