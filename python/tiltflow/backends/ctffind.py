"""CTFFIND 4.1 and 5.0: answer the interactive prompts, keep the log, parse the outputs.

CTFFIND reads its parameters as answers to prompts on stdin (RELION writes them as a here-document). In
scripted mode (stdin not a terminal) a blank or missing answer makes CTFFIND exit with "Blank answer in
scripted mode", so the answers must match the prompts of the installed version exactly. The order
(cisTEM ``src/programs/ctffind/ctffind.cpp``, 4.1.14-5.0.2):

    input image, [movie? frames to average - only for stacks], diagnostic output, pixel size, kV, Cs,
    amplitude contrast, box, min res, max res, min defocus, max defocus, defocus step,
    known astigmatism? -> (no) slower search?, restrain astigmatism? [-> tolerance]
                       -> (yes) slower search?, known astigmatism, known angle,
    find phase shift? [-> min, max, step in radians], determine sample tilt? (only without phase shift),
    determine sample thickness? (5.x only), expert options?

The 5.0.2 order and wording are those of a real CTFFIND 5.0.2 run (tests/data, replayed by the test fake);
4.1.14 asks the same minus the thickness question. The version comes from the banner (``Version : 5.0.2``) that CTFFIND prints before the first prompt;
``toolrun.detect_version`` gets it by starting the program with no input (it then exits at once; the probe is
``backends.tools.TOOLS["ctffind5"]``).
"""

from __future__ import annotations

import math
import os
import re
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

from tiltflow.backends import toolrun
from tiltflow.ctffit.ctffind_files import AvrotProfile, CtffindRow, read_avrot, read_summary
from tiltflow.errors import TiltflowError, ToolError

TOOL = "CTFFIND"


@dataclass(frozen=True)
class CtffindParams:
    """What CTFFIND is asked (units as in its prompts: A, kV, mm, degrees here and radians on stdin)."""

    pixel_size: float
    voltage: float = 300.0
    cs: float = 2.7
    amplitude_contrast: float = 0.07
    box: int = 512
    res_min: float = 30.0
    res_max: float = 5.0
    defocus_min: float = 5000.0
    defocus_max: float = 50000.0
    defocus_step: float = 100.0
    astigmatism_restraint: float | None = None  # A; None = no restraint
    slow_search: bool = False
    phase_shift: bool = False
    phase_min: float = 0.0  # degrees
    phase_max: float = 180.0
    phase_step: float = 10.0


@dataclass
class CtffindResult:
    """Parsed outputs of one run (paths are the final locations)."""

    row: CtffindRow
    profile: AvrotProfile | None
    diagnostic: Path
    summary: Path
    avrot: Path | None
    log: Path
    version: str | None


def major_version(version: str | None, fallback: int) -> int:
    """4 or 5 from a version string; ``fallback`` when unknown. CTFFIND 4.0 (Fortran) is refused."""
    if not version:
        return fallback
    parts = [int(p) for p in re.findall(r"\d+", version)[:2]] + [0]
    if parts[0] < 4 or (parts[0] == 4 and parts[1] < 1):
        raise ToolError(f"CTFFIND {version} is not supported (its prompts differ); use 4.1 or 5.x")
    return 5 if parts[0] >= 5 else 4


def _num(x: float) -> str:
    return f"{x:.6f}".rstrip("0").rstrip(".") if math.isfinite(x) else str(x)


def answers(params: CtffindParams, micrograph: str, diagnostic: str, major: int) -> list[str]:
    """The stdin lines CTFFIND ``major`` (4 = 4.1.x, 5 = 5.x) expects, in prompt order."""
    p = params
    lines = [
        micrograph,
        diagnostic,
        _num(p.pixel_size),
        _num(p.voltage),
        _num(p.cs),
        _num(p.amplitude_contrast),
        str(int(p.box)),
        _num(p.res_min),
        _num(p.res_max),
        _num(p.defocus_min),
        _num(p.defocus_max),
        _num(p.defocus_step),
        "no",  # do you know what astigmatism is present?
        "yes" if p.slow_search else "no",  # slower, more exhaustive search?
    ]
    if p.astigmatism_restraint and p.astigmatism_restraint > 0:
        lines += ["yes", _num(p.astigmatism_restraint)]  # use a restraint on astigmatism? tolerance
    else:
        lines += ["no"]
    if p.phase_shift:
        lines += ["yes", _num(math.radians(p.phase_min)), _num(math.radians(p.phase_max)),
                  _num(math.radians(p.phase_step))]
    else:
        lines += ["no", "no"]  # find additional phase shift? determine sample tilt?
    if major >= 5:
        lines += ["no"]  # determine sample thickness?
    lines += ["no"]  # do you want to set expert options?
    return lines


def run_ctffind(
    executable: str | Path,
    micrograph: str | Path,
    out_dir: str | Path,
    root: str,
    params: CtffindParams,
    *,
    major: int,
    version: str | None = None,
    extra_args: str = "",
    label: str = "",
    timeout: float | None = 3600.0,
) -> CtffindResult:
    """Run CTFFIND on one micrograph; outputs ``<root>_PS.ctf`` (+ ``.txt``, ``_avrot.txt``) in ``out_dir``.

    CTFFIND writes into a hidden temporary folder; the files are moved into ``out_dir`` only after all of
    them exist and parse, so a failure leaves nothing half-written. The log ``<root>_ctffind.log`` stays.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    micrograph = Path(micrograph).resolve()
    label = label or micrograph.name
    _check_single_image(micrograph)
    work = out_dir / f".{root}.ctffind.part"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    log = out_dir / f"{root}_ctffind.log"
    diag_name = f"{root}_PS.ctf"
    try:
        stdin = "\n".join(answers(params, str(micrograph), diag_name, major)) + "\n"
        command = [str(executable), *shlex.split(extra_args or "")]
        toolrun.run_tool(command, log_path=log, tool=TOOL, label=label, stdin=stdin, cwd=work, timeout=timeout)
        names = {"diag": work / diag_name, "txt": work / f"{root}_PS.txt", "avrot": work / f"{root}_PS_avrot.txt"}
        toolrun.require_outputs([names["diag"], names["txt"]], tool=TOOL, label=label, log_path=log)
        summary = read_summary(names["txt"])
        if len(summary.rows) != 1:
            raise ToolError(f"{TOOL} wrote {len(summary.rows)} results for {label}, expected one", names["txt"])
        profile = None
        if names["avrot"].is_file() and names["avrot"].stat().st_size > 0:
            profile = read_avrot(names["avrot"])[0]
        final = {}
        for key, src in names.items():
            if src.is_file():
                dst = out_dir / src.name
                os.replace(src, dst)
                final[key] = dst
    except TiltflowError as exc:
        if isinstance(exc, ToolError):
            raise
        raise ToolError(f"{TOOL} output for {label} is unusable: {exc}", log) from exc
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return CtffindResult(row=summary.rows[0], profile=profile, diagnostic=final["diag"], summary=final["txt"],
                         avrot=final.get("avrot"), log=log, version=summary.version or version)


def _check_single_image(path: Path) -> None:
    """CTFFIND treats a stack as a movie or as several micrographs: only single images are passed."""
    import mrcfile

    if not path.is_file():
        raise TiltflowError("micrograph not found", path)
    try:
        with mrcfile.open(path, header_only=True, permissive=True) as mrc:
            nz = int(mrc.header.nz)
    except Exception as exc:  # mrcfile raises several types
        raise TiltflowError(f"not a readable MRC file ({exc})", path) from exc
    if nz > 1:
        raise TiltflowError(f"expected a single motion-corrected image, found a stack of {nz}", path)
