"""Digital Micrograph 4 (.dm4) images: K2/K3 gain references written by DigitalMicrograph or SerialEM.

Why our own reader: only the image data tag is needed, the format is documented (big-endian header
version 4, nested tag groups, 8-byte counts; see Gatan's DM3/DM4 notes and ncempy's ``dm.py``), and the
alternatives pull large stacks (rsciio needs dask/pint/...; ncempy's reader loads every tag and is GPL-free
but unmaintained for DM4 corner cases). This module reads only the tag directory and then the one array
it needs, so an 11520x8184 float32 reference costs a single 377 MB read.

Orientation: DigitalMicrograph stores rows top-down; IMOD (``dm2mrc``, and every IMOD program reading
DM files) inverts y so that the image looks the same as in DM. :func:`read_dm4` does the same by default,
so the result equals the MRC that ``dm2mrc ref.dm4 ref.mrc`` writes, and MotionCor's ``-RotGain/-FlipGain``
values for that MRC apply unchanged.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from tiltflow.atomic import atomic_path
from tiltflow.errors import TiltflowError

# DM tag data type codes -> numpy type characters (the byte order comes from the file header)
_SIMPLE = {
    2: "i2",
    3: "i4",
    4: "u2",
    5: "u4",
    6: "f4",
    7: "f8",
    8: "u1",
    9: "i1",
    10: "u1",
    11: "i8",
    12: "u8",
}
_GROUP, _DATA = 20, 21
_STRUCT, _STRING, _ARRAY = 15, 18, 20


@dataclass(frozen=True)
class _ArrayRef:
    """An array found in the tag directory, not yet read."""

    offset: int
    dtype: np.dtype
    count: int
    text: str | None = None  # short uint16 arrays are also how DM stores strings (units, names)


@dataclass(frozen=True)
class Dm4Image:
    """The main image of a DM4 file (``data[y, x]``; see the module note on y) and its pixel size."""

    data: np.ndarray
    pixel_size: float | None  # A, from the calibration when its unit is a length
    path: Path


class _Parser:
    def __init__(self, fh, size: int, path: Path):
        self.fh, self.size, self.path = fh, size, path
        self.order: Literal["<", ">"] = "<"

    def _read(self, n: int) -> bytes:
        b = self.fh.read(n)
        if len(b) < n:
            raise TiltflowError("truncated DM4 file (the tag directory runs past the end)", self.path)
        return b

    def _u64(self) -> int:
        return struct.unpack(">Q", self._read(8))[0]

    def header(self) -> None:
        version = struct.unpack(">i", self._read(4))[0]
        if version != 4:
            kind = "DM3 (version 3)" if version == 3 else f"version {version}"
            raise TiltflowError(f"not a DM4 file ({kind}); convert it with IMOD's dm2mrc", self.path)
        self._u64()  # root length
        self.order = "<" if struct.unpack(">i", self._read(4))[0] == 1 else ">"

    def group(self, depth: int = 0) -> dict[str, Any] | list[Any]:
        if depth > 64:
            raise TiltflowError("corrupt DM4 file (tag groups nested too deeply)", self.path)
        self._read(2)  # sorted, open
        n = self._u64()
        if n > 1_000_000:
            raise TiltflowError("corrupt DM4 file (implausible tag count)", self.path)
        named: dict[str, Any] = {}
        unnamed: list[Any] = []
        for _ in range(n):
            kind = self._read(1)[0]
            nlen = struct.unpack(">H", self._read(2))[0]
            name = self._read(nlen).decode("latin-1")
            self._u64()  # byte length of this tag's content
            if kind == _GROUP:
                value = self.group(depth + 1)
            elif kind == _DATA:
                value = self.data()
            else:
                raise TiltflowError(f"corrupt DM4 file (tag type {kind} at byte {self.fh.tell()})", self.path)
            if name:
                named[name] = value
            else:
                unnamed.append(value)
        return unnamed if unnamed and not named else (named | ({"": unnamed} if unnamed else {}))

    def data(self) -> Any:
        if self._read(4) != b"%%%%":
            raise TiltflowError("corrupt DM4 file (missing %%%% tag marker)", self.path)
        ninfo = self._u64()
        if ninfo > 10_000:
            raise TiltflowError("corrupt DM4 file (implausible tag info length)", self.path)
        info = struct.unpack(f">{ninfo}Q", self._read(8 * ninfo))
        t = info[0]
        if t in _SIMPLE:
            dt = np.dtype(_SIMPLE[t]).newbyteorder(self.order)
            return np.frombuffer(self._read(dt.itemsize), dt)[0].item()
        if t == _STRING:
            return self._read(info[1]).decode("latin-1", "replace")
        if t == _STRUCT:
            nfields = info[2]
            types = [info[4 + 2 * k] for k in range(nfields)]
            return tuple(self._simple(ft) for ft in types)
        if t == _ARRAY:
            elem = info[1]
            if elem == _STRUCT:
                nfields = info[3]
                types = [info[5 + 2 * k] for k in range(nfields)]
                count = info[4 + 2 * nfields]
                nbytes = sum(np.dtype(_SIMPLE[ft]).itemsize for ft in types) * count
                self.fh.seek(nbytes, 1)
                return None  # arrays of structs are never image data
            if elem not in _SIMPLE:
                raise TiltflowError(f"corrupt DM4 file (array of type {elem})", self.path)
            dt = np.dtype(_SIMPLE[elem]).newbyteorder(self.order)
            count = info[2]
            offset = self.fh.tell()
            if offset + dt.itemsize * count > self.size:
                raise TiltflowError("truncated DM4 file (image data runs past the end)", self.path)
            text = None
            if elem == 4 and count <= 64:
                text = self._read(2 * count).decode(
                    "utf-16-le" if self.order == "<" else "utf-16-be", "replace"
                )
                self.fh.seek(offset)
            self.fh.seek(dt.itemsize * count, 1)
            return _ArrayRef(offset, dt, count, text)
        raise TiltflowError(f"corrupt DM4 file (tag data type {t})", self.path)

    def _simple(self, t: int) -> Any:
        dt = np.dtype(_SIMPLE[t]).newbyteorder(self.order)
        return np.frombuffer(self._read(dt.itemsize), dt)[0].item()


def read_dm4(path: str | Path, *, invert_y: bool = True) -> Dm4Image:
    """Read the main (largest) image of a DM4 file; ``invert_y`` as IMOD's dm2mrc (module note)."""
    path = Path(path)
    if not path.is_file():
        raise TiltflowError("DM4 file not found", path)
    size = path.stat().st_size
    with open(path, "rb") as fh:
        p = _Parser(fh, size, path)
        p.header()
        root = p.group()
        images = root.get("ImageList") if isinstance(root, dict) else None
        if not images:
            raise TiltflowError("DM4 file holds no ImageList", path)
        images = images if isinstance(images, list) else images.get("", [])
        best = None
        for img in images:
            try:
                idata = img["ImageData"]
                ref = idata["Data"]
                dims = idata["Dimensions"]
            except (KeyError, TypeError):
                continue
            dims = list(dims) if isinstance(dims, list) else list(dims.get("", []))
            if not isinstance(ref, _ArrayRef) or not dims or idata.get("DataType") == 23:
                continue  # 23 = packed RGB: DM's display thumbnail, listed first
            if best is None or ref.count >= best[1].count:
                best = (idata, ref, dims)
        if best is None:
            raise TiltflowError("DM4 file holds no image data tag", path)
        idata, ref, dims = best
        if int(np.prod(dims)) != ref.count:
            raise TiltflowError(f"DM4 image dimensions {dims} do not match its data length {ref.count}", path)
        fh.seek(ref.offset)
        data = np.fromfile(fh, dtype=ref.dtype, count=ref.count)
    if data.size != ref.count:
        raise TiltflowError("truncated DM4 file (image data incomplete)", path)
    shape = tuple(int(d) for d in reversed(dims))  # DM lists x first
    arr = data.reshape(shape).astype(ref.dtype.newbyteorder("="), copy=False)
    if invert_y and arr.ndim >= 2:
        arr = arr[..., ::-1, :]
    return Dm4Image(np.ascontiguousarray(arr), _pixel_size(idata), path)


