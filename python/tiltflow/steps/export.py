"""Export: collect the per-series STAR files into RELION 5's tomogram set.

Writes ``<outdir>/tomograms.star`` (table ``global``) and ``<outdir>/tilt_series/<name>.star``
(one table named after the series), RELION 5 labels only: tiltflow's ``tf*`` extras are dropped and
RELION 4's projection matrices are never written. Paths stay relative to the project root, so a RELION
project opened in the output folder finds the tomograms and micrographs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tiltflow import star
from tiltflow.errors import TiltflowError
from tiltflow.steplog import step_logs

#: per-tilt columns RELION 5 needs to read a tomogram set
REQUIRED_TILT_COLUMNS = (star.PRE_EXPOSURE, star.NOMINAL_TILT)


def export(stars: Sequence[str | Path], outdir: str | Path = "relion") -> Path:
    """Write RELION 5's ``tomograms.star`` + per-series files for ``stars``; return tomograms.star."""
    outdir = Path(outdir)
    if not stars:
        raise TiltflowError("no per-tilt-series STAR files given to export")
    with step_logs("export", outdir):
        series = [star.read_tilt_series(p) for p in stars]
        names = [ts.name for ts in series]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise TiltflowError(f"tilt series given twice: {', '.join(sorted(dupes))}")
        for ts, path in zip(series, stars, strict=True):
            missing = [c for c in REQUIRED_TILT_COLUMNS if c not in ts.tilts.columns]
            if missing:
                raise TiltflowError(f"missing RELION columns {', '.join(missing)}", path)
        out = star.write_tomogram_set(sorted(series, key=lambda t: t.name), outdir)
        import logging

        logging.getLogger("tiltflow").info("wrote %s (%d tilt series)", out, len(series))
    return out
