"""RELION 5 STAR files: the contract passed between tiltflow steps.

RELION 5 keeps a tomogram set as a global ``tomograms.star`` (table ``global``, one row per
tilt series) and one STAR file per tilt series (one table named after ``rlnTomoName``).

Between steps tiltflow passes one file per tilt series that holds both: the series' row of the
global table (block ``data_global``) and its per-tilt table (block ``data_<name>``). RELION reads
such a file unchanged (it looks the per-tilt table up by name); :func:`write_tomogram_set` writes the
canonical two-level layout for export. All reading and writing of STAR files lives here.

Paths inside STAR files are relative to the project root (the directory a step runs in), as in
RELION; raw movies and the gain may be absolute.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tiltflow import startext
from tiltflow.atomic import atomic_path

# Every label lives in columns.py (unit, owning step, meaning); star re-exports them: star.DEFOCUS_U.
from tiltflow.columns import *  # noqa: F403
from tiltflow.columns import (
    AMP_CONTRAST,
    CS,
    DEFOCUS_U,
    DEFOCUS_V,
    ETOMO_DIRECTIVE,
    HAND,
    OPTICS_GROUP,
    ORIGINAL_PIXEL_SIZE,
    PRE_EXPOSURE,
    RELION4_MATRICES,
    TOMO_BINNING,
    TOMO_NAME,
    TOMO_SIZE_X,
    TOMO_SIZE_Y,
    TOMO_SIZE_Z,
    TOMOGRAM,
    TOMOGRAM_HALF1,
    TOMOGRAM_HALF2,
    TS_PIXEL_SIZE,
    TS_STAR_FILE,
    VOLTAGE,
)
from tiltflow.errors import TiltflowError

GLOBAL_BLOCK = "global"


@dataclass(frozen=True)
class Optics:
    """The microscope constants of a series: RELION's optics columns of the global table."""

    voltage: float = 300.0  # kV
    cs: float = 2.7  # mm
    amplitude_contrast: float = 0.1  # fraction
    pixel_size: float | None = None  # A, the tilt-series pixel (None when the table has none)

    @property
    def wavelength(self) -> float:
        """Relativistic electron wavelength (A)."""
        from tiltflow.ctfmodel import electron_wavelength

        return electron_wavelength(self.voltage)

    @property
    def amplitude_phase(self) -> float:
        """Phase (rad) added by amplitude contrast, as in ``ctfmodel``."""
        ac = self.amplitude_contrast
        return math.atan2(ac, math.sqrt(max(1e-12, 1 - ac * ac)))


#: The defaults of RELION 5's ImportTomo job (src/pipeline_jobs.cpp: 300 kV, Cs 2.7 mm, Q0 0.1; RELION's
#: own test project's tilt_series.star has Q0 0.1, docs reference.md), what import writes when the user
#: gives none, and what a reader assumes for a column that is missing. 0.07 is CTFFIND's prompt default
#: for a lone micrograph; tiltflow always passes the series' own Q0 to CTFFIND.
DEFAULT_OPTICS = Optics()


@dataclass
class TiltSeriesStar:
    """One tilt series as passed between steps: its global row and its per-tilt table.

    ``globals`` maps RELION global-table labels to values; ``tilts`` has one row per tilt with
    RELION per-tilt labels (extra ``tf*`` columns are tiltflow's own and are dropped on export).
    """

    name: str
    globals: dict[str, Any]
    tilts: pd.DataFrame = field(default_factory=pd.DataFrame)

    def copy(self) -> TiltSeriesStar:
        """A copy that can be changed without changing this one."""
        return TiltSeriesStar(self.name, copy.deepcopy(self.globals), self.tilts.copy())

    @property
    def optics(self) -> Optics:
        """Voltage, Cs, amplitude contrast and pixel size from the global row: :func:`optics_of`."""
        return optics_of(self.globals)

    @property
    def pixel_size(self) -> float:
        """Tilt-series pixel size if motion correction has set it, else the movie pixel size."""
        ps = self.globals.get(TS_PIXEL_SIZE) or self.globals.get(ORIGINAL_PIXEL_SIZE)
        if not ps:
            raise TiltflowError(f"tilt series {self.name} has no pixel size in its STAR file")
        return float(ps)


