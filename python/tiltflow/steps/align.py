"""``tiltflow align``: tilt-series alignment (built-in, AreTomo2 or AreTomo3), RELION 5 output.

Input: the stack step's STAR file (rows = sections of ``tfStack``, tilt-angle order). Outputs in
``<outdir>/<name>/``, whatever the backend:

- ``<name>.aln`` (AreTomo2 format: ROT, TX/TY in stack pixels, TILT, ``DarkFrame`` lines);
- ``<name>.xf`` / ``<name>.tlt`` (IMOD; kept tilts, the transforms RELION's IMOD reader inverts);
- ``<name>.star``: kept rows with ``rlnTomoXTilt/YTilt/ZRot/XShiftAngst/YShiftAngst`` in RELION 5's
  model (shifts in A of the bin-1 tilt series), ``tfAlignResidualPx``/``tfAlignScore`` when measured;
  globals ``tfAlignTiltOffset``, ``tfAlignTiltAxis``, ``tfAlignBackend``,
  ``rlnAreTomoTiltAxisScore`` (AreTomo). Dark/blank tilts are dropped as RELION drops AreTomo's dark
  frames (reasons in the log); ``tfStack`` then points to ``<name>.mrc`` here, the stack without those
  sections, so that rows stay the stack's sections for the reconstruct step.

Stack to bin-1 shifts: stackgeom.py (one rule for stack, align, reconstruct and the etomo dataset).
"""

from __future__ import annotations

import logging
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from tiltflow import stackgeom, star
from tiltflow.alignment import TiltSeriesAlignment
from tiltflow.columns import (
    TF_ALIGN_BACKEND,
    TF_ALIGN_RESIDUAL,
    TF_ALIGN_SCORE,
    TF_ALIGN_TILT_AXIS,
    TF_ALIGN_TILT_OFFSET,
    TF_STACK,
    TF_STACK_BINNING,
    TF_STACK_PIXEL_SIZE,
)
from tiltflow.errors import TiltflowError
from tiltflow.io.mrc import read_mrc_header
from tiltflow.steps.common import option

log = logging.getLogger("tiltflow.align")

BACKENDS = ("builtin", "aretomo2", "aretomo3")


@dataclass(frozen=True)
class Options:
    """The align step's options (``tiltflow align``)."""

    backend: str = option("builtin", "builtin, aretomo2 or aretomo3.")
    executable: str | None = option(None, "AreTomo2/3 executable (default: on PATH).")
    thickness: float = option(300.0, "Specimen thickness in nm (AlignZ).", "nm", min=1.0)
    tilt_axis: float | None = option(None, "Starting tilt-axis angle (deg); default: the mdoc's.", "deg")
    refine_axis: bool = option(True, "Refine the tilt-axis angle.")
    dark_tol: float = option(0.7, "AreTomo's DarkTol (<=0 or >=1: keep dark tilts).")
    bin: float | None = option(None, "Binning of the stack for the final refinement (AreTomo: -OutBin).")
    patches: tuple[int, int] | None = option(None, "Local alignment patches X Y (AreTomo).")
    gpu: str = option("0", "GPU ids for AreTomo, e.g. '0 1'.")
    device: str = option("auto", "auto, cpu, cuda or cuda:N (builtin).")
    extra_args: str = option("", "Passed verbatim to AreTomo.")

    def validate(self) -> None:
        """Reject an unknown backend and impossible sizes before the stack is read."""
        if self.backend not in BACKENDS:
            raise TiltflowError(f"--backend: unknown align backend '{self.backend}' (choose {', '.join(BACKENDS)})")
        if self.thickness <= 0:
            raise TiltflowError("--thickness must be positive")
        if self.bin is not None and self.bin < 1:
            raise TiltflowError("--bin must be at least 1")
        if self.patches is not None and min(self.patches) < 1:
            raise TiltflowError(f"--patches must be at least 1 in x and y, got {self.patches}")


