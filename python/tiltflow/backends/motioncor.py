"""MotionCor2 / MotionCor3 wrapper: command line, run, keep the log, parse the shifts, collect the sums.

Command line (MotionCor3 ``CInput.cpp``; RELION's ``executeMotioncor2`` for the choices): ``-InMrc/-InTiff/
-InEer`` by format, ``-OutMrc``, ``-Gain`` (tiltflow's prepared gain is already in the movie's orientation,
so never ``-RotGain/-FlipGain``), ``-DefectMap`` when the gain step found dead pixels, ``-PixSize``, ``-kV``,
``-Patch``, ``-FmRef 0`` (shifts relative to the first frame, RELION's convention), ``-Throw/-Trunc``,
``-FtBin``, ``-SplitSum 1`` (``_ODD``/``_EVN`` sums), ``-Gpu``, ``-LogDir``; dose weighting adds ``-FmDose``
(per frame) and ``-InitDose``. EER adds ``-FmIntFile`` (one line ``N_raw N_per_frame dose_per_raw_frame``)
and ``-EerSampling``.

Dose bookkeeping: without an FmIntFile, MotionCor3 restarts its accumulated dose after the thrown frames
(``CFmIntParam::mSetup``), so ``-InitDose`` is the pre-exposure *plus* the thrown frames' dose; with an
FmIntFile it keeps counting them (``mThrowIntFrames``), so ``-InitDose`` is the pre-exposure.

Log: MotionCor prints its per-frame global shifts to stdout. Three layouts are parsed (tests use real logs):
MotionCor2 1.5 (``Full-frame alignment shift`` then ``...... Frame (  1) shift:  x  y``), MotionCor2 1.6 /
MotionCor3 (``Full-frame alignment`` then a ``Frame x Shift y Shift`` table), and ``-Serial`` batch logs
(one table per movie, followed by ``Corrected sum has been saved in:`` and the file). The shifts are the
translations applied to the frames (RELION reads them unchanged as ``rlnMicrographShiftX/Y``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tiltflow.atomic import write_text
from tiltflow.backends import toolrun
from tiltflow.backends.tools import TOOLS
from tiltflow.errors import ToolError


@dataclass(frozen=True)
class MotionCorCall:
    """Everything one MotionCor run needs."""

    executable: Path
    movie: Path
    movie_format: str  # "mrc", "tiff" or "eer"
    out_mrc: Path
    pixel_size: float  # A per movie pixel (MotionCor -PixSize)
    kv: float = 300.0
    gain: Path | None = None
    defect_map: Path | None = None
    throw: int = 0
    trunc: int = 0
    bin_factor: float = 1.0
    patches: tuple[int, int] = (1, 1)
    split_sum: bool = True
    dose_per_frame: float | None = None  # -FmDose; None = no dose weighting
    init_dose: float = 0.0
    fmint_file: Path | None = None
    eer_sampling: int = 1
    gpu: str = "0"
    log_dir: Path | None = None
    extra_args: tuple[str, ...] = ()
    workdir: Path | None = None  # run here; out_mrc, log_dir and fmint_file may then be relative to it


def build_command(call: MotionCorCall) -> list[str]:
    """MotionCor's argument list for ``call`` (flags as MotionCor3 spells them; both versions accept them)."""
    flag = {"mrc": "-InMrc", "tiff": "-InTiff", "eer": "-InEer"}.get(call.movie_format)
    if flag is None:
        raise ToolError(f"MotionCor cannot read {call.movie_format!r} movies", call.movie)
    cmd = [str(call.executable), flag, str(call.movie), "-OutMrc", str(call.out_mrc)]
    if call.gain is not None:
        cmd += ["-Gain", str(call.gain)]
    if call.defect_map is not None:
        cmd += ["-DefectMap", str(call.defect_map)]
    cmd += ["-PixSize", _num(call.pixel_size), "-kV", _num(call.kv)]
    cmd += ["-Patch", str(int(call.patches[0])), str(int(call.patches[1]))]
    cmd += ["-FmRef", "0"]
    if call.throw > 0:
        cmd += ["-Throw", str(int(call.throw))]
    if call.trunc > 0:
        cmd += ["-Trunc", str(int(call.trunc))]
    if call.bin_factor > 1.0 + 1e-9:
        cmd += ["-FtBin", _num(call.bin_factor)]
    if call.dose_per_frame is not None:
        cmd += ["-FmDose", _num(call.dose_per_frame), "-InitDose", _num(call.init_dose)]
    if call.fmint_file is not None:
        cmd += ["-FmIntFile", str(call.fmint_file)]
    if call.movie_format == "eer":
        cmd += ["-EerSampling", str(int(call.eer_sampling))]
    if call.split_sum:
        cmd += ["-SplitSum", "1"]
    if call.log_dir is not None:
        cmd += ["-LogDir", str(call.log_dir) + "/"]
    gpus = call.gpu.replace(",", " ").split()
    cmd += ["-Gpu", *(gpus or ["0"])]
    cmd += list(call.extra_args)
    return cmd


def _num(x: float) -> str:
    return f"{float(x):.6g}"


def write_fmint_file(path: str | Path, n_raw: int, per_frame: int, dose_per_raw: float) -> Path:
    """MotionCor's frame-integration file: ``N_raw N_per_integrated dose_per_raw_frame`` (one line)."""
    return write_text(path, f"{int(n_raw)} {int(per_frame)} {float(dose_per_raw):.6g}\n")


