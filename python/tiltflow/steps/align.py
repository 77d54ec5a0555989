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

Stack to bin-1 shifts: stack pixel j of a stack binned by b covers bin-1 pixels from o + j*b
(o = (N % b) // 2), so a shift s in stack pixels about the stack centre ``n // 2`` is
``s*b + (o + (n//2)*b + (b-1)/2 - N//2)`` bin-1 pixels about RELION's centre ``N // 2``.
"""

from __future__ import annotations

import logging
import shlex
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tiltflow import star
from tiltflow.alignment import TiltSeriesAlignment
from tiltflow.errors import TiltflowError
from tiltflow.io.mrc import read_mrc_header
from tiltflow.steps.common import execute_series_step

log = logging.getLogger("tiltflow.align")

BACKENDS = ("builtin", "aretomo2", "aretomo3")
TF_STACK = "tfStack"
TF_STACK_EVEN = "tfStackEven"
TF_STACK_ODD = "tfStackOdd"
TF_STACK_BINNING = "tfStackBinning"
TF_STACK_PIXEL_SIZE = "tfStackPixelSize"
TF_RESIDUAL = "tfAlignResidualPx"
TF_SCORE = "tfAlignScore"
TF_TILT_OFFSET = "tfAlignTiltOffset"
TF_TILT_AXIS = "tfAlignTiltAxis"
TF_BACKEND = "tfAlignBackend"


@dataclass
class AlignOptions:
    """The align step's options (CLI: ``tiltflow align``)."""

    backend: str = "builtin"
    executable: str | None = None
    thickness_nm: float = 300.0
    tilt_axis: float | None = None  # override of rlnTomoNominalTiltAxisAngle
    refine_axis: bool = True
    dark_tol: float = 0.7
    bin: float | None = None  # builtin: fine-level binning of the stack; AreTomo: -OutBin/-AtBin
    patches: tuple[int, int] | None = None
    gpu: str = "0"
    device: str = "auto"
    extra_args: str = ""


def run(in_star: str | Path, outdir: str | Path, options: AlignOptions | None = None) -> Path:
    """Align the series in ``in_star``; returns ``<outdir>/<name>/<name>.star``."""
    opts = options or AlignOptions()
    if opts.backend not in BACKENDS:
        raise TiltflowError(f"unknown align backend '{opts.backend}' (choose {', '.join(BACKENDS)})")
    if opts.thickness_nm <= 0:
        raise TiltflowError("--thickness must be positive")
    if opts.bin is not None and opts.bin < 1:
        raise TiltflowError("--bin must be at least 1")
    return execute_series_step("align", in_star, outdir, lambda ts, out: align_series(ts, out, opts))


def run_from_star(in_star: str | Path, outdir: str | Path, options: AlignOptions | None = None) -> Path:
    """Alias of :func:`run` for the local runner."""
    return run(in_star, outdir, options)


def align_series(ts: star.TiltSeriesStar, out_dir: Path, opts: AlignOptions, root: str | Path = ".") -> star.TiltSeriesStar:
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

    if opts.backend == "builtin":
        alignment, extras = _align_builtin(ts.name, stack_path, nominal, axis0, stack_px, opts, _user_kept(ts))
    else:
        alignment, extras = _align_aretomo(ts, stack_path, out_dir, axis0, stack_px, opts)
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
        tilts[TF_RESIDUAL] = np.asarray(alignment.residual_px, float)
    if extras.get("score") is not None:
        tilts[TF_SCORE] = np.asarray(extras["score"], float)
    new = ts.copy()
    new.tilts = tilts
    new.globals[TF_TILT_OFFSET] = float(alignment.tilt_offset)
    new.globals[TF_TILT_AXIS] = float(np.median(alignment.z_rot))
    new.globals[TF_BACKEND] = opts.backend
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


def _start_axis(ts: star.TiltSeriesStar, opts: AlignOptions) -> float:
    if opts.tilt_axis is not None:
        return float(opts.tilt_axis)
    if star.NOMINAL_AXIS in ts.tilts and ts.tilts[star.NOMINAL_AXIS].notna().any():
        return float(np.median(ts.tilts[star.NOMINAL_AXIS].to_numpy(float)))
    raise TiltflowError(f"tilt series {ts.name} has no {star.NOMINAL_AXIS}; pass --tilt-axis",
                        ts.globals.get(star.TS_STAR_FILE))


def _user_kept(ts: star.TiltSeriesStar) -> tuple[int, ...]:
    """Rows (= stack sections) the user kept with --keep-tilts, from the exclusion's reasons."""
    from tiltflow.qc.exclusion import USER_KEEP

    reasons = ts.tilts.get("tfExcludeReason")
    if reasons is None:
        return ()
    return tuple(i for i, r in enumerate(reasons.astype(str)) if r.startswith(USER_KEEP))


def _align_builtin(name, stack_path, nominal, axis0, stack_px, opts, user_kept=()):
    from tiltflow.align.pipeline import BuiltinOptions, align_stack
    from tiltflow.io.mrc import MrcReader, MrcSections, read_mrc

    if opts.extra_args.strip():
        log.warning("tilt series %s: --extra-args is ignored by the builtin backend", name)
    bo = BuiltinOptions(thickness_px=opts.thickness_nm * 10.0 / stack_px, refine_axis=opts.refine_axis,
                        dark_tol=opts.dark_tol, bin=opts.bin, device=opts.device, user_kept=tuple(user_kept))
    with MrcReader(stack_path) as reader:  # one tilt in memory at a time; a stack with permuted axes is read whole
        stack = MrcSections(reader) if reader.header.mapcrs == (1, 2, 3) else read_mrc(stack_path)[0]
        alignment, report = align_stack(stack, nominal, axis0, stack_px, bo, name=name)
    return alignment, {"score": report.score, "report": report}


def _align_aretomo(ts, stack_path, out_dir, axis0, stack_px, opts):
    from tiltflow.backends.aretomo import AreTomoOptions, align_with_aretomo

    ao = AreTomoOptions(flavour=opts.backend, executable=opts.executable, thickness_nm=opts.thickness_nm,
                        tilt_axis=axis0, refine_axis=opts.refine_axis, dark_tol=opts.dark_tol,
                        out_bin=int(opts.bin or 1), patches=opts.patches, gpu=opts.gpu,
                        extra_args=" ".join(shlex.split(opts.extra_args)))
    alignment = align_with_aretomo(stack_path, ts.tilts, out_dir, ao, name=ts.name, pixel_size=stack_px)
    return alignment, {}


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


def _bin1_size(ts: star.TiltSeriesStar, root: Path, ns: tuple[int, int], b: int) -> tuple[int, int]:
    """Bin-1 micrograph size (x, y): a micrograph's header when it matches, else stack size x binning."""
    if b > 1 and star.MICROGRAPH in ts.tilts and len(ts.tilts):
        p = star.resolve(str(ts.tilts[star.MICROGRAPH].iloc[0]), root)
        if p.is_file():
            import mrcfile

            try:
                with mrcfile.mmap(p, mode="r", permissive=True) as mrc:
                    ny, nx = mrc.data.shape[-2:]
                if nx // b == ns[0] and ny // b == ns[1]:
                    return int(nx), int(ny)
            except Exception:  # fall back to the stack's size
                pass
    return ns[0] * b, ns[1] * b


def stack_to_bin1_offset(n1: tuple[int, int], ns: tuple[int, int], b: int) -> np.ndarray:
    """(x, y) bin-1 pixels to add to ``shift * b`` (stack pixels about ``ns // 2``): see the module docstring."""
    return np.array([(n1[k] % b) // 2 + (ns[k] // 2) * b + (b - 1) / 2 - n1[k] // 2 for k in (0, 1)], float)


def _to_bin1(a: TiltSeriesAlignment, ts, root: Path, ns: tuple[int, int], b: int, ts_px: float) -> TiltSeriesAlignment:
    """The alignment with shifts in bin-1 pixels about RELION's centre (see the module docstring)."""
    corr = stack_to_bin1_offset(_bin1_size(ts, root, ns, b), ns, b)
    return TiltSeriesAlignment(
        y_tilt=a.y_tilt, z_rot=a.z_rot, shifts_px=a.shifts_px * b + corr[None, :], pixel_size=ts_px,
        x_tilt=a.x_tilt, residual_px=a.residual_px, excluded=dict(a.excluded), tilt_offset=a.tilt_offset,
        axis_score=a.axis_score,
    )


def _write_reduced_stacks(ts, new, out_dir: Path, kept: np.ndarray, root: Path) -> None:
    """Stacks without the dropped sections, so that the rows stay the sections of ``tfStack``."""
    import mrcfile

    from tiltflow.io.mrc import write_mrc

    for key, suffix in ((TF_STACK, ""), (TF_STACK_EVEN, "_EVN"), (TF_STACK_ODD, "_ODD")):
        src = ts.globals.get(key)
        if not src:
            continue
        with mrcfile.mmap(star.resolve(src, root), mode="r", permissive=True) as mrc:
            data = np.asarray(mrc.data[kept])
            px = float(mrc.voxel_size.x)
        target = out_dir / f"{ts.name}{suffix}.mrc"
        write_mrc(target, data, px)
        new.globals[key] = _rel(target, root)


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)
