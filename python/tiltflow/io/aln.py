"""AreTomo's ``.aln`` alignment file: reading every variant in the wild, and writing AreTomo2's.

Variants handled (see reference.md 3.5):

- AreTomo 1.0-1.2: a ``# <n_tilts>  <n>`` count line instead of ``RawSize``, 0-based SEC.
- AreTomo 1.3 / AreTomo2: ``RawSize``, ``NumPatches``, one ``DarkFrame = idx_sorted sec tilt`` line per
  image removed as dark, 0-based SEC, optional ``# Local Alignment`` block.
- AreTomo3: adds ``AlphaOffset``/``BetaOffset``/``Thickness``; SEC is 1-based since 2.0.7 (0-based
  before, and its manual still says 0-based) - so the base is *detected*, never assumed.
- AreTomo 1.3's separate ``<name>_DarkImgs.txt`` (0-based indices of dark images): :func:`read_dark_indices`.

RELION's ``readAreTomoResults`` maps a row to its projection model as ZRot = ROT, YTilt = TILT,
shifts = (TX, TY) x tilt-series pixel size with no sign change, and drops the dark frames (the 2nd
integer of ``DarkFrame`` is the section in the input stack). :meth:`AlnFile.to_alignment` does the same.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tiltflow.alignment import TiltSeriesAlignment
from tiltflow.atomic import write_text
from tiltflow.errors import TiltflowError

DARK_REASON = "dark (AreTomo)"
_HEADER_LINE = "# AreTomo Alignment / Priims bprmMn"
_COLUMNS = "# SEC     ROT         GMAG       TX          TY      SMEAN     SFIT    SCALE     BASE     TILT"
_KEY = re.compile(r"^#\s*(?P<key>[A-Za-z]+)\s*=\s*(?P<value>.*)$")
_COUNT = re.compile(r"^#\s*(?P<n>\d+)\s+(?P<m>\d+)\s*$")


@dataclass(frozen=True)
class DarkFrame:
    """An image AreTomo removed as dark: index in the tilt-sorted series, section in the input, tilt."""

    idx_sorted: int
    sec: int
    tilt: float


@dataclass(frozen=True)
class AlnRow:
    """One global-alignment row; SEC is as written (see :attr:`AlnFile.sec_base`)."""

    sec: int
    rot: float
    gmag: float
    tx: float
    ty: float
    smean: float
    sfit: float
    scale: float
    base: float
    tilt: float


@dataclass
class AlnFile:
    """A parsed ``.aln``. ``local`` is the ``# Local Alignment`` block, shape (m, 7):
    tilt index, patch index, x, y (relative to the image centre), dx, dy, good (1/0).
    """

    path: Path
    rows: list[AlnRow]
    raw_size: tuple[int, int, int] | None = None
    num_patches: int = 0
    dark_frames: list[DarkFrame] = field(default_factory=list)
    alpha_offset: float | None = None  # AreTomo3 only
    beta_offset: float | None = None  # AreTomo3 only
    thickness: int | None = None  # AreTomo3 only, pixels
    local: np.ndarray = field(default_factory=lambda: np.zeros((0, 7)))
    sec_base: int = 0
    legacy_count: int | None = None  # the '# 41  0' line of AreTomo <= 1.2

    # --- column views (row order as written) ---------------------------------------------
    @property
    def secs(self) -> np.ndarray:
        """SEC of each row, as written (see :attr:`sec_base`)."""
        return np.array([r.sec for r in self.rows], dtype=int)

    @property
    def rot(self) -> np.ndarray:
        """Tilt-axis rotation (degrees) of each row."""
        return np.array([r.rot for r in self.rows], dtype=float)

    @property
    def tx(self) -> np.ndarray:
        """TX of each row, as written."""
        return np.array([r.tx for r in self.rows], dtype=float)

    @property
    def ty(self) -> np.ndarray:
        """TY of each row, as written."""
        return np.array([r.ty for r in self.rows], dtype=float)

    @property
    def tilts(self) -> np.ndarray:
        """Tilt angle (degrees) of each row."""
        return np.array([r.tilt for r in self.rows], dtype=float)

    @property
    def is_aretomo3(self) -> bool:
        """Whether the file holds AreTomo3's extra header lines (alpha offset or thickness)."""
        return self.alpha_offset is not None or self.thickness is not None

    @property
    def n_stack(self) -> int:
        """Images in the input stack, as far as the file tells."""
        if self.raw_size is not None:
            return self.raw_size[2]
        return len(self.rows) + len(self.dark_frames)

    def stack_indices(self) -> np.ndarray:
        """0-based section of the input stack for each row (row order as written)."""
        return self.secs - self.sec_base

    def dark_stack_indices(self) -> list[int]:
        """0-based sections of the input stack that AreTomo removed as dark."""
        return sorted(d.sec - self.sec_base for d in self.dark_frames)

    def validate(self, n_stack: int, series: str | None = None) -> None:
        """Check the file describes a stack of ``n_stack`` images; raise a one-line error if not."""
        who = f"tilt series {series}: " if series else ""
        dark = self.dark_stack_indices()
        idx = self.stack_indices()
        expected_rows = n_stack - len(dark)
        if len(self.rows) != expected_rows:
            raise TiltflowError(
                f"{who}.aln has {len(self.rows)} rows and {len(dark)} dark frames but the stack has "
                f"{n_stack} images", self.path)
        if self.raw_size is not None and self.raw_size[2] != n_stack:
            raise TiltflowError(f"{who}.aln RawSize says {self.raw_size[2]} images, the stack has {n_stack}",
                                self.path)
        bad = [int(i) + self.sec_base for i in idx if i < 0 or i >= n_stack]
        bad += [d + self.sec_base for d in dark if d < 0 or d >= n_stack]
        if bad:
            raise TiltflowError(f"{who}.aln SEC {bad[0]} is outside the stack of {n_stack} images "
                                f"({self.sec_base}-based)", self.path)
        if len(set(idx.tolist())) != len(idx):
            raise TiltflowError(f"{who}.aln lists a section twice", self.path)
        if set(idx.tolist()) & set(dark):
            raise TiltflowError(f"{who}.aln lists a dark frame as aligned", self.path)

    def to_alignment(self, pixel_size: float, n_stack: int | None = None,
                     series: str | None = None) -> TiltSeriesAlignment:
        """RELION's reading: arrays over the kept images in stack order, dark images in ``excluded``.

        ``pixel_size`` is that of the stack AreTomo aligned (TX/TY are in its pixels). Invariant:
        ``len(result.y_tilt) + len(result.excluded) == n_stack``.
        """
        n = self.n_stack if n_stack is None else n_stack
        self.validate(n, series)
        dark = set(self.dark_stack_indices())
        idx = self.stack_indices()
        order = np.argsort(idx, kind="stable")
        keep = [int(k) for k in order if int(idx[k]) not in dark]
        rows = [self.rows[k] for k in keep]
        return TiltSeriesAlignment(
            y_tilt=np.array([r.tilt for r in rows]),
            z_rot=np.array([r.rot for r in rows]),
            shifts_px=np.array([[r.tx, r.ty] for r in rows]).reshape(-1, 2),
            pixel_size=float(pixel_size),
            excluded={int(d): DARK_REASON for d in sorted(dark)},
            tilt_offset=float(self.alpha_offset or 0.0),
        )


