"""``tiltflow stack``: one MRC stack per tilt series, ordered by tilt angle, excluded tilts left out.

Outputs in ``<outdir>/<name>/`` (what IMOD, AreTomo and RELION users expect to find):

- ``<name>.mrc`` (+ ``<name>_EVN.mrc``/``<name>_ODD.mrc`` when every tilt has even/odd sums);
- ``<name>.rawtlt`` (nominal angles) and ``<name>.tlt`` (refined angles when known, else nominal);
- ``<name>.mdoc``: one ``[ZValue]`` per image with angle, dose, pre-exposure and source micrograph;
- ``<name>.filelist``: IMOD's file of inputs (paths relative to that folder), so ``newstack`` rebuilds it;
- ``<name>.star``: rows sorted by tilt angle (row i = section i), excluded rows dropped as RELION's
  ExcludeTiltImages does; globals ``tfStack``/``tfStackEven``/``tfStackOdd``/``tfStackBinning``/
  ``tfStackPixelSize``. ``rlnTomoTiltSeriesPixelSize`` stays the unbinned micrograph pixel.

Binning averages ``N x N`` pixel blocks (newstack ``-bin``); when the size is not a multiple of N the
central part is used. Images are streamed one at a time into a memory-mapped temporary file.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tiltflow import stackgeom, star
from tiltflow.atomic import atomic_fresh_path, atomic_path
from tiltflow.columns import (
    TF_DOSE,
    TF_EXCLUDE_REASON,
    TF_EXCLUDED,
)
from tiltflow.errors import TiltflowError
from tiltflow.io.mrc import SectionStats, read_mrc_header
from tiltflow.steps.common import option

log = logging.getLogger("tiltflow.stack")

BACKENDS = ("builtin", "imod")


@dataclass(frozen=True)
class Options:
    """How to build the stack (``tiltflow stack``); ``min_tilts`` guards against aligning a handful of images."""

    backend: str = option("builtin", "builtin or imod (IMOD's newstack).")
    executable: str | None = option(None, "newstack program for --backend imod.")
    bin: int = option(1, "Average-bin N x N pixels, as newstack -bin.", min=1)
    min_tilts: int = option(5, "Refuse series with fewer usable tilts.", min=1)

    def validate(self) -> None:
        """Reject an unknown backend and impossible binning before any image is read."""
        if self.backend not in BACKENDS:
            raise TiltflowError(f"--backend: unknown stack backend '{self.backend}' (choose {', '.join(BACKENDS)})")
        if self.bin < 1:
            raise TiltflowError(f"--bin must be a positive integer, got {self.bin}")
        if self.min_tilts < 1:
            raise TiltflowError(f"--min-tilts must be at least 1, got {self.min_tilts}")


@dataclass
class _Image:
    path: Path
    shape: tuple[int, int]  # (ny, nx)
    dtype: np.dtype


def run_series(ts: star.TiltSeriesStar, out_dir: Path, opts: Options, root: str | Path) -> star.TiltSeriesStar:
    """Write the stack files of ``ts`` into ``out_dir``; return the series with sorted, kept rows."""
    root = Path(root)
    tilts = _kept_sorted(ts, opts.min_tilts)
    images = _inspect_images(ts.name, tilts, star.MICROGRAPH, root)
    halves = _halves(ts.name, tilts, root)
    ps = ts.pixel_size
    b = int(opts.bin)
    name = ts.name
    out_dir.mkdir(parents=True, exist_ok=True)

    stack_paths = {suffix: out_dir / f"{name}{suffix}.mrc" for _, suffix in stackgeom.STACK_FILES if halves or not suffix}
    column = {"": star.MICROGRAPH, "_EVN": star.MICROGRAPH_EVEN, "_ODD": star.MICROGRAPH_ODD}
    axis = _nominal_axis(tilts)

    filelist = out_dir / f"{name}.filelist"
    _write_filelist(filelist, [im.path for im in images], out_dir)
    for suffix, target in stack_paths.items():
        ims = images if suffix == "" else halves[suffix]
        if opts.backend == "imod":
            lst = filelist if suffix == "" else out_dir / f"{name}{suffix}.filelist"
            if suffix:
                _write_filelist(lst, [im.path for im in ims], out_dir)
            _stack_with_newstack(opts.executable, lst, target, ims, b, ps, axis)
        else:
            _stack_builtin(ims, target, b, ps, axis)
        log.info("wrote %s: %d images from %s, bin %d, %.3f A/px", target, len(ims), column[suffix], b, ps * b)

    from tiltflow.io.imodfiles import write_tilt_angles

    nominal = tilts[star.NOMINAL_TILT].to_numpy(float)
    refined = tilts[star.Y_TILT].to_numpy(float) if star.Y_TILT in tilts else nominal
    write_tilt_angles(out_dir / f"{name}.rawtlt", nominal)
    write_tilt_angles(out_dir / f"{name}.tlt", refined)
    _write_stack_mdoc(out_dir / f"{name}.mdoc", name, tilts, images[0].shape, b, ps, axis)

    new = star.TiltSeriesStar(name, dict(ts.globals), tilts)
    stackgeom.record_stacks(new.globals, stack_paths, b, ps * b, root)
    return new


# --- table ---------------------------------------------------------------------------------------
def _kept_sorted(ts: star.TiltSeriesStar, min_tilts: int) -> pd.DataFrame:
    tilts = ts.tilts
    for col in (star.MICROGRAPH, star.NOMINAL_TILT):
        if col not in tilts:
            raise TiltflowError(f"tilt series {ts.name} has no {col} column (run motioncor first)",
                                ts.globals.get(star.TS_STAR_FILE))
    excluded = _excluded_mask(tilts)
    for _, row in tilts[excluded].iterrows():
        reason = row.get(TF_EXCLUDE_REASON, "") if TF_EXCLUDE_REASON in tilts else ""
        log.info("left out %s (tilt %.2f): %s", row[star.MICROGRAPH], float(row[star.NOMINAL_TILT]),
                 reason if isinstance(reason, str) and reason else "excluded")
    kept = tilts[~excluded]
    if len(kept) < min_tilts:
        raise TiltflowError(
            f"tilt series {ts.name} has {len(kept)} usable tilts of {len(tilts)} after exclusion; "
            f"at least {min_tilts} are needed for a stack", ts.globals.get(star.TS_STAR_FILE))
    angles = kept[star.NOMINAL_TILT].to_numpy(float)
    if len(np.unique(np.round(angles, 3))) != len(angles):
        log.warning("tilt series %s has repeated tilt angles; keeping acquisition order among them", ts.name)
    return kept.iloc[np.argsort(angles, kind="stable")].reset_index(drop=True)


def _excluded_mask(tilts: pd.DataFrame) -> np.ndarray:
    if TF_EXCLUDED not in tilts:
        return np.zeros(len(tilts), dtype=bool)

    def truthy(v: object) -> bool:
        if isinstance(v, str):
            return v.strip().lower() in ("1", "true", "yes", "y")
        try:
            return bool(v) and not pd.isna(v)
        except (TypeError, ValueError):
            return False

    return np.array([truthy(v) for v in tilts[TF_EXCLUDED]], dtype=bool)


def _nominal_axis(tilts: pd.DataFrame) -> float | None:
    if star.NOMINAL_AXIS in tilts:
        vals = pd.to_numeric(tilts[star.NOMINAL_AXIS], errors="coerce").dropna()
        if len(vals):
            return float(vals.iloc[0])
    return None




# --- images --------------------------------------------------------------------------------------
def _inspect_images(name: str, tilts: pd.DataFrame, column: str, root: Path) -> list[_Image]:
    """Header of every micrograph: exists, 2-D, and all of one shape (else a one-line error)."""
    out: list[_Image] = []
    for ref in tilts[column]:
        p = star.resolve(str(ref), root)
        if not p.is_file():
            raise TiltflowError(f"tilt series {name}: micrograph not found", p)
        h = read_mrc_header(p, context=f"tilt series {name}: micrograph", complete=True)
        shape, dtype = ((h.nz, h.ny, h.nx) if h.nz > 1 else (h.ny, h.nx)), h.dtype
        if len(shape) == 3 and shape[0] == 1:
            shape = shape[1:]
        if len(shape) != 2:
            raise TiltflowError(f"tilt series {name}: expected a single image, found shape {shape}", p)
        im = _Image(p, (int(shape[0]), int(shape[1])), np.dtype(dtype))
        if out and im.shape != out[0].shape:
            raise TiltflowError(
                f"tilt series {name}: image is {im.shape[1]}x{im.shape[0]} but {out[0].path.name} is "
                f"{out[0].shape[1]}x{out[0].shape[0]}", p)
        out.append(im)
    return out


def _halves(name: str, tilts: pd.DataFrame, root: Path) -> dict[str, list[_Image]]:
    """Even/odd images when every kept tilt has both; otherwise none (with a warning if partial)."""
    if star.MICROGRAPH_EVEN not in tilts or star.MICROGRAPH_ODD not in tilts:
        return {}
    cols = tilts[[star.MICROGRAPH_EVEN, star.MICROGRAPH_ODD]]
    if cols.isna().any().any() or (cols.astype(str).apply(lambda s: s.str.strip()) == "").any().any():
        log.warning("tilt series %s: some tilts lack even/odd sums; no _EVN/_ODD stacks", name)
        return {}
    even = _inspect_images(name, tilts, star.MICROGRAPH_EVEN, root)
    odd = _inspect_images(name, tilts, star.MICROGRAPH_ODD, root)
    return {"_EVN": even, "_ODD": odd}


def bin_image(img: np.ndarray, b: int) -> np.ndarray:
    """Average ``b x b`` blocks of the central ``(ny // b * b, nx // b * b)`` region (float32)."""
    img = np.asarray(img, dtype=np.float32)
    if b == 1:
        return img
    ny, nx = img.shape
    oy, ox = stackgeom.crop_origin(ny, b), stackgeom.crop_origin(nx, b)
    my, mx = ny // b, nx // b
    crop = img[oy:oy + my * b, ox:ox + mx * b]
    return crop.reshape(my, b, mx, b).mean(axis=(1, 3), dtype=np.float64).astype(np.float32)


def _out_dtype(images: list[_Image]) -> np.dtype:
    dt = images[0].dtype
    return np.dtype(np.float16) if dt == np.float16 and all(i.dtype == dt for i in images) else np.dtype(np.float32)


def _stack_builtin(images: list[_Image], target: Path, b: int, ps: float, axis: float | None) -> None:
    import mrcfile

    ny, nx = images[0].shape
    shape = (len(images), ny // b, nx // b)
    dtype = _out_dtype(images)
    mode = 12 if dtype == np.float16 else 2
    with atomic_path(target) as tmp:
        with mrcfile.new_mmap(tmp, shape=shape, mrc_mode=mode, overwrite=True) as out:
            out.set_image_stack()
            stats = SectionStats()
            # sections go in with write(), not through the memory map: written map pages stay in this
            # process's resident memory until close, the whole stack for a 4k series
            with open(tmp, "r+b") as fh:
                fh.seek(_data_offset(out))
                for im in images:
                    with mrcfile.mmap(im.path, mode="r", permissive=True) as src:
                        section = bin_image(src.data.reshape(im.shape), b).astype(dtype, copy=False)
                    fh.write(np.ascontiguousarray(section, dtype=out.data.dtype).data)
                    stats.add(section)
            _finish_header(out, ps * b, axis, b, stats)


def _data_offset(mrc) -> int:
    """Byte offset of the first voxel: the 1024-byte header plus the extended header."""
    return int(mrc.header.nbytes + mrc.extended_header.nbytes)


def _section_stats(path: Path, mrc) -> SectionStats:
    """Statistics of a written stack read back one section at a time with read() (no whole-stack copy)."""
    nz, ny, nx = (mrc.data.shape if mrc.data.ndim == 3 else (1, *mrc.data.shape))
    dtype = mrc.data.dtype
    stats = SectionStats()
    with open(path, "rb") as fh:
        fh.seek(_data_offset(mrc))
        for _ in range(nz):
            stats.add(np.fromfile(fh, dtype=dtype, count=ny * nx))
    return stats


def _finish_header(mrc, pixel_size: float, axis: float | None, b: int, stats: SectionStats) -> None:
    """Pixel size, statistics and IMOD's title line (``alterheader -ti`` form) for the tilt axis."""
    mrc.voxel_size = float(pixel_size)
    stats.write_to(mrc.header, "stack")
    if axis is not None:
        mrc.add_label(f"Tilt axis angle = {axis:.2f}, binning = {b}")
    mrc.add_label("tiltflow stack")


def _stack_with_newstack(executable: str | None, filelist: Path, target: Path, images: list[_Image],
                         b: int, ps: float, axis: float | None) -> None:
    import mrcfile

    from tiltflow.backends.imod import run_newstack
    from tiltflow.backends.toolrun import find_executable
    from tiltflow.backends.tools import TOOLS

    exe = str(find_executable(TOOLS["imod"], executable))
    out_dir = target.parent
    # newstack must not find its output already there: it would keep the old one as "name~"
    with atomic_fresh_path(target) as tmp:
        run_newstack(exe, filelist.name, tmp.relative_to(out_dir), out_dir / f"{target.stem}_newstack.log",
                     binning=b, cwd=out_dir, label=f"tilt series {target.stem}")
        ny, nx = images[0].shape
        expected = (len(images), ny // b, nx // b)
        with mrcfile.mmap(tmp, mode="r+", permissive=True) as mrc:
            got = tuple(int(v) for v in mrc.data.shape) if mrc.data is not None else None
            if got is None or (got != expected and not (len(images) == 1 and got == expected[1:])):
                raise TiltflowError(f"newstack wrote a stack of shape {got}, expected {expected}", target)
            mrc.set_image_stack()
            _finish_header(mrc, ps * b, axis, b, _section_stats(tmp, mrc))


def _write_filelist(path: Path, images: list[Path], out_dir: Path) -> None:
    from tiltflow.io.imodfiles import write_file_of_inputs

    write_file_of_inputs(path, [os.path.relpath(p.resolve(), out_dir.resolve()) for p in images])  # IMOD: beside the list




# --- mdoc ----------------------------------------------------------------------------------------
def _write_stack_mdoc(path: Path, name: str, tilts: pd.DataFrame, shape: tuple[int, int], b: int, ps: float,
                      axis: float | None) -> None:
    """An mdoc in SerialEM's layout for the stack, so IMOD/AreTomo3/Warp users can read it."""
    from tiltflow.metadata.mdoc import write_mdoc

    ny, nx = shape
    global_keys = {"PixelSpacing": round(ps * b, 6), "ImageFile": f"{name}.mrc", "ImageSize": [nx // b, ny // b],
                   "DataMode": 2}
    from tiltflow.metadata.discover import STACK_MDOC_TITLE

    titles = [STACK_MDOC_TITLE]
    if axis is not None:
        titles.append(f"    Tilt axis angle = {axis:.2f}, binning = {b}")
    sections = []
    for i, (_, row) in enumerate(tilts.iterrows()):
        keys: dict[str, object] = {"TiltAngle": float(row[star.NOMINAL_TILT])}
        dose = _cell(row, TF_DOSE)
        if dose is not None:
            keys["ExposureDose"] = float(dose)
        pre = _cell(row, star.PRE_EXPOSURE)
        if pre is not None:
            keys["PriorRecordDose"] = float(pre)
        keys["PixelSpacing"] = round(ps * b, 6)
        defocus = _cell(row, star.NOMINAL_DEFOCUS)
        if defocus is not None:
            keys["TargetDefocus"] = float(defocus)
        movie = _cell(row, star.MOVIE)
        if movie is not None:
            keys["SubFramePath"] = str(movie)
        keys["MicrographName"] = str(row[star.MICROGRAPH])
        sections.append(("ZValue", i, keys))
    write_mdoc(path, global_keys, titles, sections)


def _cell(row: pd.Series, col: str) -> object | None:
    """A cell, or None when the column is absent or the value missing."""
    if col not in row.index:
        return None
    v = row[col]
    return None if v is None or (not isinstance(v, str) and pd.isna(v)) else v
