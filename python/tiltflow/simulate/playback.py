"""Playback: a simulated session written the way SerialEM writes it while it collects.

Why: ``tiltflow watch`` has to be tested and demonstrated on a folder that fills up. The session is
simulated once into a staging folder by the ordinary writer (:mod:`tiltflow.simulate.session`), then its
files are replayed into the target in real-time order, so a played-back session ends byte-identical to
a batch-simulated one:

- the gain reference first (SerialEM saves it with the first movie);
- per tilt the movie first, written in a few chunks as a camera's frames arrive, then the tilt's
  ``[ZValue = n]`` section appended to the mdoc (SerialEM appends a section after each image,
  ``AdocAppendSection`` in SerialEMDoc.cpp), so a section never names a movie that is not there;
- the mdoc's header and titles when a series starts (SerialEM writes them when it opens the file);
- PACEtomo-style interleaving: ``interleave`` series are collected together, tilt k of each target in
  turn (PACEtomo's tilt loop visits every target at one tilt angle before the next angle);
- ``ground_truth.json`` and the phantoms last.

:func:`plan_events` gives the ordered events; tests reorder, split or drop them to play back a late
movie, a section written in two parts or an abandoned series.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from tiltflow.errors import TiltflowError
from tiltflow.simulate.config import SimulationConfig
from tiltflow.simulate.session import GAIN_FILE, TRUTH_FILE
from tiltflow.simulate.truth import GroundTruth

SECTION = "[ZValue ="
MOVIE_CHUNKS = 4  # a movie lands in this many writes (frames arriving), then its section


@dataclass(frozen=True)
class Event:
    """One write into the session folder: copy ``source`` to ``target`` or append ``text`` to ``target``.

    ``tilt`` is True for the event that ends a tilt (its mdoc section): playback waits ``pace`` after it,
    and ``pause`` seconds after any event (tests use it to hold a file half-written).
    """

    series: str
    target: str  # relative to the session folder
    source: Path | None = None  # a file to copy (movie, gain, truth)
    text: str | None = None  # text to append (mdoc header or section)
    tilt: bool = False
    pause: float = 0.0


def split_mdoc(text: str) -> tuple[str, list[str]]:
    """An mdoc's text -> (header with titles, [each ``[ZValue = n]`` section with its blank line])."""
    starts = []
    pos = 0
    while True:
        i = text.find(SECTION, pos)
        if i < 0:
            break
        if i == 0 or text[i - 1] == "\n":
            starts.append(i)
        pos = i + 1
    if not starts:
        return text, []
    bounds = starts + [len(text)]
    return text[:starts[0]], [text[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


def plan_events(truth: GroundTruth, staging: Path, interleave: int = 1) -> list[Event]:
    """Every write of the session in SerialEM's real-time order (see the module docstring)."""
    if interleave < 1:
        raise TiltflowError(f"--interleave must be at least 1, got {interleave}")
    events = [Event("", GAIN_FILE, source=staging / GAIN_FILE)]
    series = list(truth.series)
    for g in range(0, len(series), interleave):
        group = series[g:g + interleave]
        parts = {}
        for s in group:
            header, sections = split_mdoc((staging / s.mdoc).read_text())
            if len(sections) != len(s.tilts):
                raise TiltflowError(f"{s.mdoc}: {len(sections)} sections for {len(s.tilts)} tilts", staging / s.mdoc)
            parts[s.name] = sections
            events.append(Event(s.name, s.mdoc, text=header))
        for k in range(max(len(s.tilts) for s in group)):
            for s in group:
                if k >= len(s.tilts):
                    continue
                # sections are in ZValue order, which is the acquisition order for SerialEM's tilt series
                t = next(t for t in s.tilts if t.acquisition_index == k)
                events.append(Event(s.name, t.movie, source=staging / t.movie))
                events.append(Event(s.name, s.mdoc, text=parts[s.name][t.z_value], tilt=True))
    for s in series:
        events.append(Event(s.name, s.phantom, source=staging / s.phantom))
    events.append(Event("", TRUTH_FILE, source=staging / TRUTH_FILE))
    return events


def apply(event: Event, out: Path, chunks: int = MOVIE_CHUNKS) -> None:
    """Perform one event: append text (flushed), or copy a file in ``chunks`` writes (a growing file)."""
    target = out / event.target
    target.parent.mkdir(parents=True, exist_ok=True)
    if event.text is not None:
        with open(target, "a", newline="") as fh:
            fh.write(event.text)
        return
    assert event.source is not None
    data = event.source.read_bytes()
    step = max(1, -(-len(data) // max(1, chunks)))
    with open(target, "wb") as fh:
        for i in range(0, len(data), step):
            fh.write(data[i:i + step])
            fh.flush()


def play(events: Iterable[Event], out: Path, pace: float = 0.0,
         sleep: Callable[[float], None] = time.sleep) -> int:
    """Write ``events`` into ``out``, waiting ``pace`` seconds after each tilt; returns the tilts written."""
    n = 0
    for ev in events:
        apply(ev, out)
        n += ev.tilt
        wait = ev.pause + (pace if ev.tilt else 0.0)
        if wait > 0:
            sleep(wait)
    return n


def staging_folder(out: Path) -> Path:
    """Where the whole session is simulated before playback: beside ``out``, on the same filesystem."""
    out = Path(out)
    return out.parent / f".{out.name}.playback"


def simulate_playback(cfg: SimulationConfig, out: Path, pace: float = 10.0, interleave: int = 1) -> GroundTruth:
    """Simulate ``cfg`` into a staging folder, then play it back into ``out`` (see the module docstring)."""
    from tiltflow.simulate.session import simulate_session

    out = Path(out)
    staging = staging_folder(out)
    if staging.exists():
        shutil.rmtree(staging)
    cfg = cfg if cfg.session_name else _named(cfg, out)
    truth = simulate_session(cfg, staging)
    try:
        out.mkdir(parents=True, exist_ok=True)
        play(plan_events(truth, staging, interleave), out, pace)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    truth.root = out
    return truth


def _named(cfg: SimulationConfig, out: Path) -> SimulationConfig:
    """SubFramePath names the session folder: the target's name, not the staging folder's."""
    from dataclasses import replace

    return replace(cfg, session_name=out.resolve().name or "session")
