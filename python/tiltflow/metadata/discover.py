"""Which files of a session are tilt series.

A tilt-series mdoc has ``[ZValue = n]`` sections, one per image of the stack. SerialEM also writes
one mdoc per movie (``[FrameSet = 0]``, next to the movie, often in the same folder), montage
mdocs (``Montage = 1``, ``PieceCoordinates``) and, for continuous/frame-based tilt series, a single
movie mdoc whose ``[ZValue]`` sections are frame ranges (``FrameTSStartEndFrames``). Tomo5 may leave
an ``*_override.mdoc`` copy next to the real one. None of these are tilt series here; each is set
aside with a reason instead of breaking discovery (RELION's importer fails on them: 3dem/relion#1135).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from tiltflow.errors import TiltflowError
from tiltflow.metadata.mdoc import MdocFile
from tiltflow.metadata.models import Skipped
from tiltflow.metadata.movies import windows_basename

#: how deep below a session folder mdocs are looked for (frames/ sub-folders hold per-movie mdocs)
MAX_DEPTH = 3

OVERRIDE_SUFFIX = "_override"

#: the first title of the stack step's mdoc (stack/<TS>/<TS>.mdoc): a results folder inside the session is
#: not session data
STACK_MDOC_TITLE = "tiltflow: tilt-angle ordered stack of motion-corrected images"


def series_name(mdoc_path: str | Path) -> str:
    """RELION's rule: the mdoc basename with all suffixes stripped (``TS_01.mrc.mdoc`` -> ``TS_01``)."""
    return Path(mdoc_path).name.split(".")[0]


def find_mdocs(paths: Iterable[str | Path]) -> list[Path]:
    """The mdoc files named by ``paths`` (files, or folders searched a few levels deep), sorted, unique."""
    found: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            base = len(p.parts)
            for dirpath, dirnames, filenames in os.walk(p):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                if len(Path(dirpath).parts) - base >= MAX_DEPTH:
                    dirnames[:] = []
                found += [Path(dirpath) / f for f in filenames if f.lower().endswith(".mdoc") and not f.startswith(".")]
        elif p.is_file():
            if not p.name.lower().endswith(".mdoc"):
                raise TiltflowError("not an mdoc file (expected a SerialEM/Tomo5 *.mdoc or a session folder)", p)
            found.append(p)
        else:
            raise TiltflowError("no such file or folder", p)
    unique = {os.path.abspath(f): f for f in found}
    return sorted(unique.values(), key=lambda f: (str(f.parent), f.name))


def override_duplicates(mdocs: list[Path]) -> tuple[list[Path], list[Skipped]]:
    """Set aside Tomo5 ``X_override.mdoc`` files whose ``X.mdoc`` (or ``X.mrc.mdoc``) is also present."""
    names = {(str(m.parent), m.name) for m in mdocs}
    keep, skipped = [], []
    for m in mdocs:
        stem = m.name[: -len(".mdoc")] if m.name.lower().endswith(".mdoc") else m.name
        if stem.endswith(OVERRIDE_SUFFIX):
            base = stem[: -len(OVERRIDE_SUFFIX)]
            twins = [n for n in (f"{base}.mdoc", f"{base}.mrc.mdoc") if (str(m.parent), n) in names]
            if twins:
                skipped.append(Skipped(m, "override", f"Tomo5 _override duplicate of {twins[0]}"))
                continue
        keep.append(m)
    return keep, skipped


def classify(md: MdocFile) -> Skipped | None:
    """None if ``md`` is a tilt-series mdoc, else why not."""
    kinds = md.kinds()
    zsections = [s for s in md.sections if s.kind == "ZValue"]
    if md.titles[:1] == [STACK_MDOC_TITLE]:
        return Skipped(md.path, "output", "tiltflow's own stack mdoc (a results folder), not session data")
    if md.header.get("Montage", "0").strip() not in ("", "0") or "MontSection" in kinds or any(
        "PieceCoordinates" in s.keys for s in zsections
    ):
        return Skipped(md.path, "montage", f"montage mdoc ({len(zsections)} pieces), not a tilt series")
    if "FrameSet" in kinds:
        if any("FrameTSStartEndFrames" in s.keys for s in zsections):
            return Skipped(
                md.path,
                "frame-series",
                f"frame-based tilt series: one movie split into {len(zsections)} tilts by "
                "FrameTSStartEndFrames (not supported: needs one movie per tilt)",
            )
        movie = next((s.keys.get("SubFramePath", "") for s in md.sections if s.kind == "FrameSet"), "")
        what = f" of movie {windows_basename(movie)}" if movie else ""
        return Skipped(md.path, "frames", f"per-movie frame mdoc ([FrameSet] section{what}), not a tilt series")
    if not zsections:
        other = ", ".join(sorted(kinds - {"ZValue"})) or "no sections"
        return Skipped(md.path, "empty", f"no [ZValue] sections ({other}): not a tilt series")
    return None
