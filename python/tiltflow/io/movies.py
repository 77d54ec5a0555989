"""One small interface to every movie format SerialEM and EPU write: TIFF, MRC (incl. 4-bit) and EER.

Frames are read one at a time, so memory stays bounded whatever the movie's length: a 400-fraction EER
movie is decoded group by group, never expanded into float32 all at once. Every step reads movies only
through :func:`open_movie`::

    with open_movie(path, eer_grouping=20) as movie:
        for frame in movie.frames():      # (h, w) arrays, native dtype
            ...

Orientation, the field's rule (every reader of the field does this): MRC and EER frames in file order
(row 0 = the first row stored); TIFF frames with the row order reversed (row 0 = the LAST row stored), as
IMOD (``libiimod/iitif.c``), MotionCor2/3 (``TiffUtil/CLoadTiffImage.cpp``), RELION (``src/rwTIFF.h``),
Warp and cisTEM read them. SerialEM writes TIFF rows unchanged and MRC rows reversed
(``KImageStore.cpp``), so a TIFF and an MRC of one acquisition give the same ``frame[y, x]``, and a gain
prepared with MotionCor's ``-RotGain/-FlipGain`` for these frames matches in tiltflow too.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from tiltflow.errors import TiltflowError

TIFF_SUFFIXES = (".tif", ".tiff")
MRC_SUFFIXES = (".mrc", ".mrcs", ".st", ".map", ".ali")
EER_SUFFIXES = (".eer", ".ecc")


class Movie:
    """A movie opened for frame-by-frame reading (use as a context manager).

    Attributes: ``path``, ``n_frames``, ``shape`` (h, w of one rendered frame), ``dtype`` (of ``frame``),
    ``pixel_size`` (A per rendered pixel, None when the file does not record it), ``format``.
    """

    path: Path
    n_frames: int
    shape: tuple[int, int]
    dtype: np.dtype
    pixel_size: float | None = None
    format: str = ""

    def _frame(self, i: int) -> np.ndarray:  # pragma: no cover - implemented by subclasses
        raise NotImplementedError

    def frame(self, i: int) -> np.ndarray:
        """Frame ``i`` (0-based; negative counts from the end) as an ``(h, w)`` array of ``dtype``."""
        if i < 0:
            i += self.n_frames
        if not 0 <= i < self.n_frames:
            raise IndexError(f"{self.path}: frame {i} out of range (movie has {self.n_frames} frames)")
        return self._frame(i)

    def frames(self, start: int = 0, stop: int | None = None) -> Iterator[np.ndarray]:
        """Yield frames ``start..stop-1`` one by one (only one frame in memory at a time)."""
        start, stop = self._range(start, stop)
        for i in range(start, stop):
            yield self._frame(i)

    def read(self, start: int = 0, stop: int | None = None, dtype=np.float32) -> np.ndarray:
        """Frames ``start..stop-1`` as one ``(n, h, w)`` array of ``dtype`` (filled frame by frame)."""
        start, stop = self._range(start, stop)
        out = np.empty((stop - start, *self.shape), dtype=dtype)
        for k, i in enumerate(range(start, stop)):
            out[k] = self._frame(i)
        return out

    def sum(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Sum of frames ``start..stop-1`` in float64 (bounded memory), e.g. for gain checks."""
        acc = np.zeros(self.shape, np.float64)
        for fr in self.frames(start, stop):
            acc += fr
        return acc

    def _range(self, start: int, stop: int | None) -> tuple[int, int]:
        stop = self.n_frames if stop is None else min(stop, self.n_frames)
        if start < 0 or start > stop:
            raise IndexError(
                f"{self.path}: bad frame range {start}..{stop} (movie has {self.n_frames} frames)"
            )
        return start, stop

    def close(self) -> None:
        """Release the file."""

    def __enter__(self) -> Movie:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __len__(self) -> int:
        return self.n_frames

    def __iter__(self) -> Iterator[np.ndarray]:
        return self.frames()

    def __repr__(self) -> str:
        h, w = self.shape
        return f"<{type(self).__name__} {self.path.name}: {self.n_frames} x {w}x{h} {self.dtype}>"


class TiffMovie(Movie):
    """Multi-page TIFF (SerialEM/EPU: uint8/uint16/float32, LZW/deflate/none), one page per frame.

    Rows are reversed on read (see the module note): ``frame(i) == page[i][::-1]``.
    """

    format = "tiff"

    def __init__(self, path: Path):
        import tifffile

        self.path = path
        try:
            self._tif = tifffile.TiffFile(path)
            first = self._tif.pages.first
        except Exception as exc:
            raise TiltflowError(f"not a readable TIFF file ({_short(exc)})", path) from exc
        try:
            self.n_frames = count_tiff_pages(self._tif, path)
        except TiltflowError:
            self._tif.close()
            raise
        if len(first.shape) != 2:
            self._tif.close()
            raise TiltflowError(
                f"TIFF pages must be 2-D single-channel images, page 0 is {first.shape}", path
            )
        self.shape = (int(first.shape[0]), int(first.shape[1]))
        self.dtype = np.dtype(first.dtype)
        self.pixel_size = None

    def _frame(self, i: int) -> np.ndarray:
        try:
            arr = self._tif.pages[i].asarray()
        except Exception as exc:
            raise TiltflowError(
                f"cannot read frame {i} of the TIFF movie (truncated?): {_short(exc)}", self.path
            ) from exc
        if arr.shape != self.shape:
            raise TiltflowError(f"TIFF page {i} is {arr.shape}, page 0 is {self.shape}", self.path)
        return tiff_rows(arr)

    def close(self) -> None:
        """Close the TIFF file."""
        self._tif.close()


