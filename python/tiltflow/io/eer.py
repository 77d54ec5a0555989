"""EER movies (Thermo Fisher Falcon 4/4i/C): fractions grouped into frames, decoded group by group.

Metadata (fraction count, dose, pixel size) comes from eerfile's ``EERHeader``; the fractions are decoded
with tifffile/imagecodecs (which eerfile itself uses) one page at a time, because ``eerfile.render``
allocates the whole rendered movie and has no 8k/16k (sub-pixel) rendering. Grouping follows RELION
(``--eer_grouping``): ``n_frames = n_fractions // group``; the remaining fractions are dropped.

:func:`write_eer` writes small synthetic EER files (BigTIFF, compression 65001 = 7-bit run lengths plus
2+2 sub-pixel bits) for tests and the simulator; imagecodecs has no EER encoder and tifffile refuses to
write one, so the bit stream and the TIFF structure are written here, following imagecodecs'
``imcd_eer_decode``: codes read least significant bit first; a run of 127 continues without an event.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tiltflow.atomic import atomic_path
from tiltflow.errors import TiltflowError
from tiltflow.io.movies import Movie

log = logging.getLogger("tiltflow.io.eer")

#: RELION's default --eer_grouping, used when neither a group size nor a dose target is given
DEFAULT_EER_GROUPING = 32
EER_COMPRESSIONS = (65000, 65001, 65002)


@dataclass(frozen=True)
class EerInfo:
    """What the EER header says (pixel size of the physical 4k sensor grid, in A)."""

    path: Path
    n_fractions: int
    sensor_shape: tuple[int, int]  # (h, w)
    pixel_size: float | None
    total_dose: float | None  # e/A^2 for the whole movie, from the header
    compression: int

    @property
    def dose_per_fraction(self) -> float | None:
        """e/A^2 per EER fraction according to the header."""
        return self.total_dose / self.n_fractions if self.total_dose and self.n_fractions else None


def is_eer(path: str | Path) -> bool:
    """Whether ``path`` is a TIFF whose first page uses an EER compression."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            return tif.pages.first.compression in EER_COMPRESSIONS
    except Exception:
        return False


def read_eer_info(path: str | Path) -> EerInfo:
    """Read an EER file's header (via eerfile) and page count."""
    import tifffile
    from eerfile.data_models import EERHeader

    from tiltflow.io.movies import count_tiff_pages

    path = Path(path)
    try:
        with tifffile.TiffFile(path) as tif:
            first = tif.pages.first
            compression = int(first.compression)
            n_pages = count_tiff_pages(tif, path)
            shape = (int(first.imagelength), int(first.imagewidth))
            declared = (tif.eer_metadata or {}).get("numberOfFrames")
    except TiltflowError:
        raise
    except Exception as exc:
        raise TiltflowError(f"not a readable EER file ({' '.join(str(exc).split())[:200]})", path) from exc
    if compression not in EER_COMPRESSIONS:
        raise TiltflowError(f"not an EER file (TIFF compression {compression})", path)
    if isinstance(declared, int) and declared > n_pages:
        raise TiltflowError(
            f"truncated EER file: header says {declared} fractions, the file holds {n_pages}", path
        )
    pixel = total = None
    try:
        hdr = EERHeader.from_file(path)
        if hdr.pixel_spacing_width_meters > 0:
            pixel = hdr.pixel_spacing_width_angstroms
        if hdr.total_dose_electrons_per_pixel and pixel:
            total = hdr.total_dose_electrons_per_pixel / (pixel * hdr.pixel_spacing_height_angstroms)
    except Exception as exc:  # metadata missing or odd: the frames are still readable
        log.debug("EER header of %s not parsed: %s", path, exc)
    return EerInfo(path, n_pages, shape, pixel, total, compression)


def eer_group_size(
    n_fractions: int,
    *,
    grouping: int | None = None,
    dose_per_frame: float | None = None,
    dose_per_fraction: float | None = None,
    path: str | Path | None = None,
) -> int:
    """Fractions per rendered frame: ``grouping``, else ``round(dose_per_frame / dose_per_fraction)``.

    With neither, RELION's default of 32 (or all fractions of a shorter movie).
    """
    if grouping is not None:
        if grouping < 1:
            raise TiltflowError(f"EER grouping must be >= 1, got {grouping}", path)
        g = int(grouping)
    elif dose_per_frame is not None:
        if dose_per_frame <= 0:
            raise TiltflowError(f"EER dose per frame must be > 0, got {dose_per_frame}", path)
        if not dose_per_fraction:
            raise TiltflowError(
                "EER dose per frame given but the dose per fraction is unknown: the header has no dose; "
                "give the movie's total dose (e.g. the mdoc ExposureDose) or a group size (--eer-grouping)",
                path,
            )
        g = max(1, int(round(dose_per_frame / dose_per_fraction)))
    else:
        g = min(DEFAULT_EER_GROUPING, n_fractions)
    if g > n_fractions:
        raise TiltflowError(
            f"EER group of {g} fractions is larger than the movie ({n_fractions} fractions)", path
        )
    return g