def read_aln(path: str | Path, n_stack: int | None = None, series: str | None = None) -> AlnFile:
    """Parse an ``.aln`` file; with ``n_stack`` also check it matches a stack of that many images."""
    path = Path(path)
    if not path.is_file():
        raise TiltflowError("AreTomo .aln file not found", path)
    out = AlnFile(path=path, rows=[])
    section = "header"
    local: list[list[float]] = []
    for lineno, raw in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            section = _header_line(out, line, section, lineno)
            continue
        parts = line.split()
        try:
            if section == "local":
                local.append([float(v) for v in parts[:7]])
            else:
                if len(parts) < 10:
                    raise ValueError(f"expected 10 columns, found {len(parts)}")
                v = [float(p) for p in parts[:10]]
                out.rows.append(AlnRow(int(v[0]), *v[1:]))
        except ValueError as exc:
            raise TiltflowError(f"line {lineno} of .aln is not numeric ({exc})", path) from exc
    if not out.rows:
        raise TiltflowError("no alignment rows in .aln file (did AreTomo finish?)", path)
    if local:
        out.local = np.array(local, dtype=float).reshape(-1, 7)
    out.sec_base = _detect_sec_base(out)
    if n_stack is not None:
        out.validate(n_stack, series)
    return out


def read_dark_indices(path: str | Path) -> list[int]:
    """AreTomo 1.3's ``<name>_DarkImgs.txt``: 0-based stack indices of the images removed as dark."""
    path = Path(path)
    if not path.is_file():
        raise TiltflowError("dark-image list not found", path)
    out = []
    for lineno, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            out.append(int(text.split()[0]))
        except ValueError as exc:
            raise TiltflowError(f"line {lineno} of the dark-image list is not an index", path) from exc
    return out


