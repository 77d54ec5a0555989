"""When a movie, and when a tilt series, is complete while SerialEM is still collecting.

Movie: its mdoc section exists, its size has not changed for ``movie_stable`` seconds, and it opens
with the frame count the mdoc states (``NumSubFrames``; EER: raw fractions), through the same readers
motion correction uses, which refuse a truncated TIFF page chain or MRC stack. The stable size alone is
not enough on a network share that delivers a file in bursts; the frame count alone is not enough for a
TIFF whose last page is still being written.

Section: SerialEM appends ``[ZValue = n]`` after each image (``AdocAppendSection``, SerialEMDoc.cpp) and
ends it with a blank line. :func:`complete_part` cuts a growing mdoc back to its complete sections
(the checks of :func:`tiltflow.metadata.series.check_complete`), so a section still being written is
waited for, never half-read.

Series: complete when its section count reaches the expected tilt count (``--tilts``), or when no new
section has come for ``series_idle`` seconds and every movie is complete.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tiltflow.errors import TiltflowError
from tiltflow.metadata.mdoc import MdocFile, parse_mdoc_text
from tiltflow.metadata.series import IncompleteMdoc, check_complete

SECTION = "[ZValue"


@dataclass(frozen=True)
class Timing:
    """The configurable waits (seconds)."""

    movie_stable: float = 2.0  # a movie's size unchanged this long
    series_idle: float = 60.0  # no new section this long: the series is complete
    idle: float = 600.0  # nothing new and nothing to do this long: watch ends


def read_text(path: Path) -> str:
    """A file's text as UTF-8, else as Latin-1, so that an mdoc with odd bytes is still read."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def complete_part(text: str, path: Path) -> MdocFile | None:
    """The mdoc cut back to its complete sections, or None while not even one section is complete."""
    while True:
        md = parse_mdoc_text(text, path)
        if not any(s.kind == "ZValue" for s in md.sections):
            return None
        try:
            check_complete(md)
            return md
        except IncompleteMdoc:
            cut = text.rfind("\n[")  # the last section's header, complete or cut short
            if cut < 0:
                return None
            text = text[:cut + 1]


@dataclass
class SizeWatch:
    """A file's size and since when (monotonic seconds) it has had it."""

    size: int = -1
    since: float = 0.0

    def update(self, size: int, now: float) -> float:
        """Record ``size`` seen at ``now``; return for how long the size has been stable."""
        if size != self.size:
            self.size, self.since = size, now
        return now - self.since


def movie_problem(path: Path | None, frames: int | None, stable_for: float, timing: Timing,
                  eer_grouping: int | None = None) -> str | None:
    """None when the movie is complete, else what it is waited for (for the live report)."""
    if path is None or not path.is_file():
        return "movie not there yet"
    if stable_for < timing.movie_stable:
        return "movie still growing"
    from tiltflow.io.movies import open_movie

    try:
        with open_movie(path, eer_grouping=eer_grouping) as movie:
            n = int(getattr(movie, "n_fractions", movie.n_frames))
    except (TiltflowError, OSError, ValueError) as exc:
        return f"movie not readable yet ({str(exc)[:120]})"
    if frames and n != frames and stable_for < timing.series_idle:
        # a complete movie whose count differs from the mdoc's is taken once it has not grown for the
        # series' idle time; motion correction then warns, as it does in a batch run
        return f"movie has {n} of {frames} frames"
    return None
