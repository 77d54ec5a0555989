"""The end-of-run table: per tilt series what was kept, the defocus range, the alignment and the tomogram.

Read from the STAR files the steps wrote (never from the runner's memory), so the same table can be made
for results written by Nextflow. Printed with rich and written to ``OUT/summary.tsv``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from tiltflow import star
from tiltflow.atomic import write_text
from tiltflow.columns import TF_EXCLUDED
from tiltflow.errors import TiltflowError


@dataclass
class SeriesSummary:
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


def _read(root: Path, step: str, name: str) -> star.TiltSeriesStar | None:
    path = root / step / name / f"{name}.star"
    if not path.is_file():
        return None
    try:
        return star.read_tilt_series(path)
    except TiltflowError:
        return None


def _residual(ts: star.TiltSeriesStar) -> float | None:
    """The alignment's residual in pixels if the align step recorded one: the mean of the per-tilt
    ``tfAlignResidualPx`` (or a global ``*Residual*`` value)."""
    for col in ts.tilts.columns:
        if "residual" in col.lower():
            v = ts.tilts[col].astype(float)
            v = v[v.map(math.isfinite)]
            if len(v):
                return float(v.mean())
    for key, value in ts.globals.items():
        if "residual" in key.lower() and isinstance(value, (int, float)) and math.isfinite(value):
            return float(value)
    return None


def series_summary(root: str | Path, name: str, status: str = "ok") -> SeriesSummary:
    root = Path(root)
    s = SeriesSummary(name, status)
    first = _read(root, "import", name)
    if first is not None:
        s.tilts_total = len(first.tilts)
    exc = _read(root, "exclude", name)
    if exc is not None:
        flags = exc.tilts[TF_EXCLUDED].astype(int) if TF_EXCLUDED in exc.tilts else None
        s.excluded = int(flags.sum()) if flags is not None else 0
        s.tilts_used = len(exc.tilts) - s.excluded
    ctf = _read(root, "ctf", name)
    if ctf is not None and star.DEFOCUS_U in ctf.tilts:
        t = ctf.tilts
        if exc is not None and TF_EXCLUDED in exc.tilts and len(exc.tilts) == len(t):
            t = t[exc.tilts[TF_EXCLUDED].astype(int).to_numpy() == 0]
        mean = star.mean_defocus_um(t)
        mean = mean[np.isfinite(mean)]
        if len(mean):
            s.defocus_min_um, s.defocus_max_um = float(mean.min()), float(mean.max())
    ali = _read(root, "align", name)
    if ali is not None:
        s.residual_px = _residual(ali)
        if star.Z_ROT in ali.tilts:
            s.tilt_axis = float(ali.tilts[star.Z_ROT].astype(float).median())
        if s.tilts_used is None:
            s.tilts_used = len(ali.tilts)
    rec = _read(root, "reconstruct", name)
    if rec is not None and rec.globals.get(star.TOMOGRAM):
        s.tomogram = str(rec.globals[star.TOMOGRAM])
    from tiltflow.runner.plan import SERIES_STEPS
    from tiltflow.runner.resume import warnings_of

    s.warnings = [f"{step}: {w}" for step in SERIES_STEPS for w in warnings_of(root, f"{step}/{name}")]
    return s


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def rows(summaries: list[SeriesSummary]) -> list[list[str]]:
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