def _pixel_size(idata: dict) -> float | None:
    """Pixel size in A from ImageData/Calibrations/Dimension[0] (Scale with a length unit)."""
    try:
        dim = idata["Calibrations"]["Dimension"]
        dim0 = (dim if isinstance(dim, list) else dim[""])[0]
        scale = float(dim0["Scale"])
        unit = dim0.get("Units", "")
        unit = (unit.text or "") if isinstance(unit, _ArrayRef) else str(unit)
        unit = unit.strip()
    except (KeyError, TypeError, IndexError, ValueError):
        return None
    factor = {"nm": 10.0, "\u00b5m": 1e4, "um": 1e4, "A": 1.0, "\u00c5": 1.0, "pm": 0.01}.get(unit)
    return scale * factor if factor and scale > 0 else None


# --- writing (tests and simulator: a minimal but valid DM4 with the tags read above) --------------


def _tag_data(name: str, info: list[int], payload: bytes) -> bytes:
    body = b"%%%%" + struct.pack(">Q", len(info)) + struct.pack(f">{len(info)}Q", *info) + payload
    nm = name.encode("latin-1")
    return bytes([_DATA]) + struct.pack(">H", len(nm)) + nm + struct.pack(">Q", len(body)) + body


def _tag_group(name: str, children: list[bytes]) -> bytes:
    body = b"\x00\x01" + struct.pack(">Q", len(children)) + b"".join(children)
    nm = name.encode("latin-1")
    return bytes([_GROUP]) + struct.pack(">H", len(nm)) + nm + struct.pack(">Q", len(body)) + body


