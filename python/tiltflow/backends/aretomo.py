"""AreTomo2 / AreTomo3 as tilt-series aligners (alignment only: the reconstruct step makes tomograms).

AreTomo2 (reference.md 3.5, RELION's ``align_tiltseries_runner``)::

    AreTomo2 -InMrc <stack> -OutMrc <name>_aretomo.mrc -AngFile <name>_aretomo.tlt -AlignZ <px> -VolZ 0
             -TiltAxis <nominal> <1|-1> -DarkTol 0.7 -OutBin 1 -OutImod 1 -PixSize -Kv -Cs [-ImgDose]
             [-Patch x y] -Gpu <ids> [extra args]

``-AngFile`` has two columns in stack order: tilt and acquisition order (1-based rank of the
pre-exposure); AreTomo2 writes ``<stack stem>.aln`` next to ``-OutMrc``. ``-ImgDose`` takes one value
(per-image, not cumulative): the median of ``tfDose``.

AreTomo3 (reference.md 3.6; ``CTsPackage::LoadTiltSeries``/``mLoadTiltFile`` at 8a068cf) has no
``-InMrc``/``-AngFile``: a stack is given as ``-InPrefix <dir>/<name>.mrc -InSuffix .mrc -Cmd 1`` and
its angles are read from ``<dir>/<name>_TLT.txt`` (tilt, 1-based acquisition index, per-image dose), so
the stack is linked into a work folder next to that file. It writes ``<OutDir>/<name>.aln`` with
1-based SEC (since 2.0.7) - :func:`tiltflow.io.aln.read_aln` detects the base. AreTomo3 clamps the
volume height to >= 100 px, so ``-VolZ 0`` still yields a thin (cheap) volume; it is discarded.

Everything AreTomo writes goes to a temporary work folder that is moved into place only after the
``.aln`` has been read and checked; the tool's output is kept in ``<name>_aretomo.log`` either way.
AlignZ is a thickness in *pixels of the aligned stack*: ``round(thickness_nm * 10 / pixel_size)``
(RELION's GUI asks for nm, AreTomo for px: 3dem/relion#1168).
"""

from __future__ import annotations

import logging
import re
import shlex
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tiltflow import star
from tiltflow.alignment import TiltSeriesAlignment
from tiltflow.columns import TF_DOSE
from tiltflow.errors import TiltflowError

log = logging.getLogger("tiltflow.aretomo")

FLAVOURS = ("aretomo2", "aretomo3")
_BEST_AXIS = re.compile(r"Best tilt axis:\s*(-?\d+)\s*,\s*Score:\s*(-?[\d.eE+-]+)")
_VERSION = re.compile(r"version\s+(\d+(?:\.\d+)*)", re.IGNORECASE)


@dataclass
class AreTomoOptions:
    """Options of the align step that AreTomo understands (defaults as RELION's GUI / AreTomo's code)."""

    flavour: str = "auto"  # aretomo2 | aretomo3 | auto (from --version)
    executable: str | None = None
    thickness_nm: float = 300.0  # -AlignZ, converted to pixels
    tilt_axis: float | None = None  # nominal axis (deg); None: rlnTomoNominalTiltAxisAngle
    refine_axis: bool = True
    dark_tol: float = 0.7
    vol_z: int = 0  # 0: alignment only
    out_bin: int = 1  # -OutBin (AreTomo2) / -AtBin (AreTomo3)
    patches: tuple[int, int] | None = None  # local alignment: -Patch / -AtPatch
    gpu: str = "0"
    kv: float = 300.0
    cs: float = 2.7
    tilt_cor: int = 0  # -TiltCor: 0 measure offset for alignment only, 1 also apply, -1 off
    extra_args: str = ""
    timeout: float | None = None


@dataclass(frozen=True)
class AreTomoVersion:
    """Which AreTomo answered, and its version when it says (AreTomo3 1.x does not always name itself)."""

    flavour: str  # aretomo2 | aretomo3
    version: str | None


