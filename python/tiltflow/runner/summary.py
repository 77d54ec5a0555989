"""The end-of-run table: per tilt series what was kept, the defocus range, the alignment and the tomogram.

Read from the STAR files the steps wrote (never from the runner's memory), so the same table can be made
for results written by Nextflow. Printed with rich and written to ``OUT/summary.tsv``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

from tiltflow.atomic import write_text


@dataclass
class SeriesSummary:
    """One tilt series at the end of a run: how it went and what the steps measured, for the table."""

    name: str
    status: str = "ok"  # ok | "failed at <step>: <error>"
    tilts_total: int | None = None
    tilts_used: int | None = None
    excluded: int | None = None
    defocus_min_um: float | None = None
    defocus_max_um: float | None = None
    residual_px: float | None = None
    tilt_axis: float | None = None
    tomogram: str | None = None
    warnings: list[str] = field(default_factory=list)  # "motioncor: ..." from the steps' records


def series_summary(root: str | Path, name: str, status: str = "ok") -> SeriesSummary:
    """The end-of-run row of one series: the report's reading of its results (qc/report/collect.py)."""
    from tiltflow.qc.report.collect import read_series
    from tiltflow.runner.plan import SERIES_STEPS
    from tiltflow.runner.resume import warnings_of

    root = Path(root)
    sd = read_series(root, name)
    r = sd.results()
    s = SeriesSummary(name, status)
    if sd.stars:
        s.tilts_total, s.tilts_used, s.excluded = r.tilts_total, r.tilts_used, r.excluded
    s.defocus_min_um, s.defocus_max_um = r.defocus_min_um, r.defocus_max_um
    s.residual_px, s.tomogram = r.residual_px, r.tomogram
    s.tilt_axis = r.tilt_axis if r.tilt_axis_source == "aligned" else None
    s.warnings = [f"{step}: {w}" for step in SERIES_STEPS for w in warnings_of(root, f"{step}/{name}")]
    return s


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def rows(summaries: list[SeriesSummary]) -> list[list[str]]:
    """The table's cells, one row per series."""
    out = []
    for s in summaries:
        used = f"{s.tilts_used}/{s.tilts_total}" if s.tilts_used is not None and s.tilts_total else "-"
        defocus = (f"{s.defocus_min_um:.2f}-{s.defocus_max_um:.2f}" if s.defocus_min_um is not None else "-")
        out.append([s.name, used, "-" if s.excluded is None else str(s.excluded), defocus,
                    _fmt(s.residual_px, ".2f"), _fmt(s.tilt_axis, ".2f"), s.tomogram or "-", str(len(s.warnings)),
                    s.status])
    return out


HEADER = ["series", "tilts used", "excluded", "defocus (um)", "residual (px)", "tilt axis", "tomogram", "warnings",
          "status"]


def write_tsv(path: str | Path, summaries: list[SeriesSummary]) -> Path:
    """``summary.tsv``: numbers unformatted, one row per series."""
    keys = list(asdict(summaries[0]).keys()) if summaries else ["name"]
    lines = ["\t".join(keys)]
    for s in summaries:
        row = asdict(s)
        row["warnings"] = " | ".join(s.warnings)
        lines.append("\t".join("" if v is None else str(v) for v in row.values()))
    return write_text(path, "\n".join(lines) + "\n")


def print_table(console: Console, summaries: list[SeriesSummary], title: str = "tiltflow run") -> None:
    """Print the end-of-run table, then each series' warnings."""
    table = Table(title=title)
    for h in HEADER:
        table.add_column(h, overflow="fold")
    for r in rows(summaries):
        style = None if r[-1] == "ok" else "red"
        table.add_row(*r, style=style)
    console.print(table)
    for s in summaries:
        for w in s.warnings:
            console.print(f"warning: {s.name} {w}", style="yellow", overflow="fold")