def _image_group(arr: np.ndarray, pixel_size_nm: float) -> bytes:
    code = {
        np.dtype("float32"): 6,
        np.dtype("uint16"): 4,
        np.dtype("int16"): 2,
        np.dtype("uint8"): 10,
        np.dtype("int32"): 3,
        np.dtype("uint32"): 5,
        np.dtype("float64"): 7,
    }[arr.dtype]
    dtype_code = {6: 2, 4: 10, 2: 1, 10: 6, 3: 7, 5: 11, 7: 12}[code]
    le = arr.astype(arr.dtype.newbyteorder("<"))
    units = "nm".encode("utf-16-le")
    dims = [_tag_data("", [5], struct.pack("<I", d)) for d in reversed(arr.shape)]
    cal_dims = [
        _tag_group(
            "",
            [
                _tag_data("Origin", [6], struct.pack("<f", 0.0)),
                _tag_data("Scale", [6], struct.pack("<f", pixel_size_nm)),
                _tag_data("Units", [_ARRAY, 4, 2], units),
            ],
        )
        for _ in arr.shape
    ]
    return _tag_group(
        "",
        [
            _tag_group(
                "ImageData",
                [
                    _tag_group("Calibrations", [_tag_group("Dimension", cal_dims)]),
                    _tag_data("Data", [_ARRAY, code, arr.size], le.tobytes()),
                    _tag_data("DataType", [3], struct.pack("<i", dtype_code)),
                    _tag_group("Dimensions", dims),
                    _tag_data("PixelDepth", [3], struct.pack("<i", arr.dtype.itemsize)),
                ],
            ),
            _tag_group("ImageTags", [_tag_data("Name", [_STRING, 4], b"gain")]),
        ],
    )


def write_dm4(path: str | Path, image: np.ndarray, pixel_size: float = 1.0) -> Path:
    """Write ``image`` (rows in DM's top-down order) as a DM4 file with a thumbnail, atomically.

    ``pixel_size`` in A (stored in nm, as DM does). Little-endian data, big-endian directory.
    """
    arr = np.asarray(image)
    if arr.ndim != 2:
        raise ValueError("write_dm4 writes one 2-D image")
    thumb = np.ascontiguousarray(arr[:: max(1, arr.shape[0] // 4), :: max(1, arr.shape[1] // 4)]).astype(
        np.uint8
    )
    root_children = [
        _tag_group("ImageList", [_image_group(thumb, 1.0), _image_group(arr, pixel_size / 10.0)])
    ]
    root = b"\x00\x01" + struct.pack(">Q", len(root_children)) + b"".join(root_children)
    blob = struct.pack(">i", 4) + struct.pack(">Q", len(root)) + struct.pack(">i", 1) + root + b"\x00" * 8
    with atomic_path(path) as tmp:
        tmp.write_bytes(blob)
    return Path(path)


__all__ = ["Dm4Image", "read_dm4", "write_dm4"]
