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

#: The session rule, one for ``tiltflow inspect``, ``tiltflow run``/``watch`` and Nextflow's ``--input``
#: (subworkflows/local/utils_tiltflow_pipeline sessionInput uses this glob, tests/test_discovery.py checks
#: they agree): SerialEM and PACEtomo write the tilt-series mdocs (``TS_01.mrc.mdoc``, ``<name>_tgt_001.mrc.mdoc``)
#: at the top of the session folder, where the user points RELION's ImportTomo (``mdoc/*.mdoc``) or Warp;
#: sub-folders hold the frames and their per-movie mdocs, which are not tilt series, so they are not
#: searched. The suffix may have any case (a copy through Windows); hidden files (macOS ``._TS_01.mdoc``
#: on SMB shares) are not mdocs. Series in sub-folders: name each folder, or a glob.
MDOC_GLOB = "*.[mM][dD][oO][cC]"

OVERRIDE_SUFFIX = "_override"

#: the first title of the stack step's mdoc (stack/<TS>/<TS>.mdoc): a results folder inside the session is
#: not session data
STACK_MDOC_TITLE = "tiltflow: tilt-angle ordered stack of motion-corrected images"


def series_name(mdoc_path: str | Path) -> str:
    """RELION's rule: the mdoc basename with all suffixes stripped (``TS_01.mrc.mdoc`` -> ``TS_01``)."""
    return Path(mdoc_path).name.split(".")[0]


def is_mdoc_name(name: str) -> bool:
    """Whether a file name is an mdoc by the session rule (``MDOC_GLOB``): ``.mdoc`` in any case, not hidden."""
    return name.lower().endswith(".mdoc") and not name.startswith(".")


def session_mdocs(path: str | Path) -> list[Path]:
    """The tilt-series mdocs ``path`` names: a session folder's top-level mdocs, one mdoc, or a glob's mdocs."""
    p = Path(path)
    if any(c in p.name for c in "*?["):
        mdocs = sorted(m for m in p.parent.glob(p.name) if m.is_file() and is_mdoc_name(m.name))
        if not mdocs:
            raise TiltflowError("no .mdoc file matches", p)
        return mdocs
    if p.is_file():
        if not is_mdoc_name(p.name):
            raise TiltflowError("not an mdoc file (expected a SerialEM/Tomo5 *.mdoc or a session folder)", p)
        return [p]
    if not p.is_dir():
        raise TiltflowError("no such file or folder", p)
    mdocs = sorted(m for m in p.glob(MDOC_GLOB) if m.is_file() and is_mdoc_name(m.name))
    if not mdocs:
        raise TiltflowError("no .mdoc file in the session folder", p)
    return mdocs


def find_mdocs(paths: str | Path | Iterable[str | Path]) -> list[Path]:
    """The mdocs of every path (:func:`session_mdocs`), sorted by folder then name, each once."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    found = [m for p in paths for m in session_mdocs(p)]
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
