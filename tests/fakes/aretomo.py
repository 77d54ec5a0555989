"""Fake AreTomo2 that writes a real AreTomo ``.aln``: ``tests/data/lil-aretomo__TS_121.aln`` (31 sections).

Only for the stack that file belongs to: 31 images whose ``-AngFile`` tilts are the file's TILT column;
anything else is refused (status 64). The ``.aln`` is written unchanged as ``<-InMrc stem>.aln`` beside
``-OutMrc`` (where AreTomo2 puts it). No real AreTomo console log is kept in tests/data, so this fake prints
nothing at all (not even for ``--version``): the log lines AreTomo prints (``Best tilt axis: ...``,
``CFindTiltAxis.cpp``) are parsed in unit tests only.
"""

from __future__ import annotations

import os
import sys

from fakes import DATA, refuse

ALN = DATA / "lil-aretomo__TS_121.aln"


def real_tilts() -> list[float]:
    """The TILT column (last) of the real .aln, one value per section."""
    rows = [ln.split() for ln in ALN.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    return [float(r[-1]) for r in rows]


def main() -> int:
    import mrcfile

    args = sys.argv[1:]
    if not args or args[0].lower() in ("--version", "-v"):
        return 0
    opts: dict[str, list[str]] = {}
    key = None
    for a in args:
        if a.startswith("-") and not a.lstrip("-").replace(".", "").isdigit():
            key = a.lower()
            opts[key] = []
        elif key is not None:
            opts[key].append(a)
    with mrcfile.open(opts["-inmrc"][0], header_only=True, permissive=True) as m:
        nz = int(m.header.nz)
    tilts = [float(ln.split()[0]) for ln in open(opts["-angfile"][0]) if ln.strip()]
    if nz != len(real_tilts()) or [round(t, 2) for t in tilts] != real_tilts():
        return refuse("AreTomo2", f"a stack of {nz} images at these tilts (the real .aln has 31 sections)")
    out = opts["-outmrc"][0]
    stem = os.path.splitext(os.path.basename(opts["-inmrc"][0]))[0]
    with open(os.path.join(os.path.dirname(out), stem + ".aln"), "w") as fh:
        fh.write(ALN.read_text())
    return 0
