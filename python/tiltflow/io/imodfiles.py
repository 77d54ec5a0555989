"""IMOD's small text files: ``.tlt``/``.rawtlt``, ``.xf`` and newstack's file of inputs.

``.xf`` <-> RELION 5 conversion follows RELION's ``readIMODResults`` (reference.md 2.5): for each line
``A11 A12 A21 A22 DX DY`` the specimen shift is ``-(A^-1 d)`` pixels, ZRot = acos(A11) with the sign
closest to the nominal tilt axis, YTilt = ``.tlt`` angle - AngleOffset. IMOD's transform rotates the
raw image by -ZRot (tilt axis to vertical): A = [[cos z, sin z], [-sin z, cos z]], d = -A s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tiltflow.alignment import TiltSeriesAlignment
from tiltflow.atomic import write_text
from tiltflow.errors import TiltflowError


# --- .tlt / .rawtlt ------------------------------------------------------------------------
def read_tilt_angles(path: str | Path) -> np.ndarray:
    """One angle per line (blank lines ignored), as IMOD's ``.tlt``/``.rawtlt``."""
    path = Path(path)
    if not path.is_file():
        raise TiltflowError("tilt-angle file not found", path)
    out = []
    for lineno, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        try:
            out.append(float(parts[0]))
        except ValueError as exc:
            raise TiltflowError(f"line {lineno} is not a tilt angle: '{line.strip()}'", path) from exc
    if not out:
        raise TiltflowError("tilt-angle file is empty", path)
    return np.array(out, dtype=float)


def write_tilt_angles(path: str | Path, angles: Sequence[float] | np.ndarray, decimals: int = 2) -> Path:
    """Write one angle per line in IMOD's layout (right-aligned, ``decimals`` places)."""
    return write_text(path, "".join(f"{float(a):{7 + decimals - 2}.{decimals}f}\n" for a in angles))


# --- .xf -------------------------------------------------------------------------------------
def read_xf(path: str | Path) -> np.ndarray:
    """(n, 6) array: A11 A12 A21 A22 DX DY per image, in stack order."""
    path = Path(path)
    if not path.is_file():
        raise TiltflowError(".xf file not found", path)
    rows = []
    for lineno, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 6:
            raise TiltflowError(f"line {lineno} of .xf has {len(parts)} numbers, expected 6", path)
        try:
            rows.append([float(p) for p in parts])
        except ValueError as exc:
            raise TiltflowError(f"line {lineno} of .xf is not numeric", path) from exc
    if not rows:
        raise TiltflowError(".xf file is empty", path)
    return np.array(rows, dtype=float)


def write_xf(path: str | Path, xf: np.ndarray) -> Path:
    """Write (n, 6) transforms in IMOD's fixed layout (``%12.7f`` x4, ``%12.3f`` x2)."""
    xf = np.asarray(xf, float).reshape(-1, 6)
    lines = ["".join(f"{v:12.7f}" for v in r[:4]) + "".join(f"{v:12.3f}" for v in r[4:]) for r in xf]
    return write_text(path, "\n".join(lines) + "\n")


def alignment_to_xf(alignment: TiltSeriesAlignment) -> np.ndarray:
    """IMOD transforms (n, 6) that RELION's ``readIMODResults`` turns back into ``alignment``."""
    z = np.deg2rad(alignment.z_rot)
    c, s = np.cos(z), np.sin(z)
    a = np.stack([np.stack([c, s], -1), np.stack([-s, c], -1)], -2)  # (n, 2, 2)
    d = -np.einsum("nij,nj->ni", a, alignment.shifts_px)
    return np.concatenate([a.reshape(-1, 4), d], axis=1)


def xf_to_alignment(
    xf: np.ndarray,
    tlt: Sequence[float],
    pixel_size: float,
    nominal_axis: float | Sequence[float],
    angle_offset: float = 0.0,
) -> TiltSeriesAlignment:
    """RELION's reading of IMOD results; shifts stay in pixels of the stack IMOD aligned."""
    xf = np.asarray(xf, float).reshape(-1, 6)
    angles = np.asarray(tlt, float).reshape(-1)
    if len(angles) != len(xf):
        raise TiltflowError(f".xf has {len(xf)} lines but the .tlt has {len(angles)} angles")
    a = xf[:, :4].reshape(-1, 2, 2)
    try:
        shifts = -np.linalg.solve(a, xf[:, 4:, None])[..., 0]
    except np.linalg.LinAlgError as exc:
        raise TiltflowError("an .xf transform is singular") from exc
    zrot = np.rad2deg(np.arccos(np.clip(a[:, 0, 0], -1.0, 1.0)))
    nominal = np.broadcast_to(np.asarray(nominal_axis, float), zrot.shape)
    flip = np.abs(-nominal - zrot) < np.abs(nominal - zrot)
    zrot = np.where(flip, -zrot, zrot)
    return TiltSeriesAlignment(
        y_tilt=angles - angle_offset, z_rot=zrot, shifts_px=shifts, pixel_size=float(pixel_size),
        tilt_offset=float(angle_offset),
    )


# --- file of inputs (newstack -fileinlist) -----------------------------------------------------
@dataclass(frozen=True)
class InputEntry:
    """One file of a file-of-inputs list and its section list (``0``, ``1-5``, ``/`` = all)."""

    path: str
    sections: str = "0"


def write_file_of_inputs(path: str | Path, files: Sequence[str | Path | InputEntry]) -> Path:
    """The FileOfInputs for newstack: number of files, then per file its path and its section line."""
    entries = [f if isinstance(f, InputEntry) else InputEntry(str(f)) for f in files]
    lines = [str(len(entries))]
    for e in entries:
        lines += [e.path, e.sections]
    return write_text(path, "\n".join(lines) + "\n")


def read_file_of_inputs(path: str | Path) -> list[InputEntry]:
    """Read a FileOfInputs list; checks the count on line 1 matches the entries."""
    path = Path(path)
    if not path.is_file():
        raise TiltflowError("file-of-inputs list not found", path)
    lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    try:
        n = int(lines[0])
    except (IndexError, ValueError) as exc:
        raise TiltflowError("line 1 of a file-of-inputs list must be the number of files", path) from exc
    if len(lines) != 1 + 2 * n:
        raise TiltflowError(f"file-of-inputs list announces {n} files but has {len(lines) - 1} lines", path)
    return [InputEntry(lines[1 + 2 * i], lines[2 + 2 * i]) for i in range(n)]