@dataclass
class ShiftTable:
    """One movie's ``Full-frame alignment`` table from a MotionCor log: shifts (n, 2) and files it saved."""

    shifts: np.ndarray
    saved: list[str] = field(default_factory=list)


_OLD_ROW = re.compile(r"Frame\s*\(\s*(\d+)\)\s*shift:\s*(\S+)\s+(\S+)")
_NEW_ROW = re.compile(r"^\s*(\d+)\s+(-?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)\s+(-?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)\s*$")
_SAVED = re.compile(r"^\s*Corrected sum has been saved in:\s*$")
_RENDERED = re.compile(r"Rendered (?:stack|size)(?: mode)?:\s+(\d+)\s+(\d+)\s+(\d+)")


def parse_shift_tables(text: str) -> list[ShiftTable]:
    """Every global-shift table in a MotionCor log, in order, with the sums saved after it."""
    lines = text.splitlines()
    tables: list[ShiftTable] = []
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        if line.startswith("Full-frame alignment shift") or line == "Full-frame alignment":
            rows, i = _read_rows(lines, i + 1)
            if rows:
                rows.sort(key=lambda r: r[0])
                tables.append(ShiftTable(np.array([[x, y] for _, x, y in rows], dtype=float)))
            continue
        if _SAVED.match(lines[i]) and tables and i + 1 < len(lines):
            tables[-1].saved.append(lines[i + 1].strip())
        i += 1
    return tables


def _read_rows(lines: list[str], i: int) -> tuple[list[tuple[int, float, float]], int]:
    rows: list[tuple[int, float, float]] = []
    while i < len(lines):
        s = lines[i]
        m = _OLD_ROW.search(s) or _NEW_ROW.match(s)
        if m:
            rows.append((int(m.group(1)), float(m.group(2)), float(m.group(3))))
        elif rows or not re.match(r"^\s*Frame\s+x\s+Shift", s):
            break  # a header line is skipped; anything else ends the table
        i += 1
    return rows, i


def parse_rendered_frames(text: str) -> int | None:
    """Frames MotionCor rendered (``Rendered stack/size: w h n``), when the log says so."""
    m = _RENDERED.search(text)
    return int(m.group(3)) if m else None


def shifts_for(text: str, out_mrc: str | Path) -> np.ndarray:
    """The shift table of the movie whose sum is ``out_mrc`` (the only or last table for a single movie)."""
    tables = parse_shift_tables(text)
    if not tables:
        raise ToolError("no 'Full-frame alignment' shift table in the MotionCor log")
    stem = Path(out_mrc).name.rsplit(".", 1)[0]
    for t in tables:
        if any(Path(s).name.rsplit(".", 1)[0] in (stem, f"{stem}_DW") for s in t.saved):
            return t.shifts
    return tables[-1].shifts


@dataclass
class MotionCorOutput:
    """The sums MotionCor wrote (paths in its output folder), its shifts and version."""

    sum: Path
    dose_weighted: Path | None
    even: Path | None
    odd: Path | None
    shifts: np.ndarray
    version: str | None
    log: Path


def output_paths(out_mrc: Path) -> dict[str, Path]:
    """Where MotionCor puts its sums for ``-OutMrc out_mrc`` (``CSaveSerialCryoEM::sGenOutputName``)."""
    stem = out_mrc.with_suffix("")
    return {k: Path(f"{stem}{sfx}.mrc") for k, sfx in
            (("sum", ""), ("dose_weighted", "_DW"), ("odd", "_ODD"), ("even", "_EVN"))}


def run_motioncor(call: MotionCorCall, *, tool: str, log_path: Path, label: str,
                  timeout: float | None = None, expected_frames: int | None = None) -> MotionCorOutput:
    """Run MotionCor for one movie; check its outputs; parse the shifts. Raises ToolError on failure.

    Give ``workdir`` and a bare file name as ``out_mrc``: MotionCor derives its output names by cutting the
    whole ``-OutMrc`` path at the first ``.mrc`` or ``.st`` it contains (``sGenOutputName``), so a folder
    such as ``/data/run.stage2/`` above the output would otherwise send the sums elsewhere.
    """
    version = toolrun.detect_version(call.executable, TOOLS["motioncor2"])
    run = toolrun.run_tool(build_command(call), log_path=log_path, tool=tool, label=label, timeout=timeout,
                           cwd=call.workdir)
    outs = output_paths(call.out_mrc if call.workdir is None else Path(call.workdir) / call.out_mrc)
    wanted = [outs["sum"]]
    if call.dose_per_frame is not None:
        wanted.append(outs["dose_weighted"])
    if call.split_sum:
        wanted += [outs["odd"], outs["even"]]
    toolrun.require_outputs(wanted, tool=tool, label=label, log_path=run.log_path)
    text = run.log_text()
    try:
        shifts = shifts_for(text, call.out_mrc)
    except ToolError as exc:
        raise ToolError(f"{tool} on {label}: {exc}", run.log_path) from None
    rendered = parse_rendered_frames(text)
    if rendered is not None:
        expected_frames = rendered - call.throw - call.trunc
    if expected_frames is not None and len(shifts) != expected_frames:
        raise ToolError(f"{tool} on {label}: the log lists {len(shifts)} frame shifts, expected "
                        f"{expected_frames}", run.log_path)
    return MotionCorOutput(
        sum=outs["sum"],
        dose_weighted=outs["dose_weighted"] if call.dose_per_frame is not None else None,
        even=outs["even"] if call.split_sum else None,
        odd=outs["odd"] if call.split_sum else None,
        shifts=shifts,
        version=version,
        log=run.log_path,
    )