def run_series(ts: star.TiltSeriesStar, out_dir: Path, opts: Options, root: str | Path) -> star.TiltSeriesStar:
    """Align ``ts``, write ``.aln``/``.xf``/``.tlt`` (and a reduced stack if tilts were dropped) into ``out_dir``."""
    root = Path(root)
    where = ts.globals.get(star.TS_STAR_FILE)
    if not ts.globals.get(TF_STACK):
        raise TiltflowError(f"tilt series {ts.name} has no tfStack (run tiltflow stack first)", where)
    if star.NOMINAL_TILT not in ts.tilts:
        raise TiltflowError(f"tilt series {ts.name} has no {star.NOMINAL_TILT} column", where)
    stack_path = star.resolve(ts.globals[TF_STACK], root)
    nz, ny, nx, header_px = _stack_shape(ts.name, stack_path)
    if nz != len(ts.tilts):
        raise TiltflowError(f"tilt series {ts.name}: the stack has {nz} sections but the STAR table has "
                            f"{len(ts.tilts)} rows", stack_path)
    ts_px = ts.pixel_size
    b = int(ts.globals.get(TF_STACK_BINNING) or 1)
    stack_px = float(ts.globals.get(TF_STACK_PIXEL_SIZE) or header_px or ts_px * b)
    nominal = ts.tilts[star.NOMINAL_TILT].to_numpy(float)
    axis0 = _start_axis(ts, opts)
    out_dir.mkdir(parents=True, exist_ok=True)

    backend: AlignBackend = _BuiltinAligner(opts) if opts.backend == "builtin" else _AreTomoAligner(opts)
    log.info("tilt series %s: aligning with %s", ts.name, backend.describe())
    result = backend.process(ts, stack_path, out_dir, axis0, stack_px)
    alignment = result.alignment
    _check(ts.name, alignment, nz, stack_path)

    from tiltflow.io.aln import write_aln
    from tiltflow.io.imodfiles import alignment_to_xf, write_tilt_angles, write_xf

    aln_path = out_dir / f"{ts.name}.aln"
    if opts.backend == "builtin" or not aln_path.is_file():  # AreTomo's own .aln is kept as it wrote it
        write_aln(aln_path, alignment, (nx, ny, nz), stack_tilts=nominal)
    write_xf(out_dir / f"{ts.name}.xf", alignment_to_xf(alignment))
    write_tilt_angles(out_dir / f"{ts.name}.tlt", alignment.y_tilt)

    kept = np.array([i for i in range(nz) if i not in alignment.excluded], dtype=int)
    for i in sorted(alignment.excluded):
        log.info("tilt series %s: tilt %.1f dropped (tfExcludeReason: %s)", ts.name, nominal[i], alignment.excluded[i])
    bin1 = _to_bin1(alignment, ts, root, (nx, ny), b, ts_px)
    tilts = bin1.to_star_columns(ts.tilts.iloc[kept].reset_index(drop=True))
    if alignment.residual_px is not None:
        tilts[TF_ALIGN_RESIDUAL] = np.asarray(alignment.residual_px, float)
    if result.score is not None:
        tilts[TF_ALIGN_SCORE] = np.asarray(result.score, float)
    new = ts.copy()
    new.tilts = tilts
    new.globals[TF_ALIGN_TILT_OFFSET] = float(alignment.tilt_offset)
    new.globals[TF_ALIGN_TILT_AXIS] = float(np.median(alignment.z_rot))
    new.globals[TF_ALIGN_BACKEND] = opts.backend
    if alignment.axis_score is not None:
        new.globals[star.ARETOMO_AXIS_SCORE] = float(alignment.axis_score)
    if alignment.excluded:
        _write_reduced_stacks(ts, new, out_dir, kept, root)
    return new


def _stack_shape(name: str, path: Path) -> tuple[int, int, int, float]:
    if not path.is_file():
        raise TiltflowError(f"tilt series {name}: stack not found (run tiltflow stack first)", path)
    h = read_mrc_header(path, context=f"tilt series {name}: stack", complete=True)
    return h.nz, h.ny, h.nx, h.pixel_size


def _start_axis(ts: star.TiltSeriesStar, opts: Options) -> float:
    if opts.tilt_axis is not None:
        return float(opts.tilt_axis)
    if star.NOMINAL_AXIS in ts.tilts and ts.tilts[star.NOMINAL_AXIS].notna().any():
        return float(np.median(ts.tilts[star.NOMINAL_AXIS].to_numpy(float)))
    raise TiltflowError(f"tilt series {ts.name} has no {star.NOMINAL_AXIS}; pass --tilt-axis",
                        ts.globals.get(star.TS_STAR_FILE))


def _user_kept(ts: star.TiltSeriesStar) -> tuple[int, ...]:
    """Rows (= stack sections) the user kept with --keep-tilts, from the exclusion's reasons."""
    from tiltflow.qc.exclusion import USER_KEEP

    reasons = ts.tilts.get(star.TF_EXCLUDE_REASON)
    if reasons is None:
        return ()
    return tuple(i for i, r in enumerate(reasons.astype(str)) if r.startswith(USER_KEEP))


@dataclass(frozen=True)
class AlignResult:
    """What an aligner found: the alignment (stack pixels, stack order) and a per-kept-tilt score if it has one."""

    alignment: TiltSeriesAlignment
    score: np.ndarray | None = None  # tfAlignScore (built-in: each tilt's correlation with its reference)


class AlignBackend(Protocol):
    """One way of aligning a stacked tilt series (built-in, AreTomo2/3)."""

    def describe(self) -> str:
        """What runs, for the step's log."""
        ...

    def process(self, ts: star.TiltSeriesStar, stack_path: Path, out_dir: Path, axis0: float,
                stack_px: float) -> AlignResult:
        """Align the stack at ``stack_path`` (rows of ``ts`` = its sections) starting from the axis ``axis0``."""
        ...


