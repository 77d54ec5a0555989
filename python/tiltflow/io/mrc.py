"""MRC reading (section by section) and writing with the pixel size in the header, written atomically.

Writing uses mrcfile. Reading parses the 1024-byte header here because mrcfile cannot read two things
SerialEM/IMOD write: mode 101 (4-bit, two pixels per byte) and mode 0 holding *unsigned* bytes (IMOD
marks signed bytes with bit 0 of imodFlags; mrcfile always returns int8, so counts of 128-255 come back
negative). Sections are read one at a time from the file, so a movie never has to fit in memory.
"""

from __future__ import annotations

import logging
import math
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from tiltflow.atomic import atomic_path
from tiltflow.errors import TiltflowError

log = logging.getLogger("tiltflow.mrc")

_MRC_DTYPES = (np.int8, np.int16, np.uint16, np.float32, np.float16, np.complex64)

#: IMOD's header stamp ("IMOD" as an int) at byte 152; its flags word follows at 156
IMOD_STAMP = 1146047817
MODE_4BIT = 101
_MODE_DTYPES = {0: "u1", 1: "i2", 2: "f4", 4: "c8", 6: "u2", 12: "f2"}

ByteOrder = Literal["<", ">"]  # little, big endian (struct and numpy spell them alike)


@dataclass(frozen=True)
class MrcHeader:
    """What tiltflow needs from an MRC header (sizes in pixels, pixel size in A)."""

    path: Path
    nx: int
    ny: int
    nz: int
    mode: int
    pixel_size: float  # along x (cell a / mx); 0.0 when the header holds none
    data_offset: int  # 1024 + extended header
    byte_order: ByteOrder
    signed_bytes: bool  # mode 0 only
    mapcrs: tuple[int, int, int]
    file_size: int

    @property
    def dtype(self) -> np.dtype:
        """Dtype of one decoded section (uint8 for the packed 4-bit mode 101)."""
        if self.mode == MODE_4BIT:
            return np.dtype(np.uint8)
        if self.mode == 0:
            return np.dtype(np.int8 if self.signed_bytes else np.uint8)
        return np.dtype(_MODE_DTYPES[self.mode]).newbyteorder(self.byte_order)

    @property
    def section_bytes(self) -> int:
        """Bytes of one section in the file (4-bit rows are padded to whole bytes, as IMOD writes them)."""
        if self.mode == MODE_4BIT:
            return ((self.nx + 1) // 2) * self.ny
        return self.nx * self.ny * self.dtype.itemsize

    @property
    def n_sections_present(self) -> int:
        """Complete sections actually in the file (fewer than ``nz`` when it is truncated)."""
        return max(0, (self.file_size - self.data_offset) // max(1, self.section_bytes))


def read_mrc_header(path: str | Path, context: str = "", complete: bool = False) -> MrcHeader:
    """Parse the header of an MRC file; a file that is not MRC or is cut short gives a TiltflowError.

    ``context`` prefixes the error (e.g. ``"tilt series TS_01: stack"``); ``complete`` also refuses a
    file holding fewer sections than its header says (truncated).
    """
    path = Path(path)
    if context:
        try:
            return read_mrc_header(path, complete=complete)
        except TiltflowError as exc:
            text = str(exc)[len(f"{path}: "):] if str(exc).startswith(f"{path}: ") else str(exc)
            raise TiltflowError(f"{context}: {text}", path) from None
    if not path.is_file():
        raise TiltflowError("MRC file not found", path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw = f.read(1024)
    if len(raw) < 1024:
        raise TiltflowError(f"not an MRC file (only {len(raw)} bytes, the header alone is 1024)", path)
    order = _byte_order(raw)
    if order is None:
        raise TiltflowError("not an MRC file (header sizes/mode are not plausible)", path)
    nx, ny, nz, mode = struct.unpack(order + "4i", raw[0:16])
    mx, _my, _mz = struct.unpack(order + "3i", raw[28:40])
    cella = struct.unpack(order + "3f", raw[40:52])
    mapcrs = struct.unpack(order + "3i", raw[64:76])
    nsymbt = struct.unpack(order + "i", raw[92:96])[0]
    stamp, flags = struct.unpack(order + "2i", raw[152:160])
    if mode not in _MODE_DTYPES and mode != MODE_4BIT:
        raise TiltflowError(f"MRC mode {mode} is not supported (0, 1, 2, 4, 6, 12, 101 are)", path)
    if mode == 0:
        # IMOD: bytes are unsigned unless flagged signed; without IMOD's stamp follow MRC2014 (signed)
        # unless the header's maximum shows unsigned data
        dmax = struct.unpack(order + "f", raw[80:84])[0]
        signed = bool(flags & 1) if stamp == IMOD_STAMP else not (np.isfinite(dmax) and dmax > 127.5)
    else:
        signed = False
    pixel = float(cella[0]) / mx if mx > 0 and np.isfinite(cella[0]) else 0.0
    if sorted(mapcrs) != [1, 2, 3]:
        mapcrs = (1, 2, 3)
    header = MrcHeader(path, nx, ny, nz, mode, pixel, 1024 + max(0, nsymbt), order, signed, tuple(mapcrs), size)
    if complete and header.n_sections_present < nz:
        raise TiltflowError(f"truncated MRC file: {header.n_sections_present} of {nz} sections present", path)
    return header


def _byte_order(raw: bytes) -> ByteOrder | None:
    """The header's byte order: from the machine stamp, else whichever gives plausible sizes."""
    stamp = raw[212:214]
    candidates: list[ByteOrder] = [">", "<"] if stamp == b"\x11\x11" else ["<", ">"]
    for order in candidates:
        nx, ny, nz, mode = struct.unpack(order + "4i", raw[0:16])
        if 0 < nx < 1 << 20 and 0 < ny < 1 << 20 and 0 < nz < 1 << 24 and 0 <= mode <= 200:
            return order
    return None


class MrcReader:
    """Random access to the sections of an MRC file without reading the whole file.

    ``section(i)`` returns section ``i`` as a ``(ny, nx)`` array in the file's dtype (uint8 for mode 101).
    """

    def __init__(self, path: str | Path):
        self.header = read_mrc_header(path)
        self.path = self.header.path
        self._fh = open(self.path, "rb")  # noqa: SIM115 - closed in close()

    def __enter__(self) -> MrcReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Release the file handle."""
        if not self._fh.closed:
            self._fh.close()

    def __len__(self) -> int:
        return self.header.nz

    def section(self, i: int) -> np.ndarray:
        """Read section ``i`` (0-based) from disk."""
        h = self.header
        if not 0 <= i < h.nz:
            raise IndexError(f"section {i} out of range 0..{h.nz - 1}")
        self._fh.seek(h.data_offset + i * h.section_bytes)
        buf = self._fh.read(h.section_bytes)
        if len(buf) < h.section_bytes:
            raise TiltflowError(
                f"truncated MRC file: section {i} of {h.nz} is incomplete "
                f"(file has {h.file_size} bytes, needs {h.data_offset + h.nz * h.section_bytes})",
                self.path,
            )
        if h.mode == MODE_4BIT:
            return unpack_4bit(np.frombuffer(buf, np.uint8), h.nx, h.ny)
        return np.frombuffer(buf, h.dtype).reshape(h.ny, h.nx).copy()

    def sections(self, start: int = 0, stop: int | None = None) -> Iterator[np.ndarray]:
        """Yield sections ``start..stop-1`` one at a time."""
        stop = self.header.nz if stop is None else stop
        for i in range(start, stop):
            yield self.section(i)

    def read_all(self) -> np.ndarray:
        """All sections as one ``(nz, ny, nx)`` array (checks for truncation first)."""
        h = self.header
        needed = h.data_offset + h.nz * h.section_bytes
        if h.file_size < needed:
            raise TiltflowError(
                f"truncated MRC file: {h.file_size} bytes, header says {h.nz} sections of "
                f"{h.nx}x{h.ny} mode {h.mode} ({needed} bytes)",
                self.path,
            )
        if h.mode == MODE_4BIT:
            return np.stack(list(self.sections())) if h.nz else np.zeros((0, h.ny, h.nx), np.uint8)
        self._fh.seek(h.data_offset)
        data = np.fromfile(self._fh, dtype=h.dtype, count=h.nx * h.ny * h.nz)
        return data.reshape(h.nz, h.ny, h.nx)


class MrcSections:
    """A 3-D stack on disk indexed like an array, one section read per ``stack[i]`` (bounded memory).

    ``stack[i]`` is section ``i`` as ``(ny, nx)``; ``stack[a:b]`` or ``stack[index_array]`` is another lazy
    view. Why: the aligner needs one tilt at a time, and a memory map would count every page it touched.
    """

    def __init__(self, reader: MrcReader, index=None):
        self.reader = reader
        self.index = np.arange(reader.header.nz) if index is None else np.asarray(index, int)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(sections, ny, nx), as an array's shape would be."""
        return len(self.index), self.reader.header.ny, self.reader.header.nx

    ndim = 3

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, k):
        if isinstance(k, (int, np.integer)):
            return self.reader.section(int(self.index[k]))
        return MrcSections(self.reader, self.index[k])


def unpack_4bit(packed: np.ndarray, nx: int, ny: int) -> np.ndarray:
    """Unpack IMOD mode 101: the first pixel of each pair in the low 4 bits; odd rows padded to a byte."""
    row_bytes = (nx + 1) // 2
    p = packed.reshape(ny, row_bytes)
    out = np.empty((ny, row_bytes * 2), np.uint8)
    out[:, 0::2] = p & 0x0F
    out[:, 1::2] = p >> 4
    return out[:, :nx].copy() if nx % 2 else out


def pack_4bit(data: np.ndarray) -> np.ndarray:
    """Inverse of :func:`unpack_4bit` for one ``(ny, nx)`` section of values 0-15 (tests, simulator)."""
    arr = np.asarray(data)
    if arr.min(initial=0) < 0 or arr.max(initial=0) > 15:
        raise ValueError("4-bit data must be in 0..15")
    ny, nx = arr.shape
    padded = np.zeros((ny, nx + (nx % 2)), np.uint8)
    padded[:, :nx] = arr
    return (padded[:, 0::2] | (padded[:, 1::2] << 4)).astype(np.uint8)


def write_mrc_4bit(path: str | Path, data: np.ndarray, pixel_size: float) -> Path:
    """Write a SerialEM/IMOD mode-101 stack (values 0-15), e.g. for tests; atomically."""
    arr = np.asarray(data)
    if arr.ndim == 2:
        arr = arr[None]
    nz, ny, nx = arr.shape
    hdr = bytearray(1024)
    struct.pack_into("<4i", hdr, 0, nx, ny, nz, MODE_4BIT)
    struct.pack_into("<3i", hdr, 28, nx, ny, nz)
    struct.pack_into("<3f", hdr, 40, nx * pixel_size, ny * pixel_size, nz * pixel_size)
    struct.pack_into("<3f", hdr, 52, 90.0, 90.0, 90.0)
    struct.pack_into("<3i", hdr, 64, 1, 2, 3)
    struct.pack_into("<3f", hdr, 76, float(arr.min()), float(arr.max()), float(arr.mean()))
    struct.pack_into("<2i", hdr, 152, IMOD_STAMP, 0)
    hdr[208:212] = b"MAP "
    hdr[212:214] = b"\x44\x44"
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(hdr)
        for sec in arr:
            f.write(pack_4bit(sec).tobytes())
    return Path(path)


def write_mrc(path: str | Path, data: np.ndarray, pixel_size: float, dtype=None) -> Path:
    """Write ``data`` (2-D image, 3-D stack or volume in z, y, x order) with ``pixel_size`` in A.

    Written to a temporary name and renamed, so a reader never sees a partial file.
    """
    import mrcfile

    arr = np.asarray(data)
    if arr.ndim not in (2, 3):
        raise ValueError(f"write_mrc writes 2-D images or 3-D stacks/volumes, got shape {arr.shape}")
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
    """Read an MRC file; return (data, pixel size in A along x).

    One section comes back 2-D ``(ny, nx)``, several as ``(nz, ny, nx)``. Mode 0 follows IMOD's sign flag,
    mode 101 is unpacked to uint8, and maps stored with permuted axes (MAPC/MAPR/MAPS) are returned in
    z, y, x order. A truncated file raises a TiltflowError naming it.
    """
    with MrcReader(path) as reader:
        h = reader.header
        data = reader.read_all()
    if h.mapcrs != (1, 2, 3) and h.nz > 1:
        # stored axes (sections, rows, columns) hold the axes (maps, mapr, mapc); bring them to (z, y, x)
        stored = (h.mapcrs[2], h.mapcrs[1], h.mapcrs[0])
        data = np.ascontiguousarray(data.transpose([stored.index(3), stored.index(2), stored.index(1)]))
    if h.nz == 1:
        data = data[0]
    return data, h.pixel_size


def mrc_pixel_size(path: str | Path) -> float:
    """Pixel size (A) from the header alone; 0.0 if the header holds none."""
    return read_mrc_header(path).pixel_size


def is_mrc(path: str | Path) -> bool:
    """Whether ``path`` looks like an MRC file (plausible header), without raising."""
    try:
        read_mrc_header(path)
    except (TiltflowError, OSError):
        return False
    return True


__all__ = [
    "MrcHeader",
    "MrcReader",
    "MrcSections",
    "is_mrc",
    "mrc_pixel_size",
    "pack_4bit",
    "read_mrc",
    "read_mrc_header",
    "unpack_4bit",
    "write_mrc",
    "write_mrc_4bit",
]


@dataclass
class SectionStats:
    """MRC header statistics (dmin, dmax, dmean, rms = standard deviation) accumulated section by section.

    mrcfile's ``update_header_stats`` computes them over the whole array (``data.std`` allocates a full
    float32 temporary: a stack or a tomogram twice in memory). Chan et al.'s pairwise update of mean and sum of squared
    deviations keeps the result as accurate as a two-pass one, in float64.
    """

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0
    dmin: float = math.inf
    dmax: float = -math.inf

    def add(self, section: np.ndarray) -> None:
        """Take one section into the statistics."""
        x = np.asarray(section)
        k = x.size
        if k == 0:
            return
        mean_k = float(x.mean(dtype=np.float64))
        d = (x.astype(np.float64) - mean_k).ravel()
        m2_k = float(d @ d)
        delta = mean_k - self.mean
        total = self.n + k
        self.mean += delta * k / total
        self.m2 += m2_k + delta * delta * self.n * k / total
        self.n = total
        self.dmin = min(self.dmin, float(x.min()))
        self.dmax = max(self.dmax, float(x.max()))

    def write_to(self, header, what: str = "the volume") -> None:
        """Put the statistics into an MRC header (left as it is when no section was added)."""
        if self.n == 0:
            return
        if not (math.isfinite(self.dmin) and math.isfinite(self.dmax)):
            log.warning("%s holds NaN or infinite values; its header statistics are not meaningful", what)
        header.dmin, header.dmax = np.float32(self.dmin), np.float32(self.dmax)
        header.dmean = np.float32(self.mean)
        header.rms = np.float32(math.sqrt(self.m2 / self.n))
