"""Read a results folder (``OUT/<step>/<TS>/<TS>.star``, ``console.log``) into what the report shows.

Why tolerant: the report is also how a user finds out what went wrong, so a missing step or an unreadable
file becomes a note on the page, never a crash.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from tiltflow import star
from tiltflow.errors import TiltflowError
from tiltflow.steps import registry

log = logging.getLogger("tiltflow.report")

#: the steps with a STAR per series (steps/registry.py)
STEPS = ("import", *registry.SERIES_STEPS)
#: steps whose per-tilt table still has every tilt in acquisition order (latest first)
ALL_ROW_STEPS = ("exclude", "ctf", "motioncor", "import")
_DONE = re.compile(r"done (\S+) (\S+) in ([0-9.]+) s")


@dataclass
class SeriesData:
    """One tilt series as found in the results: its STAR per step, step timings and side files."""

    name: str
    stars: dict[str, star.TiltSeriesStar] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    hand: dict | None = None
    problems: list[str] = field(default_factory=list)

    def latest(self, steps=STEPS[::-1]) -> star.TiltSeriesStar | None:
        """The STAR of the first of ``steps`` that has one (by default the latest step), or None."""
        for s in steps:
            if s in self.stars:
                return self.stars[s]
        return None

    @property
    def globals(self) -> dict:
        """The global rows of every step's STAR merged, later steps winning."""
        g: dict = {}
        for s in STEPS:
            if s in self.stars:
                g.update(self.stars[s].globals)
        return g

    def tilts(self) -> pd.DataFrame:
        """Every tilt in acquisition order with all per-tilt columns, plus align's columns where it has them."""
        base = self.latest(ALL_ROW_STEPS)
        if base is None:
            base = self.latest()
        if base is None:
            return pd.DataFrame()
        t = base.tilts.copy()
        if star.TF_EXCLUDED not in t:
            t[star.TF_EXCLUDED] = 0
        t[star.TF_EXCLUDED] = pd.to_numeric(t[star.TF_EXCLUDED], errors="coerce").fillna(0).astype(int)
        if star.TF_EXCLUDE_REASON not in t:
            t[star.TF_EXCLUDE_REASON] = ""
        t[star.TF_EXCLUDE_REASON] = t[star.TF_EXCLUDE_REASON].fillna("").astype(str)
        if star.TF_ACQ_INDEX not in t:
            t[star.TF_ACQ_INDEX] = np.arange(len(t))
        al = self.stars.get("align")
        if al is not None and star.MICROGRAPH in al.tilts and star.MICROGRAPH in t:
            extra = [c for c in al.tilts.columns if c not in t.columns or c in (star.Y_TILT, star.Z_ROT)]
            extra = [c for c in extra if c != star.MICROGRAPH]
            merged = t.drop(columns=[c for c in extra if c in t.columns]).merge(
                al.tilts[[star.MICROGRAPH] + extra], on=star.MICROGRAPH, how="left")
            # a tilt the aligner dropped (dark) is excluded even if the exclude step kept it
            aligned = t[star.MICROGRAPH].isin(set(al.tilts[star.MICROGRAPH]))
            dropped = (~aligned) & (merged[star.TF_EXCLUDED] == 0)
            merged.loc[dropped, star.TF_EXCLUDED] = 1
            merged.loc[dropped, star.TF_EXCLUDE_REASON] = "excluded: dropped by the alignment (dark or unalignable)"
            t = merged
        return t

    @property
    def total_time(self) -> float:
        """Seconds the steps took for the series, all together."""
        return float(sum(self.timings.values()))

    def results(self) -> SeriesResults:
        """What the steps measured, merged: the one reading the report, ``tiltflow run``'s table and the
        simulator comparison share.
        """
        return SeriesResults.of(self)


def _num(t: pd.DataFrame, col: str) -> np.ndarray:
    return pd.to_numeric(t[col], errors="coerce").to_numpy(float) if col in t else np.full(len(t), np.nan)


def _finite(values: np.ndarray) -> np.ndarray:
    return values[np.isfinite(values)]