class _BuiltinAligner:
    """tiltflow's own aligner (:mod:`tiltflow.align`)."""

    def __init__(self, opts: Options):
        self.opts = opts

    def describe(self) -> str:
        return f"the built-in aligner (device {self.opts.device})"

    def process(self, ts, stack_path, out_dir, axis0, stack_px) -> AlignResult:
        from tiltflow.align.pipeline import BuiltinOptions, align_stack
        from tiltflow.io.mrc import MrcReader, MrcSections, read_mrc

        opts = self.opts
        if opts.extra_args.strip():
            log.warning("tilt series %s: --extra-args is ignored by the builtin backend", ts.name)
        bo = BuiltinOptions(thickness_px=opts.thickness * 10.0 / stack_px, refine_axis=opts.refine_axis,
                            dark_tol=opts.dark_tol, bin=opts.bin, device=opts.device, user_kept=_user_kept(ts))
        nominal = ts.tilts[star.NOMINAL_TILT].to_numpy(float)
        with MrcReader(stack_path) as reader:  # one tilt in memory at a time; a stack with permuted axes is read whole
            stack = MrcSections(reader) if reader.header.mapcrs == (1, 2, 3) else read_mrc(stack_path)[0]
            alignment, report = align_stack(stack, nominal, axis0, stack_px, bo, name=ts.name)
        return AlignResult(alignment, report.score)


class _AreTomoAligner:
    """AreTomo2 or AreTomo3 (:mod:`tiltflow.backends.aretomo`), alignment only."""

    def __init__(self, opts: Options):
        self.opts = opts

    def describe(self) -> str:
        from tiltflow.backends.tools import TOOLS

        return f"{TOOLS[self.opts.backend].name} (alignment only)"

    def process(self, ts, stack_path, out_dir, axis0, stack_px) -> AlignResult:
        from tiltflow.backends.aretomo import AreTomoOptions, align_with_aretomo

        opts = self.opts
        ao = AreTomoOptions(flavour=opts.backend, executable=opts.executable, thickness_nm=opts.thickness,
                            tilt_axis=axis0, refine_axis=opts.refine_axis, dark_tol=opts.dark_tol,
                            out_bin=int(opts.bin or 1), patches=opts.patches, gpu=opts.gpu,
                            extra_args=" ".join(shlex.split(opts.extra_args)))
        return AlignResult(align_with_aretomo(stack_path, ts.tilts, out_dir, ao, name=ts.name, pixel_size=stack_px))


def _check(name: str, a: TiltSeriesAlignment, nz: int, where) -> None:
    """The alignment must cover exactly the stack's sections with finite numbers."""
    n_kept = nz - len(a.excluded)
    if len(a.y_tilt) != n_kept or any(not 0 <= i < nz for i in a.excluded):
        raise TiltflowError(f"tilt series {name}: the alignment has {len(a.y_tilt)} tilts + {len(a.excluded)} "
                            f"excluded but the stack has {nz} sections", where)
    for arr in (a.y_tilt, a.z_rot, a.shifts_px):
        if not np.all(np.isfinite(arr)):
            raise TiltflowError(f"tilt series {name}: the alignment has non-finite values", where)
    if n_kept < 5:
        raise TiltflowError(f"tilt series {name}: only {n_kept} usable tilts; at least 5 are needed", where)



def _to_bin1(a: TiltSeriesAlignment, ts, root: Path, ns: tuple[int, int], b: int, ts_px: float) -> TiltSeriesAlignment:
    """The alignment with shifts in bin-1 pixels about RELION's centre (see the module docstring)."""
    shifts = stackgeom.shifts_to_bin1(a.shifts_px, stackgeom.bin1_image_size(ts, root, ns, b), ns, b)
    return TiltSeriesAlignment(
        y_tilt=a.y_tilt, z_rot=a.z_rot, shifts_px=shifts, pixel_size=ts_px,
        x_tilt=a.x_tilt, residual_px=a.residual_px, excluded=dict(a.excluded), tilt_offset=a.tilt_offset,
        axis_score=a.axis_score,
    )


def _write_reduced_stacks(ts, new, out_dir: Path, kept: np.ndarray, root: Path) -> None:
    """Stacks without the dropped sections, so that the rows stay the sections of ``tfStack``."""
    import mrcfile

    from tiltflow.io.mrc import write_mrc

    for key, suffix in stackgeom.STACK_FILES:
        src = ts.globals.get(key)
        if not src:
            continue
        with mrcfile.mmap(star.resolve(src, root), mode="r", permissive=True) as mrc:
            data = np.asarray(mrc.data[kept])
            px = float(mrc.voxel_size.x)
        target = out_dir / f"{ts.name}{suffix}.mrc"
        write_mrc(target, data, px)
        new.globals[key] = star.relative_to_root(target, root)