class MrcMovie(Movie):
    """MRC frame stack (modes 0, 1, 2, 6, 12 and SerialEM's 4-bit 101), one section per frame."""

    format = "mrc"

    def __init__(self, path: Path):
        from tiltflow.io.mrc import MrcReader

        self.path = path
        self._reader = MrcReader(path)
        h = self._reader.header
        if h.mode == 4:
            self._reader.close()
            raise TiltflowError("MRC mode 4 (complex) is not a movie", path)
        present = h.n_sections_present
        if present < h.nz:
            self._reader.close()
            raise TiltflowError(
                f"truncated MRC movie: header says {h.nz} frames of {h.nx}x{h.ny}, file holds {present}", path
            )
        self.n_frames = h.nz
        self.shape = (h.ny, h.nx)
        self.dtype = h.dtype
        self.pixel_size = h.pixel_size or None
        self.mode = h.mode

    def _frame(self, i: int) -> np.ndarray:
        return self._reader.section(i)

    def close(self) -> None:
        """Close the MRC file."""
        self._reader.close()


def tiff_rows(page: np.ndarray) -> np.ndarray:
    """TIFF page(s) (rows as stored) <-> tiltflow's image(s) (rows reversed), both ways: its own inverse.

    The field's TIFF row order: MotionCor3 ``TiffUtil/CLoadTiffImage.cpp`` (strip i goes to rows
    ``ny-1-...``), IMOD ``libiimod/iitif.c``; writers reverse again so that IMOD reads back the same image.
    """
    return np.ascontiguousarray(page[..., ::-1, :])


def count_tiff_pages(tif, path: Path) -> int:
    """Number of pages, refusing a TIFF whose page chain or last page runs past the end of the file.

    tifffile only logs a broken page chain and returns the pages before it; a movie silently missing
    its last frames would give a wrong dose, so that is an error here. Movies are opened side by side
    in threads (tiltflow.parallel) and tifffile's logger is global: only this thread's records count.
    """
    import logging
    import threading

    records: list[logging.LogRecord] = []
    me = threading.get_ident()

    class _Grab(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.thread == me:
                records.append(record)

    tlog = logging.getLogger("tifffile")
    handler = _Grab(level=logging.ERROR)
    tlog.addHandler(handler)
    try:
        n = len(tif.pages)
    finally:
        tlog.removeHandler(handler)
    if records:
        raise TiltflowError(f"truncated or corrupt TIFF: the page chain breaks after {n} pages", path)
    last = tif.pages[n - 1]
    end = max((o + c for o, c in zip(last.dataoffsets, last.databytecounts, strict=False)), default=0)
    if end > tif.filehandle.size:
        raise TiltflowError(f"truncated TIFF: the data of page {n - 1} runs past the end of the file", path)
    return n


def detect_format(path: str | Path) -> str:
    """'tiff', 'mrc' or 'eer' from the suffix, else from the first bytes."""
    path = Path(path)
    sfx = path.suffix.lower()
    if sfx in EER_SUFFIXES:
        return "eer"
    if sfx in TIFF_SUFFIXES:
        return "tiff"
    if sfx in MRC_SUFFIXES:
        return "mrc"
    with open(path, "rb") as f:
        head = f.read(8)
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if head[:4] in (b"II+\x00", b"MM\x00+"):  # BigTIFF: EER movies are BigTIFF
        from tiltflow.io.eer import is_eer

        return "eer" if is_eer(path) else "tiff"
    from tiltflow.io.mrc import is_mrc

    if is_mrc(path):
        return "mrc"
    raise TiltflowError("unknown movie format (expected TIFF, MRC or EER)", path)


def open_movie(
    path: str | Path,
    *,
    eer_grouping: int | None = None,
    eer_dose_per_frame: float | None = None,
    eer_total_dose: float | None = None,
    eer_sampling: int = 1,
) -> Movie:
    """Open a movie for frame-by-frame reading; the format comes from the suffix (or the content).

    EER options (ignored for other formats): ``eer_grouping`` fractions per rendered frame, or
    ``eer_dose_per_frame`` (e/A^2 per rendered frame) with the fraction dose from ``eer_total_dose``
    (e/A^2 for the whole movie, e.g. the mdoc's ExposureDose) or from the EER header;
    ``eer_sampling`` 1 = 4k, 2 = 8k, 3 = 16k (as MotionCor's -EerSampling / RELION's --eer_upsampling).
    """
    path = Path(path)
    if not path.is_file():
        raise TiltflowError("movie not found", path)
    fmt = detect_format(path)
    if fmt == "tiff":
        import tifffile

        try:
            with tifffile.TiffFile(path) as tif:
                eer = tif.pages.first.compression in (65000, 65001, 65002)
        except Exception as exc:
            raise TiltflowError(f"not a readable TIFF file ({_short(exc)})", path) from exc
        if not eer:
            return TiffMovie(path)
        fmt = "eer"
    if fmt == "mrc":
        return MrcMovie(path)
    from tiltflow.io.eer import EerMovie

    return EerMovie(
        path,
        grouping=eer_grouping,
        dose_per_frame=eer_dose_per_frame,
        total_dose=eer_total_dose,
        sampling=eer_sampling,
    )


def movie_frame_shape(path: str | Path, **kwargs) -> tuple[int, int]:
    """(h, w) of one frame, reading only the header (for gain shape checks)."""
    with open_movie(path, **kwargs) as m:
        return m.shape


def _short(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200] or type(exc).__name__


__all__ = ["Movie", "MrcMovie", "TiffMovie", "detect_format", "movie_frame_shape", "open_movie", "tiff_rows"]