# --- version ---------------------------------------------------------------------------------------
def parse_version(text: str) -> AreTomoVersion | None:
    """From ``--version`` output or a log banner. AreTomo2 names itself ("AreTomo2 version 1.1.3");
    AreTomo3 1.x prints only "version 1.0.16, built on ...", 2.x may name itself.
    """
    m = _VERSION.search(text)
    ver = m.group(1) if m else None
    if re.search(r"aretomo\s*3", text, re.IGNORECASE):
        return AreTomoVersion("aretomo3", ver)
    if re.search(r"aretomo\s*2|aretomo\s+version", text, re.IGNORECASE):
        return AreTomoVersion("aretomo2", ver)
    if m and re.search(r"built on", text, re.IGNORECASE):
        return AreTomoVersion("aretomo3", ver)
    return None


def detect_version(executable: str) -> AreTomoVersion | None:
    """Run ``<exe> --version`` once (cached by toolrun); None when the output says nothing recognisable."""
    from tiltflow.backends.toolrun import detect_version as probe
    from tiltflow.backends.tools import TOOLS

    text = probe(executable, TOOLS["aretomo2"])
    return parse_version(text) if text else None


def resolve_flavour(executable: str, requested: str) -> AreTomoVersion:
    """The flavour to drive: what ``--version`` reports wins over the request (with a warning)."""
    if requested not in (*FLAVOURS, "auto"):
        raise TiltflowError(f"unknown AreTomo flavour '{requested}' (choose aretomo2, aretomo3 or auto)")
    found = detect_version(executable)
    if found is None:
        if requested == "auto":
            name = Path(executable).name.lower()
            guess = "aretomo3" if "3" in name else "aretomo2" if "aretomo" in name else None
            if guess is None:
                raise TiltflowError(f"cannot tell AreTomo2 from AreTomo3 from '{executable} --version'; "
                                    "choose --backend aretomo2 or aretomo3")
            return AreTomoVersion(guess, None)
        return AreTomoVersion(requested, None)
    if requested != "auto" and requested != found.flavour:
        log.warning("%s reports %s %s; using its command line instead of %s", executable, found.flavour,
                    found.version or "", requested)
    return found


# --- inputs ------------------------------------------------------------------------------------------
def acquisition_order(pre_exposure: Sequence[float]) -> np.ndarray:
    """1-based rank of the pre-exposure of each tilt (stack order in, stack order out); ties keep order."""
    pre = np.asarray(pre_exposure, float)
    order = np.argsort(pre, kind="stable")
    rank = np.empty(len(pre), dtype=int)
    rank[order] = np.arange(1, len(pre) + 1)
    return rank


def per_tilt_dose(tilts: pd.DataFrame) -> np.ndarray | None:
    """e/A^2 of each image: ``tfDose``, else the pre-exposure steps, else None."""
    if TF_DOSE in tilts and pd.to_numeric(tilts[TF_DOSE], errors="coerce").notna().all():
        return pd.to_numeric(tilts[TF_DOSE]).to_numpy(float)
    if star.PRE_EXPOSURE in tilts and len(tilts) > 1:
        pre = tilts[star.PRE_EXPOSURE].to_numpy(float)
        order = np.argsort(pre, kind="stable")
        steps = np.diff(pre[order])
        if len(steps) and np.all(steps > 0):
            dose = np.empty(len(pre))
            dose[order] = np.append(steps, np.median(steps))
            return dose
    return None


def align_z_pixels(thickness_nm: float, pixel_size: float) -> int:
    """AreTomo's -AlignZ (pixels of the aligned stack) for a specimen thickness in nm."""
    if thickness_nm <= 0 or pixel_size <= 0:
        raise TiltflowError(f"--thickness {thickness_nm} nm and pixel size {pixel_size} A must be positive")
    return int(round(thickness_nm * 10.0 / pixel_size))


def _nominal_axis(tilts: pd.DataFrame, options: AreTomoOptions) -> float:
    if options.tilt_axis is not None:
        return float(options.tilt_axis)
    if star.NOMINAL_AXIS in tilts:
        vals = pd.to_numeric(tilts[star.NOMINAL_AXIS], errors="coerce").dropna()
        if len(vals):
            return float(vals.iloc[0])
    raise TiltflowError("no nominal tilt axis: give --tilt-axis DEG (or import with --tilt-axis)")


