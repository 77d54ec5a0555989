"""Export: collect the per-series STAR files into RELION 5's tomogram set.

Writes ``<outdir>/tomograms.star`` (table ``global``) and ``<outdir>/tilt_series/<name>.star``
(one table named after the series), RELION 5 labels only: tiltflow's ``tf*`` extras are dropped and
RELION 4's projection matrices are never written. Paths stay relative to the project root, so a RELION
project opened in the output folder finds the tomograms and micrographs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tiltflow import star
from tiltflow.errors import TiltflowError
from tiltflow.steplog import step_logs
from tiltflow.steps.common import at_root, root_relative_logs

#: per-tilt columns RELION 5 needs to read a tomogram set
REQUIRED_TILT_COLUMNS = (star.PRE_EXPOSURE, star.NOMINAL_TILT)


@dataclass(frozen=True)
class Options:
    """The export step has no options (RELION 5's layout is fixed); kept for the one step shape."""

    def validate(self) -> None:
        """Nothing to check."""


def run_session(stars: Sequence[str | Path], outdir: str | Path, options: Options, root: str | Path) -> Path:
    """Write RELION 5's ``tomograms.star`` + per-series files for ``stars`` (relative paths relative to the
    project ``root``); return tomograms.star.
    """
    options.validate()
    prefix = str(Path(outdir) / "tilt_series")  # rlnTomoTiltSeriesStarFile: relative to the root, as given
    outdir = at_root(outdir, root)
    if not stars:
        raise TiltflowError("no per-tilt-series STAR files given to export")
    with step_logs("export", outdir), root_relative_logs(root):
        series = [star.read_tilt_series(at_root(p, root)) for p in stars]
        names = [ts.name for ts in series]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise TiltflowError(f"tilt series given twice: {', '.join(sorted(dupes))}")
        for ts, path in zip(series, stars, strict=True):
            missing = [c for c in REQUIRED_TILT_COLUMNS if c not in ts.tilts.columns]
            if missing:
                raise TiltflowError(f"missing RELION columns {', '.join(missing)}", path)
        out = star.write_tomogram_set(sorted(series, key=lambda t: t.name), outdir, prefix)
        import logging

        logging.getLogger("tiltflow").info("wrote %s (%d tilt series)", out, len(series))
    return out
