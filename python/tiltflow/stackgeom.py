"""Where a binned stack's pixels lie on the bin-1 tilt series: one rule for stack, align and reconstruct.

The stack step bins ``b x b`` blocks of the central ``(N // b) * b`` pixels (newstack ``-bin``), so
stack pixel j covers bin-1 pixels ``o + j*b .. o + j*b + b-1`` with ``o = (N % b) // 2`` (its centre at
``o + j*b + (b-1)/2``). Aligners measure shifts in stack pixels about the stack centre ``n // 2``
(AreTomo, IMOD); RELION 5 wants them in bin-1 pixels (then Angstrom) about its integer image centre
``N // 2``. Hence a shift
``s`` in stack pixels is ``s*b + (o + (n//2)*b + (b-1)/2 - N//2)`` bin-1 pixels.

The stack step records its files and binning in the ``tfStack*`` columns (columns.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tiltflow import star
from tiltflow.errors import TiltflowError
from tiltflow.io.mrc import read_mrc_header

#: the stack files a series can have: (column, file-name suffix), the full stack first
STACK_FILES = ((star.TF_STACK, ""), (star.TF_STACK_EVEN, "_EVN"), (star.TF_STACK_ODD, "_ODD"))


def record_stacks(globals_: dict, paths: dict[str, Path], b: int, stack_pixel_size: float, root: str | Path) -> None:
    """Set the ``tfStack*`` columns: the stack files written (by suffix), binning and stack pixel."""
    for column, suffix in STACK_FILES:
        if suffix in paths:
            globals_[column] = star.relative_to_root(paths[suffix], root)
        else:
            globals_.pop(column, None)  # no halves this time: none from an earlier stack either
    globals_[star.TF_STACK_BINNING] = b
    globals_[star.TF_STACK_PIXEL_SIZE] = stack_pixel_size


def crop_origin(n_bin1: int, b: int) -> int:
    """First bin-1 pixel the binned stack uses along an axis of ``n_bin1`` pixels (central crop)."""
    return (n_bin1 % b) // 2


def bin1_image_size(ts: star.TiltSeriesStar, root: str | Path, ns: tuple[int, int], b: int) -> tuple[int, int]:
    """Bin-1 micrograph size (x, y): a micrograph's header when it bins to the stack, else stack size x b.

    The header matters when the micrograph is not a multiple of ``b`` (a 4096-wide K3 image binned by 3).
    """
    if b > 1 and star.MICROGRAPH in ts.tilts and len(ts.tilts):
        p = star.resolve(str(ts.tilts[star.MICROGRAPH].iloc[0]), root)
        if p.is_file():
            try:
                h = read_mrc_header(p)
            except (TiltflowError, OSError):  # not readable as MRC: the stack's size is the best guess
                h = None
            if h is not None and h.nx // b == ns[0] and h.ny // b == ns[1]:
                return int(h.nx), int(h.ny)
    return ns[0] * b, ns[1] * b


def stack_to_bin1_offset(n1: tuple[int, int], ns: tuple[int, int], b: int) -> np.ndarray:
    """(x, y) bin-1 pixels to add to ``shift * b`` (stack pixels about ``ns // 2``): see the module docstring."""
    return np.array([crop_origin(n1[k], b) + (ns[k] // 2) * b + (b - 1) / 2 - n1[k] // 2 for k in (0, 1)], float)


def shifts_to_bin1(shifts_px: np.ndarray, n1: tuple[int, int], ns: tuple[int, int], b: int) -> np.ndarray:
    """Shifts (n, 2) in stack pixels about the stack centre -> bin-1 pixels about RELION's centre."""
    return np.asarray(shifts_px, float) * b + stack_to_bin1_offset(n1, ns, b)[None, :]


def shifts_to_stack(shifts_bin1: np.ndarray, n1: tuple[int, int], ns: tuple[int, int], b: int) -> np.ndarray:
    """The inverse of :func:`shifts_to_bin1` (IMOD's .xf of the stack from RELION's shifts)."""
    return (np.asarray(shifts_bin1, float) - stack_to_bin1_offset(n1, ns, b)[None, :]) / b