# --- commands ------------------------------------------------------------------------------------------
def _common_args(o: AreTomoOptions, align_z: int, axis: float, pixel_size: float) -> list[str]:
    args = ["-AlignZ", str(align_z), "-VolZ", str(int(o.vol_z)),
            "-TiltAxis", f"{axis:.2f}", "1" if o.refine_axis else "-1",
            "-TiltCor", str(int(o.tilt_cor)), "-DarkTol", f"{o.dark_tol:g}",
            "-OutImod", "1", "-PixSize", f"{pixel_size:.4f}", "-Cs", f"{o.cs:g}"]
    return args


def aretomo2_command(exe: str, stack: Path, work: Path, name: str, o: AreTomoOptions, align_z: int, axis: float,
                     pixel_size: float, dose: float | None) -> list[str]:
    """The AreTomo2 command line that aligns ``stack`` in ``work`` (the module docstring shows its form)."""
    cmd = [exe, "-InMrc", str(stack), "-OutMrc", str(work / f"{name}_aretomo.mrc"),
           "-AngFile", str(work / f"{name}_aretomo.tlt")]
    cmd += _common_args(o, align_z, axis, pixel_size)
    cmd += ["-Kv", f"{o.kv:g}", "-OutBin", str(int(o.out_bin))]
    if dose is not None:
        cmd += ["-ImgDose", f"{dose:.4f}"]
    if o.patches:
        cmd += ["-Patch", str(int(o.patches[0])), str(int(o.patches[1]))]
    cmd += ["-Gpu", *o.gpu.replace(",", " ").split()]
    return cmd + shlex.split(o.extra_args or "")


def aretomo3_command(exe: str, in_stack: Path, work: Path, o: AreTomoOptions, align_z: int, axis: float,
                     pixel_size: float) -> list[str]:
    """The AreTomo3 command line that aligns ``in_stack`` into ``work`` (alignment only: no CTF, no split sums)."""
    cmd = [exe, "-InPrefix", str(in_stack), "-InSuffix", ".mrc", "-OutDir", f"{work}/", "-Cmd", "1",
           "-Serial", "0"]
    cmd += _common_args(o, align_z, axis, pixel_size)
    cmd += ["-kV", f"{o.kv:g}", "-AtBin", str(int(o.out_bin)), "-SplitSum", "0", "-CorrCTF", "0"]
    if o.patches:
        cmd += ["-AtPatch", str(int(o.patches[0])), str(int(o.patches[1]))]
    cmd += ["-Gpu", *o.gpu.replace(",", " ").split()]
    return cmd + shlex.split(o.extra_args or "")


def parse_axis_score(log_text: str) -> float | None:
    """The best "Best tilt axis: N, Score: S" score (RELION keeps the maximum as rlnAreTomoTiltAxisScore)."""
    scores = [float(m.group(2)) for m in _BEST_AXIS.finditer(log_text)]
    return max(scores) if scores else None


