"""``python -m tiltflow.testing.demo_summary SESSION RESULTS``: where the results are and how close to the truth.

The last step of ``make demo``: a simulated session knows the answer (``ground_truth.json``), so the
demo ends by showing the user the files to open and a table of errors against that answer. The metrics
are :mod:`tiltflow.simulate.compare`'s, the same the benchmarks print.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from tiltflow.errors import TiltflowError
from tiltflow.simulate.compare import SeriesComparison, compare

#: what each column means, printed under the table
LEGEND = (
    "motion: RMS error of the frame drift (movie pixels); defocus: RMS error of the mean defocus (um); "
    "shifts: RMS alignment-shift error after removing the 3-D origin (movie pixels); axis: tilt-axis error "
    "(deg); angles: RMS tilt-angle error (deg); tomogram: correlation with the phantom (1 = perfect)"
)


def _f(v: float | None, spec: str) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def table(rows: list[SeriesComparison]) -> Table:
    t = Table(title="results against the simulated ground truth")
    for h in ("series", "tilts used", "motion (px)", "defocus (um)", "shifts (px)", "axis (deg)",
              "angles (deg)", "tomogram corr."):
        t.add_column(h, justify="right")
    for r in rows:
        used = f"{r.tilts_used}/{r.tilts}" if r.tilts_used is not None else f"-/{r.tilts}"
        t.add_row(r.name, used, _f(r.motion_rms_px, ".3f"), _f(r.defocus_rms_um, ".3f"), _f(r.shift_rms_px, ".2f"),
                  _f(r.tilt_axis_error_deg, "+.2f"), _f(r.tilt_angle_rms_deg, ".2f"),
                  _f(r.tomogram_correlation, ".3f"))
    return t


def summarise(session: str | Path, results: str | Path, console: Console | None = None) -> list[SeriesComparison]:
    """Print the locations and the comparison table; return the rows."""
    console = console or Console()
    results = Path(results)
    rows = compare(session, results)
    console.print(f"[bold]Results in {results}[/bold]")
    relion = results / "relion" / "tomograms.star"
    console.print(f"  RELION 5 tomogram set: {relion if relion.is_file() else '(missing)'}")
    for r in rows:
        tomo = results / r.tomogram if r.tomogram else None
        console.print(f"  {r.name}: tomogram {tomo if tomo and tomo.is_file() else '(missing)'}; "
                      f"tilt series {results / r.star_file if r.star_file else '(missing)'}")
    report = results / "report" / "report.html"
    if report.is_file():
        console.print(f"  report: {report}")
    console.print(table(rows))
    console.print(LEGEND, style="dim")
    return rows


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] in ("-h", "--help"):
        print(__doc__.splitlines()[0].strip("`"), file=sys.stderr)
        return 2
    try:
        rows = summarise(args[0], args[1], Console(width=max(Console().width, 120)))
    except TiltflowError as exc:
        print(f"tiltflow.testing.demo_summary: error: {exc}", file=sys.stderr)
        return 2
    return 0 if all(r.tomogram for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