def _header_line(out: AlnFile, line: str, section: str, lineno: int) -> str:
    low = line.lower()
    if "local alignment" in low:
        return "local"
    if low.startswith("# sec") or "priims" in low:
        return "rows" if section == "header" else section
    m = _KEY.match(line)
    if m:
        key, value = m.group("key").lower(), m.group("value").split()
        try:
            if key == "rawsize":
                out.raw_size = (int(value[0]), int(value[1]), int(value[2]))
            elif key == "numpatches":
                out.num_patches = int(value[0])
            elif key == "darkframe":
                out.dark_frames.append(DarkFrame(int(value[0]), int(value[1]), float(value[2])))
            elif key == "alphaoffset":
                out.alpha_offset = float(value[0])
            elif key == "betaoffset":
                out.beta_offset = float(value[0])
            elif key == "thickness":
                out.thickness = int(float(value[0]))
        except (IndexError, ValueError) as exc:
            raise TiltflowError(f"line {lineno} of .aln: cannot read '{line}'", out.path) from exc
        return section
    m = _COUNT.match(line)
    if m:
        out.legacy_count = int(m.group("n"))
    return section


def _detect_sec_base(aln: AlnFile) -> int:
    """0 or 1: AreTomo2 and early AreTomo3 count sections from 0, AreTomo3 >= 2.0.7 from 1."""
    secs = set(aln.secs.tolist())
    if 0 in secs:
        return 0
    n = aln.raw_size[2] if aln.raw_size else None
    if n is not None:
        every = secs | {d.sec for d in aln.dark_frames}
        if every == set(range(n)):
            return 0
        if every == set(range(1, n + 1)):
            return 1
        if max(secs) >= n:
            return 1
    if aln.legacy_count is not None:
        return 0  # AreTomo 1.x: always 0-based
    return 1 if aln.is_aretomo3 else 0


def write_aln(
    path: str | Path,
    alignment: TiltSeriesAlignment,
    raw_size: Sequence[int],
    dark_frames: Sequence[DarkFrame] | None = None,
    stack_tilts: Sequence[float] | None = None,
    sec_base: int = 0,
) -> Path:
    """Write ``alignment`` as an AreTomo2 ``.aln`` (what AreTomo ``-AlnFile`` and RELION read).

    ``raw_size`` is (nx, ny, n_images) of the stack; kept images get the stack indices not in
    ``alignment.excluded``. Dark lines come from ``dark_frames`` or else from ``alignment.excluded``
    with tilts from ``stack_tilts`` (all images, stack order; 0.0 when not given - readers use only
    the section index). TX/TY are written in pixels of ``alignment.pixel_size``.
    """
    nx, ny, nz = (int(v) for v in raw_size)
    n = len(alignment.y_tilt)
    kept = [i for i in range(nz) if i not in alignment.excluded]
    if len(kept) != n:
        raise ValueError(f"alignment has {n} tilts + {len(alignment.excluded)} excluded, stack has {nz}")
    if dark_frames is None:
        dark_frames = [
            DarkFrame(i, i + sec_base, float(stack_tilts[i]) if stack_tilts is not None else 0.0)
            for i in sorted(alignment.excluded)
        ]
    lines = [_HEADER_LINE + " ", f"# RawSize = {nx} {ny} {nz}", "# NumPatches = 0"]
    lines += [f"# DarkFrame =  {d.idx_sorted:4d} {d.sec:4d} {d.tilt:8.2f}" for d in dark_frames]
    lines.append(_COLUMNS)
    for k, i in enumerate(kept):
        tx, ty = alignment.shifts_px[k]
        lines.append(
            f"{i + sec_base:5d}  {_f(alignment.z_rot[k], 9, 4)}  {1.0:9.5f}  {_f(tx, 9, 3)}  {_f(ty, 9, 3)}  "
            f"{1.0:7.2f}  {1.0:7.2f}  {1.0:7.2f}  {0.0:7.2f}  {_f(alignment.y_tilt[k], 8, 2)}"
        )
    return write_text(path, "\n".join(lines) + "\n")


def _f(v: float, width: int, decimals: int) -> str:
    if not math.isfinite(float(v)):
        raise ValueError(f"cannot write non-finite value {v} to .aln")
    return f"{float(v):{width}.{decimals}f}"