class EerMovie(Movie):
    """An EER movie rendered as frames of ``group_size`` fractions (float32 event counts)."""

    format = "eer"

    def __init__(
        self,
        path: str | Path,
        *,
        grouping: int | None = None,
        dose_per_frame: float | None = None,
        total_dose: float | None = None,
        sampling: int = 1,
    ):
        import tifffile

        self.path = Path(path)
        if sampling not in (1, 2, 3):
            raise TiltflowError(f"EER sampling must be 1 (4k), 2 (8k) or 3 (16k), got {sampling}", path)
        self.info = read_eer_info(self.path)
        self.sampling = sampling
        self.n_fractions = self.info.n_fractions
        if total_dose is not None and total_dose <= 0:
            raise TiltflowError(f"EER total dose must be > 0, got {total_dose}", path)
        self.dose_per_fraction = (
            (total_dose / self.n_fractions) if total_dose else self.info.dose_per_fraction
        )
        self.group_size = eer_group_size(
            self.n_fractions,
            grouping=grouping,
            dose_per_frame=dose_per_frame,
            dose_per_fraction=self.dose_per_fraction,
            path=self.path,
        )
        self.n_frames = self.n_fractions // self.group_size
        self.fractions_dropped = self.n_fractions - self.n_frames * self.group_size
        if self.fractions_dropped:
            log.debug(
                "%s: %d fractions in groups of %d; the last %d are not used (as RELION)",
                self.path.name,
                self.n_fractions,
                self.group_size,
                self.fractions_dropped,
            )
        factor = 2 ** (sampling - 1)
        h, w = self.info.sensor_shape
        self.shape = (h * factor, w * factor)
        self.dtype = np.dtype(np.float32)
        self.pixel_size = self.info.pixel_size / factor if self.info.pixel_size else None
        self._tif = tifffile.TiffFile(self.path, superres=sampling - 1 if sampling > 1 else None)

    @property
    def dose_per_frame(self) -> float | None:
        """e/A^2 in one rendered frame (None when the dose is unknown)."""
        return self.dose_per_fraction * self.group_size if self.dose_per_fraction else None

    def _frame(self, i: int) -> np.ndarray:
        # at most one event per pixel and fraction, so uint8 cannot overflow for groups up to 255
        acc = np.zeros(self.shape, np.uint8 if self.group_size <= 255 else np.uint16)
        first = i * self.group_size
        for k in range(first, first + self.group_size):
            try:
                events = self._tif.pages[k].asarray()
            except Exception as exc:
                raise TiltflowError(
                    f"cannot decode EER fraction {k} (truncated or corrupt?): {' '.join(str(exc).split())[:150]}",
                    self.path,
                ) from exc
            np.add(acc, events.reshape(self.shape), out=acc, casting="unsafe")
        return acc.astype(np.float32)

    def close(self) -> None:
        """Close the EER file."""
        self._tif.close()


# --- synthetic EER writing (tests, simulator) ------------------------------------------------------


