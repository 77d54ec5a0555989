"""MRC reading and writing with the pixel size in the header, written atomically."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tiltflow.atomic import atomic_path
from tiltflow.errors import TiltflowError

_MRC_DTYPES = (np.int8, np.int16, np.uint16, np.float32, np.float16, np.complex64)


def write_mrc(path: str | Path, data: np.ndarray, pixel_size: float, dtype=None) -> Path:
    """Write ``data`` (2-D image, 3-D stack or volume in z, y, x order) with ``pixel_size`` in A.

    Written to a temporary name and renamed, so a reader never sees a partial file.
    """
    import mrcfile

    arr = np.asarray(data)
    if dtype is not None:
        arr = arr.astype(dtype, copy=False)
    if arr.dtype not in _MRC_DTYPES:
        arr = arr.astype(np.float32)
    with atomic_path(path) as tmp, mrcfile.new(tmp, overwrite=True) as mrc:
        mrc.set_data(np.ascontiguousarray(arr))
        mrc.voxel_size = float(pixel_size)
        mrc.update_header_stats()
    return Path(path)


def read_mrc(path: str | Path) -> tuple[np.ndarray, float]:
    """Read an MRC file; return (data, pixel size in A along x)."""
    import mrcfile

    path = Path(path)
    if not path.is_file():
        raise TiltflowError("MRC file not found", path)
    try:
        with mrcfile.open(path, permissive=True) as mrc:
            if mrc.data is None:
                raise TiltflowError("MRC file has no readable data (truncated?)", path)
            return np.array(mrc.data), float(mrc.voxel_size.x)
    except TiltflowError:
        raise
    except Exception as exc:
        raise TiltflowError(f"not a readable MRC file ({exc})", path) from exc
