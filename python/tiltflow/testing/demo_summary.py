"""``python -m tiltflow.testing.demo_summary SESSION RESULTS``: where the results are and how close to the truth.

The last step of ``make demo``: a simulated session knows the answer (``ground_truth.json``), so the
demo ends by showing the user the files to open and a table of errors against that answer. The metrics
are :mod:`tiltflow.simulate.compare`'s, the same the benchmarks print. A second table per series shows
what the CTF correction gains: the tomogram reconstructed from the run's alignment with every
``--ctf-correction`` mode, its FSC against the phantom, and each shell beyond the first CTF zero of the
highest-defocus tilt (where uncorrected contrast reverses).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from tiltflow.errors import TiltflowError
from tiltflow.simulate.compare import SeriesComparison, TomogramMetrics, compare

#: the CTF corrections compared on the same alignment (``tiltflow reconstruct --ctf-correction``)
CORRECTIONS = ("none", "phaseflip", "wiener", "3d")

#: what each column means, printed under the table
LEGEND = (
    "motion: RMS error of the frame drift (movie pixels); defocus: RMS error of the mean defocus (um); "
    "shifts: RMS alignment-shift error after removing the 3-D origin (movie pixels); axis: tilt-axis error "
    "(deg); angles: RMS tilt-angle error (deg); tomogram: correlation with the phantom (1 = perfect); FSC: "
    "resolution where the Fourier shell correlation with the phantom falls below 0.5 and 0.143"
)


def _f(v: float | None, spec: str) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def table(rows: list[SeriesComparison]) -> Table:
    """The comparison as a table, one row per series."""
    t = Table(title="results against the simulated ground truth")
    for h in ("series", "tilts used", "motion (px)", "defocus (um)", "shifts (px)", "axis (deg)",
              "angles (deg)", "tomogram corr.", "FSC 0.5 (A)", "FSC 0.143 (A)"):
        t.add_column(h, justify="right")
    for r in rows:
        used = f"{r.tilts_used}/{r.tilts}" if r.tilts_used is not None else f"-/{r.tilts}"
        t.add_row(r.name, used, _f(r.motion_rms_px, ".3f"), _f(r.defocus_rms_um, ".3f"), _f(r.shift_rms_px, ".2f"),
                  _f(r.tilt_axis_error_deg, "+.2f"), _f(r.tilt_angle_rms_deg, ".2f"),
                  _f(r.tomogram_correlation, ".3f"), _f(r.tomogram_fsc_05, ".1f"), _f(r.tomogram_fsc_0143, ".1f"))
    return t


def correction_metrics(session: str | Path, results: str | Path, name: str,
                       modes=CORRECTIONS) -> dict[str, TomogramMetrics]:
    """Each CTF correction's tomogram of series ``name`` against the phantom, all from the run's alignment.

    The run's own tomogram counts for its mode; the other modes are reconstructed with the run's recorded
    reconstruct options (halves off) into a temporary folder inside ``results``, removed afterwards.
    """
    import json
    import tempfile
    from dataclasses import replace

    from tiltflow import star
    from tiltflow.simulate.compare import tomogram_metrics
    from tiltflow.simulate.truth import load_truth
    from tiltflow.steps.common import run_star_step
    from tiltflow.steps.reconstruct import Options as ReconstructOptions

    results = Path(results).resolve()
    truth = load_truth(Path(session).resolve())  # absolute: the reconstructions run inside ``results``
    series = next(s for s in truth.series if s.name == name)
    rec_dir = results / "reconstruct" / name
    rec = star.read_tilt_series(rec_dir / f"{name}.star")
    record = json.loads((rec_dir / ".tiltflow-step.json").read_text()).get("options", {})
    known = set(ReconstructOptions.__dataclass_fields__)
    opts = replace(ReconstructOptions(**{k: v for k, v in record.items() if k in known}), halves=False)
    out: dict[str, TomogramMetrics] = {}
    with tempfile.TemporaryDirectory(dir=results, prefix=".demo-ctf-") as tmp:
        for mode in modes:  # STAR paths are relative to the results folder (the project root)
            if mode == opts.ctf_correction:
                out[mode] = tomogram_metrics(rec, star.resolve(str(rec.globals[star.TOMOGRAM]), results),
                                             truth, series)
                continue
            made = run_star_step("reconstruct", Path("align") / name / f"{name}.star", Path(tmp).name,
                                 replace(opts, ctf_correction=mode), results)
            ts = star.read_tilt_series(made)
            out[mode] = tomogram_metrics(ts, star.resolve(str(ts.globals[star.TOMOGRAM]), results), truth,
                                         series)
    return out


def correction_table(name: str, metrics: dict[str, TomogramMetrics]) -> Table:
    """FSC against the phantom per CTF correction: resolutions, the mean either side of the first zero, and
    every shell beyond it.
    """
    first = next(iter(metrics.values()))
    t = Table(title=f"{name}: CTF correction, FSC against the phantom (first CTF zero of the highest-defocus "
                    f"tilt at {first.first_zero_A:.1f} A, phantom/tomogram Nyquist {first.nyquist_A:.1f} A)")
    t.add_column("", justify="left")
    for mode in metrics:
        t.add_column(mode, justify="right")
    t.add_row("correlation", *[_f(m.correlation, ".3f") for m in metrics.values()])
    t.add_row("FSC 0.5 (A)", *[_f(m.shells.resolution_05, ".1f") for m in metrics.values()])
    t.add_row("FSC 0.143 (A)", *[_f(m.shells.resolution_0143, ".1f") for m in metrics.values()])
    t.add_row("mean FSC below the zero", *[_f(m.below_zero, ".3f") for m in metrics.values()])
    t.add_row("mean FSC beyond the zero", *[_f(m.beyond_zero, ".3f") for m in metrics.values()])
    k = first.shells.frequency
    for j in range(len(k)):
        if 1.0 / first.first_zero_A <= k[j] <= 1.0 / first.nyquist_A:
            t.add_row(f"  shell {1.0 / k[j]:.1f} A", *[_f(float(m.shells.fsc[j]), ".3f") for m in metrics.values()])
    return t


def summarise(session: str | Path, results: str | Path, console: Console | None = None,
              corrections=CORRECTIONS) -> list[SeriesComparison]:
    """Print the locations and the comparison table (and, with ``corrections``, the CTF-correction table
    of each series); return the rows.
    """
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
    if corrections:
        for r in rows:
            if r.tomogram:
                console.print(correction_table(r.name, correction_metrics(session, results, r.name, corrections)))
    return rows


def main(argv: list[str] | None = None) -> int:
    """The command line: compare RESULTS with the simulated SESSION; exit 1 if a series has no tomogram, 2 on bad use."""
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