def encode_eer_fraction(events: np.ndarray, subpixel: np.ndarray | None = None) -> bytes:
    """Encode one fraction (``events``: (h, w) 0/1) as an EER 7-2-2 bit stream (compression 65001).

    ``subpixel`` (h, w) holds the decoded sub-pixel position of each event on the 16k grid:
    bits 0-1 horizontal (0-3), bits 2-3 vertical. EER stores each 2-bit value XOR 2.
    """
    ev = np.asarray(events)
    if ev.ndim != 2:
        raise ValueError("an EER fraction is a 2-D array")
    if ev.max(initial=0) > 1 or ev.min(initial=0) < 0:
        raise ValueError("an EER fraction holds at most one event per pixel")
    npix = ev.size
    pos = np.flatnonzero(ev.ravel())
    if subpixel is None:
        sub = np.zeros(pos.size, np.int64)
    else:
        s = np.asarray(subpixel).ravel()[pos].astype(np.int64)
        sub = ((s & 3) ^ 2) | ((((s >> 2) & 3) ^ 2) << 2)
    prev_end = np.concatenate([[0], pos[:-1] + 1]) if pos.size else np.zeros(0, np.int64)
    gaps = pos - prev_end
    n127 = gaps // 127
    rem = gaps % 127
    per_event = n127 + 1
    n_codes = int(per_event.sum())
    vals = np.full(n_codes, 127, np.int64)
    lens = np.full(n_codes, 7, np.int64)
    ev_idx = np.cumsum(per_event) - 1
    vals[ev_idx] = rem | (sub << 7)
    lens[ev_idx] = 11
    tail = npix - (int(pos[-1]) + 1 if pos.size else 0)
    tail_vals = [127] * (tail // 127) + ([tail % 127] if tail % 127 else [])
    vals = np.concatenate([vals, np.array(tail_vals, np.int64)])
    lens = np.concatenate([lens, np.full(len(tail_vals), 7, np.int64)])
    offs = np.cumsum(lens) - lens
    total_bits = int(lens.sum()) + 32  # zero padding: the decoder reads ahead by up to 11 bits
    bits = np.zeros(total_bits, np.uint8)
    for b in range(11):
        m = lens > b
        bits[offs[m] + b] = (vals[m] >> b) & 1
    data = np.packbits(bits, bitorder="little").tobytes()
    return data + (b"\x00" if len(data) % 2 else b"")


def write_eer(
    path: str | Path,
    fractions: np.ndarray | Iterable[np.ndarray],
    *,
    pixel_size: float = 1.0,
    total_dose_per_pixel: float | None = None,
    subpixel: np.ndarray | None = None,
    exposure_time: float = 1.0,
) -> Path:
    """Write ``fractions`` ((n, h, w) 0/1 events, or (h, w) fractions one by one) as an EER file with Falcon-style
    XML metadata.

    ``pixel_size`` in A; ``total_dose_per_pixel`` (e/pixel, default: the events counted) goes into the
    header as ``totalDose`` so that readers can derive the dose per fraction. Fractions given one by one are
    encoded as they come (a 4k movie of hundreds of fractions is never whole in memory). Written atomically.
    """
    if isinstance(fractions, np.ndarray) and fractions.ndim != 3:
        raise ValueError("fractions must be (n, h, w)")
    strips: list[bytes] = []
    shape: tuple[int, ...] | None = None
    events = 0
    for k, fraction in enumerate(fractions):
        f = np.asarray(fraction)
        if f.ndim != 2 or (shape is not None and f.shape != shape):
            raise ValueError(f"fraction {k} is {f.shape}, not (h, w) like the others")
        shape = f.shape
        strips.append(encode_eer_fraction(f, None if subpixel is None else subpixel[k]))
        events += int(f.sum())
    if shape is None:
        raise ValueError("no fractions to write")
    n, (h, w) = len(strips), shape
    if total_dose_per_pixel is None:
        total_dose_per_pixel = events / (h * w)
    meta = {
        "numberOfFrames": str(n),
        "sensorImageWidth": str(w),
        "sensorImageHeight": str(h),
        "sensorPixelSize.width": f"{pixel_size * 1e-10:.6e}",
        "sensorPixelSize.height": f"{pixel_size * 1e-10:.6e}",
        "totalDose": f"{total_dose_per_pixel:.6f}",
        "exposureTime": f"{exposure_time:.6f}",
        "meanDoseRate": f"{total_dose_per_pixel / exposure_time:.6f}",
        "commercialName": "tiltflow synthetic EER",
    }
    xml = (
        "<metadata>" + "".join(f'<item name="{k}">{v}</item>' for k, v in meta.items()) + "</metadata>"
    ).encode()
    with atomic_path(path) as tmp:
        tmp.write_bytes(_bigtiff_bytes(strips, h, w, 65001, xml))
    return Path(path)


def _bigtiff_bytes(strips: list[bytes], h: int, w: int, compression: int, xml: bytes) -> bytes:
    """A little-endian BigTIFF, one strip per page, the EER XML in tag 65001 of page 0."""
    out = bytearray(b"II" + struct.pack("<HHHQ", 43, 8, 0, 16))
    prev_next_ptr = 8  # where the first-IFD offset lives
    for k, strip in enumerate(strips):
        strip_off = len(out)
        out += strip
        if len(out) % 2:
            out += b"\x00"
        xml_off = 0
        if k == 0:
            xml_off = len(out)
            out += xml + (b"\x00" if len(xml) % 2 else b"")
        entries = [
            (256, 4, 1, struct.pack("<I", w)),
            (257, 4, 1, struct.pack("<I", h)),
            (259, 3, 1, struct.pack("<H", compression)),
            (262, 3, 1, struct.pack("<H", 1)),
            (273, 16, 1, struct.pack("<Q", strip_off)),
            (277, 3, 1, struct.pack("<H", 1)),
            (278, 4, 1, struct.pack("<I", h)),
            (279, 16, 1, struct.pack("<Q", len(strip))),
        ]
        if k == 0:
            entries.append((65001, 7, len(xml), struct.pack("<Q", xml_off)))
        ifd_off = len(out)
        struct.pack_into("<Q", out, prev_next_ptr, ifd_off)
        out += struct.pack("<Q", len(entries))
        for tag, typ, count, value in entries:
            out += struct.pack("<HHQ", tag, typ, count) + value.ljust(8, b"\x00")
        prev_next_ptr = len(out)
        out += struct.pack("<Q", 0)
    return bytes(out)


__all__ = [
    "DEFAULT_EER_GROUPING",
    "EerInfo",
    "EerMovie",
    "eer_group_size",
    "encode_eer_fraction",
    "is_eer",
    "read_eer_info",
    "write_eer",
]