def _read_blocks(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise TiltflowError("STAR file not found", path)
    try:
        blocks = startext.parse(path.read_text(encoding="utf-8"), as_string=(TOMO_NAME, OPTICS_GROUP))
    except (ValueError, UnicodeDecodeError) as exc:
        raise TiltflowError(f"not a readable STAR file ({exc})", path) from exc
    if not blocks:
        raise TiltflowError("STAR file has no data blocks", path)
    return blocks


def _as_frame(block: Any) -> pd.DataFrame:
    if isinstance(block, pd.DataFrame):
        return block
    return pd.DataFrame([block])  # a single-row table written without loop_


def read_tilt_series(path: str | Path) -> TiltSeriesStar:
    """Read a per-tilt-series STAR file written by a tiltflow step (or RELION plus a global row)."""
    path = Path(path)
    blocks = _read_blocks(path)
    glob = _as_frame(blocks[GLOBAL_BLOCK]) if GLOBAL_BLOCK in blocks else None
    tilt_names = [k for k in blocks if k != GLOBAL_BLOCK]
    if len(tilt_names) != 1:
        raise TiltflowError(f"expected one per-tilt table, found {len(tilt_names)}", path)
    name = str(tilt_names[0])
    if glob is None:
        raise TiltflowError(f"no data_global block: pass a file written by a tiltflow step for {name}", path)
    rows = glob[glob[TOMO_NAME].astype(str) == name] if TOMO_NAME in glob else glob.iloc[0:0]
    if len(rows) != 1:
        raise TiltflowError(f"data_global has no single row for tilt series {name}", path)
    globals_ = {k: _py(v) for k, v in rows.iloc[0].items()}
    tilts = _as_frame(blocks[tilt_names[0]]).reset_index(drop=True)
    return TiltSeriesStar(name=name, globals=globals_, tilts=tilts)


def write_tilt_series(ts: TiltSeriesStar, path: str | Path) -> Path:
    """Atomically write ``ts`` as a two-block STAR file (``data_global`` + ``data_<name>``)."""
    g = dict(ts.globals)
    g[TOMO_NAME] = ts.name
    g.setdefault(TS_STAR_FILE, str(path))
    glob = pd.DataFrame([_ordered(g)])
    _write_blocks({GLOBAL_BLOCK: glob, ts.name: _clean_tilts(ts.tilts)}, Path(path))
    return Path(path)


def read_relion_tilt_table(path: str | Path) -> tuple[str, pd.DataFrame]:
    """Read a RELION per-tilt-series STAR file (single table); return (block name, table)."""
    path = Path(path)
    blocks = _read_blocks(path)
    names = [k for k in blocks if k != GLOBAL_BLOCK]
    if len(names) != 1:
        raise TiltflowError(f"expected one per-tilt table, found {len(names)}", path)
    table = _as_frame(blocks[names[0]]).reset_index(drop=True)
    # RELION's own rule (TomogramSet): a tilt-series table is data_<name> with rlnMicrographPreExposure
    if not str(names[0]) or PRE_EXPOSURE not in table.columns:
        raise TiltflowError(f"data_{names[0]} is not a tilt-series table (no name or no {PRE_EXPOSURE})", path)
    return str(names[0]), table


def read_tomograms(path: str | Path) -> pd.DataFrame:
    """Read a RELION 5 global ``tomograms.star`` (table ``global``)."""
    path = Path(path)
    blocks = _read_blocks(path)
    if GLOBAL_BLOCK not in blocks:
        raise TiltflowError("no data_global table (is this a RELION 5 tomograms.star?)", path)
    return _as_frame(blocks[GLOBAL_BLOCK]).reset_index(drop=True)


def read_tomogram_set(path: str | Path, root: str | Path | None = None) -> list[TiltSeriesStar]:
    """Read ``tomograms.star`` and every per-tilt-series file it points to (relative to the project ``root``,
    by default the current folder).

    RELION writes the per-series paths relative to the project directory; tiltflow writes them
    relative to the directory of ``tomograms.star``'s parent project. Both are tried.
    """
    path = Path(path)
    glob = read_tomograms(path)
    out = []
    if TS_STAR_FILE not in glob.columns:
        # RELION 4 / Warp layout: the per-tomogram tables sit in the same file (data_<name>)
        blocks = _read_blocks(path)
        for _, row in glob.iterrows():
            name = str(row[TOMO_NAME])
            if name not in blocks:
                raise TiltflowError(f"no {TS_STAR_FILE} column and no data_{name} table", path)
            tilts = _as_frame(blocks[name]).reset_index(drop=True)
            out.append(TiltSeriesStar(name=name, globals={k: _py(v) for k, v in row.items()}, tilts=tilts))
        return out
    for _, row in glob.iterrows():
        ref = Path(str(row[TS_STAR_FILE]))
        candidates = [Path(root or ".") / ref, path.parent / ref, path.parent / ref.name,
                      path.parent / "tilt_series" / ref.name]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise TiltflowError(f"per-tilt-series STAR file {ref} not found", path)
        name, tilts = read_relion_tilt_table(found)
        out.append(TiltSeriesStar(name=name, globals={k: _py(v) for k, v in row.items()}, tilts=tilts))
    return out


def write_tomogram_set(series: Iterable[TiltSeriesStar], outdir: str | Path, star_prefix: str | None = None) -> Path:
    """Write RELION 5's layout: ``outdir/tomograms.star`` + ``outdir/tilt_series/<name>.star``.

    ``star_prefix`` is how ``rlnTomoTiltSeriesStarFile`` spells the folder (default
    ``<outdir>/tilt_series``, relative to the project root, as RELION does).
    """
    outdir = Path(outdir)
    prefix = star_prefix if star_prefix is not None else str(outdir / "tilt_series")
    rows = []
    for ts in series:
        ts_path = outdir / "tilt_series" / f"{ts.name}.star"
        _write_blocks({ts.name: _clean_tilts(ts.tilts, export=True)}, ts_path)
        g = {k: v for k, v in ts.globals.items() if not k.startswith("tf")}
        g[TOMO_NAME] = ts.name
        g[TS_STAR_FILE] = f"{prefix}/{ts.name}.star"
        rows.append(_ordered(g))
    if not rows:
        raise TiltflowError("no tilt series to write", outdir)
    glob = pd.DataFrame(rows)
    out = outdir / "tomograms.star"
    _write_blocks({GLOBAL_BLOCK: glob}, out)
    return out


def write_tomograms(series: Iterable[TiltSeriesStar], path: str | Path) -> Path:
    """Atomically write only the global table (``data_global``) of ``series``, ``tf*`` columns kept.

    Each row is the series' global row as is (its ``rlnTomoTiltSeriesStarFile`` must already point
    to the per-series file); this is a step's index of its outputs, e.g. ``import/tomograms.star``.
    """
    rows = []
    for ts in series:
        g = dict(ts.globals)
        g[TOMO_NAME] = ts.name
        rows.append(_ordered(g))
    if not rows:
        raise TiltflowError("no tilt series to write", path)
    _write_blocks({GLOBAL_BLOCK: pd.DataFrame(rows)}, Path(path))
    return Path(path)


# --- helpers -------------------------------------------------------------------------------
_GLOBAL_ORDER = [
    TOMO_NAME, TS_STAR_FILE, VOLTAGE, CS, AMP_CONTRAST, ORIGINAL_PIXEL_SIZE, HAND, OPTICS_GROUP,
    TS_PIXEL_SIZE, ETOMO_DIRECTIVE, TOMO_BINNING, TOMO_SIZE_X, TOMO_SIZE_Y, TOMO_SIZE_Z, TOMOGRAM, TOMOGRAM_HALF1, TOMOGRAM_HALF2,
]


def _ordered(g: dict[str, Any]) -> dict[str, Any]:
    keys = [k for k in _GLOBAL_ORDER if k in g] + [k for k in g if k not in _GLOBAL_ORDER]
    return {k: g[k] for k in keys if g[k] is not None}


def _clean_tilts(tilts: pd.DataFrame, export: bool = False) -> pd.DataFrame:
    bad = [c for c in tilts.columns if c in RELION4_MATRICES]
    out = tilts.drop(columns=bad)
    if export:
        out = out[[c for c in out.columns if c.startswith("rln")]]
    return out.reset_index(drop=True)


def _write_blocks(blocks: dict[str, pd.DataFrame], path: Path) -> None:
    text = startext.render(blocks, where=path)  # refuses a value RELION could not read back, before writing
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def optics_of(g: dict[str, Any]) -> Optics:
    """The optics of a global row; a missing column (not a 0) takes its value from DEFAULT_OPTICS."""
    d = DEFAULT_OPTICS
    px = g.get(TS_PIXEL_SIZE) or g.get(ORIGINAL_PIXEL_SIZE)  # a pixel size of 0 is no pixel size
    return Optics(voltage=_number(g, VOLTAGE, d.voltage), cs=_number(g, CS, d.cs),
                  amplitude_contrast=_number(g, AMP_CONTRAST, d.amplitude_contrast),
                  pixel_size=float(px) if px else None)


# --- units ----------------------------------------------------------------------------------
#: Defocus is in A in RELION's CTF columns and in um in rlnTomoNominalDefocus (SerialEM's TargetDefocus).
ANGSTROM_PER_UM = 1e4
#: |rlnTomoNominalDefocus| at or below this (um) means the mdoc recorded none (import writes 0 then):
#: no tomography target sits within 50 nm of focus.
NO_NOMINAL_DEFOCUS_UM = 0.05


def um_to_angstrom(um: Any) -> Any:
    """Micrometres (a float or an array) to Angstrom."""
    return um * ANGSTROM_PER_UM


def angstrom_to_um(angstrom: Any) -> Any:
    """Angstrom (a float or an array) to micrometres."""
    return angstrom / ANGSTROM_PER_UM


def mean_defocus_angstrom(tilts: pd.DataFrame) -> np.ndarray:
    """(U + V) / 2 per tilt in A, NaN where a tilt has no fit (or the table no CTF columns)."""
    if DEFOCUS_U not in tilts or DEFOCUS_V not in tilts:
        return np.full(len(tilts), np.nan)
    u = pd.to_numeric(tilts[DEFOCUS_U], errors="coerce").to_numpy(float)
    v = pd.to_numeric(tilts[DEFOCUS_V], errors="coerce").to_numpy(float)
    return 0.5 * (u + v)


def mean_defocus_um(tilts: pd.DataFrame) -> np.ndarray:
    """:func:`mean_defocus_angstrom` in um, as summaries show it."""
    return angstrom_to_um(mean_defocus_angstrom(tilts))


def nominal_defocus_angstrom(value: Any) -> float | None:
    """Underfocus (A, positive) from an rlnTomoNominalDefocus cell (um); None when none was recorded.

    SerialEM's sign (negative = underfocus) is dropped: a positive target is taken as the same underfocus
    (the ctf step warns about it).
    """
    try:
        um = float(value)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(um) or abs(um) <= NO_NOMINAL_DEFOCUS_UM:
        return None
    return um_to_angstrom(abs(um))


def _number(g: dict[str, Any], label: str, default: float) -> float:
    """``g[label]`` as a float; ``default`` only when the column is missing or empty (a real 0 stays 0)."""
    v = g.get(label)
    if v is None or (isinstance(v, str) and not v.strip()) or (isinstance(v, float) and math.isnan(v)):
        return default
    return float(v)


def _py(v: Any) -> Any:
    """NumPy scalars -> Python scalars, so that globals compare and serialise simply."""
    return v.item() if hasattr(v, "item") else v


def resolve(path: str | Path, root: str | Path = ".") -> Path:
    """A path from a STAR file, resolved against the project root unless absolute."""
    p = Path(str(path))
    return p if p.is_absolute() else Path(root) / p


def relative_to_root(path: str | Path, root: str | Path) -> str:
    """How ``path`` is written into a STAR file: the inverse of :func:`resolve`.

    Relative to the project root when it lies inside it (as RELION writes its job outputs), else
    absolute (raw movies elsewhere). A relative ``path`` is relative to ``root`` already (the working
    directory is never consulted, see DEVELOPERS.md "The project root is explicit"). Symbolic links are kept (RELION projects link their movies in); only
    when the plain path is outside the root are both compared with links resolved (``/tmp`` ->
    ``/private/tmp``).
    """
    base = Path(os.path.abspath(root))
    absolute = Path(os.path.normpath(base / path))  # an absolute ``path`` replaces ``base``
    if absolute.is_relative_to(base):
        return str(absolute.relative_to(base))
    real, real_base = absolute.resolve(), base.resolve()
    return str(real.relative_to(real_base)) if real.is_relative_to(real_base) else str(absolute)


#: RELION's type suffix on image names: ``<name>.ctf:mrc`` is read as MRC whatever the extension
#: (RELION src/ctffind_runner.cpp writes ``fn_root + ".ctf:mrc"`` into rlnCtfImage).
MRC_SUFFIX = ":mrc"


def image_ref(path: str | Path, root: str | Path) -> str:
    """An MRC image with a non-MRC extension (CTF diagnostic ``.ctf``) as RELION names it in STAR."""
    return relative_to_root(path, root) + MRC_SUFFIX


def resolve_image_ref(ref: Any, root: str | Path = ".") -> Path | None:
    """The file an image cell names (``:mrc`` suffix understood); None for an empty or missing cell."""
    if ref is None or (isinstance(ref, float) and ref != ref) or not str(ref).strip():
        return None
    text = str(ref)
    return resolve(text[: -len(MRC_SUFFIX)] if text.endswith(MRC_SUFFIX) else text, root)


# --- generic blocks (files other than the step contract, e.g. RELION's per-movie motion STAR) ------------
def write_blocks(path: str | Path, blocks: dict[str, pd.DataFrame | dict[str, Any]]) -> Path:
    """Atomically write named data blocks: a DataFrame becomes a ``loop_`` table, a dict a key-value block."""
    _write_blocks(dict(blocks), Path(path))  # type: ignore[arg-type]
    return Path(path)


def read_blocks(path: str | Path) -> dict[str, Any]:
    """Read every data block: ``loop_`` tables as DataFrames, key-value blocks as dicts."""
    return _read_blocks(Path(path))