@dataclass(frozen=True)
class SeriesResults:
    """One series' numbers, each with one definition.

    - excluded: tilts not in the tomogram: ``tfExcluded`` of the exclude step, or dropped by the aligner
      (dark or unalignable; :meth:`SeriesData.tilts`). None before either step ran.
    - defocus range: min and max of the kept tilts' mean defocus ``(U + V) / 2``, in um.
    - CTF resolution: median ``rlnCtfMaxResolution`` of the kept tilts (A).
    - residual: mean ``tfAlignResidualPx`` over the aligned tilts (stack pixels).
    - tilt axis: median refined ``rlnTomoZRot`` (source "aligned"), else the median nominal axis ("nominal").
    - dose: total exposure (e/A^2): the last tilt's pre-exposure plus one tilt's dose.
    """

    tilts_total: int
    excluded: int | None = None
    defocus_min_um: float | None = None
    defocus_max_um: float | None = None
    ctf_resolution: float | None = None
    residual_px: float | None = None
    tilt_axis: float | None = None
    tilt_axis_source: str = ""
    dose: float | None = None
    tomogram: str | None = None

    @property
    def tilts_used(self) -> int | None:
        """Tilts left after exclusion, when it is known."""
        return None if self.excluded is None else self.tilts_total - self.excluded

    @classmethod
    def of(cls, sd: SeriesData) -> SeriesResults:
        """The measurements of one series, read from its STAR files."""
        t = sd.tilts()
        known = "exclude" in sd.stars or "align" in sd.stars
        kept = ~t[star.TF_EXCLUDED].to_numpy(bool) if len(t) else np.array([], bool)
        df = _finite(star.mean_defocus_um(t)[kept])
        res = _finite(_num(t, star.CTF_MAX_RES)[kept])
        resid = _finite(_num(t, star.TF_ALIGN_RESIDUAL))
        zrot, nominal = _finite(_num(t, star.Z_ROT)), _finite(_num(t, star.NOMINAL_AXIS))
        axis, source = ((float(np.median(zrot)), "aligned") if zrot.size else
                        (float(np.median(nominal)), "nominal") if nominal.size else (None, ""))
        tomo = sd.globals.get(star.TOMOGRAM)
        return cls(
            tilts_total=len(t), excluded=int((~kept).sum()) if known else None,
            defocus_min_um=float(df.min()) if df.size else None, defocus_max_um=float(df.max()) if df.size else None,
            ctf_resolution=float(np.median(res)) if res.size else None,
            residual_px=float(resid.mean()) if resid.size else None,
            tilt_axis=axis, tilt_axis_source=source, dose=_total_dose(t), tomogram=str(tomo) if tomo else None)


def _total_dose(t: pd.DataFrame) -> float | None:
    pre = _finite(_num(t, star.PRE_EXPOSURE))
    if not pre.size:
        return None
    dose = _finite(_num(t, star.TF_DOSE))
    per = float(np.median(dose)) if dose.size else (float(np.median(np.diff(np.sort(pre)))) if pre.size > 1 else 0.0)
    return float(pre.max()) + per


@dataclass
class SessionData:
    """The whole results folder: series, the steps found, and notes for the page."""

    root: Path
    series: list[SeriesData]
    steps_found: list[str]
    relion: Path | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def steps_missing(self) -> list[str]:
        """Pipeline steps whose results were not found."""
        return [s for s in STEPS if s not in self.steps_found]

    def resolve(self, ref: str | None) -> Path | None:
        """A path from a STAR file: relative to the results folder (where steps run), else to the cwd."""
        for base in (self.root, Path.cwd(), self.root.parent):
            c = star.resolve_image_ref(ref, base)
            if c is None or c.is_file():
                return c  # None: an empty cell
        return None


def collect(root: str | Path) -> SessionData:
    """Read every step's per-series STAR file and console.log under ``root``."""
    root = Path(root)
    if not root.is_dir():
        raise TiltflowError("results folder not found", root)
    series: dict[str, SeriesData] = {}
    found = []
    for step in STEPS:
        sdir = root / step
        if not sdir.is_dir():
            continue
        any_series = False
        for d in sorted(p for p in sdir.iterdir() if p.is_dir()):
            any_series |= _read_step(series.setdefault(d.name, SeriesData(d.name)), step, d)
        if any_series:
            found.append(step)
    relion = root / "relion" / "tomograms.star"
    session_warnings = [f"{step} warning: {w}" for step in ("gain", "import") for w in _warnings(root / step)]
    data = SessionData(root, [series[k] for k in sorted(series) if series[k].stars or series[k].problems],
                       found, relion if relion.is_file() else None)
    data.notes += session_warnings
    if not data.series:
        data.notes.append(f"no tilt-series results found under {root} (expected {root}/<step>/<name>/<name>.star)")
    return data


def read_series(root: str | Path, name: str) -> SeriesData:
    """One series' results under ``root`` (every step that has a folder for it), as the report reads them."""
    sd = SeriesData(name)
    for step in STEPS:
        d = Path(root) / step / name
        if d.is_dir():
            _read_step(sd, step, d)
    return sd


def _read_step(sd: SeriesData, step: str, d: Path) -> bool:
    """Add step ``step``'s folder ``d`` of one series to ``sd``; True when its STAR file was read."""
    f = d / f"{d.name}.star"
    _read_timing(d / "console.log", step, sd)
    sd.problems += [f"{step} warning: {w}" for w in _warnings(d)]
    if not f.is_file():
        if (d / "console.log").is_file():
            sd.problems.append(f"{step}: no {f.name} (the step did not finish; see {d / 'error.log'})")
        return False
    try:
        sd.stars[step] = star.read_tilt_series(f)
    except TiltflowError as exc:
        sd.problems.append(f"{step}: {exc}")
        return False
    if step == "exclude":
        hj = d / f"{d.name}_hand.json"
        if hj.is_file():
            try:
                sd.hand = json.loads(hj.read_text())
            except ValueError as exc:
                sd.problems.append(f"exclude: unreadable {hj.name} ({exc})")
    return True


def _warnings(folder: Path) -> list[str]:
    """Warnings the step recorded (``tiltflow run``'s step record; absent for other runners)."""
    try:
        rec = json.loads((folder / ".tiltflow-step.json").read_text())
    except (OSError, ValueError):
        return []
    return [str(w) for w in rec.get("warnings") or []]


def _read_timing(path: Path, step: str, sd: SeriesData) -> None:
    if not path.is_file():
        return
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return
    for m in _DONE.finditer(text):
        if m.group(1) == step and m.group(2) == sd.name:
            sd.timings[step] = float(m.group(3))  # the last completed run counts