# --- the aligner ---------------------------------------------------------------------------------------
def align_with_aretomo(
    stack_path: str | Path,
    tilts_df: pd.DataFrame,
    out_dir: str | Path,
    options: AreTomoOptions | None = None,
    name: str | None = None,
    pixel_size: float | None = None,
) -> TiltSeriesAlignment:
    """Align ``stack_path`` (sections = rows of ``tilts_df``, tilt-angle order) with AreTomo2 or 3.

    Returns RELION's reading of the ``.aln`` (:meth:`tiltflow.io.aln.AlnFile.to_alignment`): arrays
    over the images AreTomo kept, dark images in ``excluded``, shifts in pixels of the stack,
    ``axis_score`` from the log. Files: ``<out_dir>/<name>.aln``, ``<name>_aretomo.log``, AreTomo's
    ``_Imod`` folder and by-products.
    """
    import mrcfile

    from tiltflow.backends.imod import run_logged
    from tiltflow.backends.toolrun import find_executable, require_outputs
    from tiltflow.backends.tools import TOOLS
    from tiltflow.io.aln import read_aln

    o = options or AreTomoOptions()
    stack_path = Path(stack_path).resolve()
    out_dir = Path(out_dir)
    name = name or stack_path.stem
    if not stack_path.is_file():
        raise TiltflowError(f"tilt series {name}: stack not found (run tiltflow stack first)", stack_path)
    with mrcfile.open(stack_path, header_only=True, permissive=True) as mrc:
        nx, ny, nz = int(mrc.header.nx), int(mrc.header.ny), int(mrc.header.nz)
        header_ps = float(mrc.voxel_size.x)
    if len(tilts_df) != nz:
        raise TiltflowError(f"tilt series {name}: the stack has {nz} images but the table has {len(tilts_df)} "
                            "rows", stack_path)
    ps = float(pixel_size or header_ps)
    if ps <= 0:
        raise TiltflowError(f"tilt series {name}: stack has no pixel size; pass it explicitly", stack_path)
    if star.NOMINAL_TILT not in tilts_df:
        raise TiltflowError(f"tilt series {name}: no {star.NOMINAL_TILT} column")
    tilts = tilts_df[star.NOMINAL_TILT].to_numpy(float)
    pre = tilts_df[star.PRE_EXPOSURE].to_numpy(float) if star.PRE_EXPOSURE in tilts_df else np.arange(nz)
    acq = acquisition_order(pre)
    doses = per_tilt_dose(tilts_df)
    axis = _nominal_axis(tilts_df, o)
    align_z = align_z_pixels(o.thickness_nm, ps)

    exe = str(find_executable(TOOLS["aretomo3" if o.flavour == "aretomo3" else "aretomo2"], o.executable))
    version = resolve_flavour(exe, o.flavour)
    log.info("tilt series %s: %s %s, AlignZ %d px (%.0f nm at %.3f A/px), tilt axis %.2f", name,
             version.flavour, version.version or "(version unknown)", align_z, o.thickness_nm, ps, axis)

    out_dir.mkdir(parents=True, exist_ok=True)
    work = (out_dir / f".{name}.aretomo.part").resolve()  # AreTomo runs in out_dir: absolute paths
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    log_path = out_dir / f"{name}_aretomo.log"
    try:
        if version.flavour == "aretomo3":
            in_stack = work / "input" / f"{name}.mrc"
            in_stack.parent.mkdir()
            _link(stack_path, in_stack)
            dose_col = doses if doses is not None else np.zeros(nz)
            (in_stack.parent / f"{name}_TLT.txt").write_text(
                "".join(f"{t:8.2f}  {a:4d}  {d:8.2f}\n" for t, a, d in zip(tilts, acq, dose_col, strict=True)))
            cmd = aretomo3_command(exe, in_stack, work, o, align_z, axis, ps)
        else:
            (work / f"{name}_aretomo.tlt").write_text(
                "".join(f"{t:8.2f}  {a:4d}\n" for t, a in zip(tilts, acq, strict=True)))
            dose = float(np.median(doses)) if doses is not None else None
            cmd = aretomo2_command(exe, stack_path, work, name, o, align_z, axis, ps, dose)
        output = run_logged(cmd, log_path, cwd=out_dir, tool=version.flavour, timeout=o.timeout,
                            label=f"tilt series {name}")
        aln_path = work / f"{name}.aln"
        require_outputs([aln_path], tool=version.flavour, label=f"tilt series {name}", log_path=log_path)
        aln = read_aln(aln_path, n_stack=nz, series=name)
        if aln.raw_size is not None and (aln.raw_size[0], aln.raw_size[1]) != (nx, ny):
            raise TiltflowError(f"tilt series {name}: .aln RawSize {aln.raw_size[0]}x{aln.raw_size[1]} does not "
                                f"match the stack {nx}x{ny}", aln_path)
        alignment = aln.to_alignment(ps, n_stack=nz, series=name)
        alignment.axis_score = parse_axis_score(output)
        _publish(work, out_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if alignment.excluded:
        log.info("tilt series %s: AreTomo removed %d dark images: %s", name, len(alignment.excluded),
                 ", ".join(f"{tilts[i]:.1f}" for i in sorted(alignment.excluded)))
    return alignment


def _link(src: Path, dst: Path) -> None:
    try:
        dst.symlink_to(src)
    except OSError:
        shutil.copyfile(src, dst)


def _publish(work: Path, out_dir: Path) -> None:
    """Move AreTomo's outputs into ``out_dir`` (the .aln last, so its presence means complete)."""
    entries = [p for p in work.iterdir() if p.name != "input"]
    entries.sort(key=lambda p: p.suffix == ".aln")
    for p in entries:
        target = out_dir / p.name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()
        shutil.move(str(p), str(target))
