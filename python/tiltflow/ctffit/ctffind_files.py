"""CTFFIND's text outputs: the summary ``<diag>.txt`` and the 1-D profiles ``<diag>_avrot.txt``.

Read for the CTFFIND backend (4.1 writes 7 columns, 5.0 adds tilt axis, tilt angle and thickness; AreTomo's
``_CTF.txt`` has the same 7 columns), and written by the built-in backend so that the files users and
their scripts know (``ctffind_plot_results.sh``) are there whatever estimated the CTF.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tiltflow.atomic import write_text
from tiltflow.errors import TiltflowError

_VERSION = re.compile(r"version\s+([0-9]+(?:\.[0-9]+)*)", re.IGNORECASE)


@dataclass
class CtffindRow:
    """One micrograph of a CTFFIND summary (defoci A, azimuth deg, phase shift rad, resolution A)."""

    micrograph: int
    defocus_1: float
    defocus_2: float
    azimuth: float
    phase_shift: float
    cross_correlation: float
    fit_resolution: float  # A; CTFFIND writes 0 when it could not tell
    tilt_axis: float | None = None  # CTFFIND5 only
    tilt_angle: float | None = None
    thickness: float | None = None  # A


@dataclass
class CtffindSummary:
    """A CTFFIND summary file: the program version its header names, and one row per micrograph."""

    version: str | None
    rows: list[CtffindRow]


def read_summary(path: str | Path) -> CtffindSummary:
    """Parse a CTFFIND (4.1 or 5.x) or AreTomo ``_CTF.txt`` summary; header lines start with ``#``."""
    path = Path(path)
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        raise TiltflowError(f"cannot read CTFFIND output ({exc.strerror})", path) from exc
    version = None
    rows: list[CtffindRow] = []
    for n, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if not s:
            continue
        if s.startswith("#"):
            m = _VERSION.search(s)
            if m and version is None and "output from" in s.lower():
                version = m.group(1)
            continue
        try:
            v = [float(x) for x in s.split()]
        except ValueError as exc:
            raise TiltflowError(f"line {n} of CTFFIND output is not numeric: {s[:60]!r}", path) from exc
        if len(v) < 7:
            raise TiltflowError(f"line {n} of CTFFIND output has {len(v)} columns, expected 7 or 10", path)
        extra = v[7:10] + [None] * (3 - len(v[7:10]))
        rows.append(CtffindRow(int(round(v[0])), v[1], v[2], v[3], v[4], v[5], v[6], *extra))
    if not rows:
        raise TiltflowError("CTFFIND output has no result lines", path)
    return CtffindSummary(version, rows)


@dataclass
class AvrotProfile:
    """One micrograph of ``_avrot.txt``: the six rows CTFFIND writes."""

    k: np.ndarray  # spatial frequency, 1/A
    average_plain: np.ndarray  # rotational average assuming no astigmatism
    average: np.ndarray  # rotational average accounting for astigmatism (equi-phase)
    fit: np.ndarray  # CTF fit
    cc: np.ndarray  # cross-correlation between spectrum and fit
    cc_2sigma: np.ndarray  # 2 sigma of the cross-correlation of noise


def read_avrot(path: str | Path) -> list[AvrotProfile]:
    """Parse ``_avrot.txt``: after the ``#`` header, six lines per micrograph, one value per bin."""
    path = Path(path)
    try:
        lines = [ln.split() for ln in path.read_text(errors="replace").splitlines()
                 if ln.strip() and not ln.lstrip().startswith("#")]
    except OSError as exc:
        raise TiltflowError(f"cannot read CTFFIND profiles ({exc.strerror})", path) from exc
    if not lines or len(lines) % 6:
        raise TiltflowError(f"_avrot file has {len(lines)} data lines, expected a multiple of 6", path)
    out = []
    for i in range(0, len(lines), 6):
        try:
            rows = [np.array([float(x) for x in ln]) for ln in lines[i:i + 6]]
        except ValueError as exc:
            raise TiltflowError(f"_avrot file has non-numeric values near data line {i + 1}", path) from exc
        if len({len(r) for r in rows}) != 1:
            raise TiltflowError(f"_avrot rows {i + 1}-{i + 6} have different lengths", path)
        out.append(AvrotProfile(*rows))
    return out


def write_summary(path: str | Path, *, program: str, input_file: str, pixel_size: float, voltage: float,
                  cs: float, amplitude_contrast: float, box: int, res_min: float, res_max: float,
                  defocus_min: float, defocus_max: float, rows: list[CtffindRow]) -> Path:
    """Write a CTFFIND 4.1-style 7-column summary (the header lines as CTFFIND writes them)."""
    head = [
        f"# Output from {program}",
        f"# Input file: {input_file} ; Number of micrographs: {len(rows)}",
        f"# Pixel size: {pixel_size:0.3f} Angstroms ; acceleration voltage: {voltage:0.1f} keV ; "
        f"spherical aberration: {cs:0.2f} mm ; amplitude contrast: {amplitude_contrast:0.2f}",
        f"# Box size: {box} pixels ; min. res.: {res_min:0.1f} Angstroms ; max. res.: {res_max:0.1f} Angstroms ; "
        f"min. def.: {defocus_min:0.1f} um; max. def. {defocus_max:0.1f} um",
        "# Columns: #1 - micrograph number; #2 - defocus 1 [Angstroms]; #3 - defocus 2; #4 - azimuth of "
        "astigmatism; #5 - additional phase shift [radians]; #6 - cross correlation; #7 - spacing (in "
        "Angstroms) up to which CTF rings were fit successfully",
    ]
    body = [" ".join(f"{x:f}" for x in (r.micrograph, r.defocus_1, r.defocus_2, r.azimuth, r.phase_shift,
                                         r.cross_correlation, r.fit_resolution)) for r in rows]
    return write_text(path, "\n".join(head + body) + "\n")


def write_avrot(path: str | Path, *, program: str, input_file: str, profiles: list[AvrotProfile]) -> Path:
    """Write ``_avrot.txt`` with CTFFIND's six lines per micrograph."""
    head = [
        f"# Output from {program}",
        f"# Input file: {input_file} ; Number of micrographs: {len(profiles)}",
        "# 6 lines per micrograph: #1 - spatial frequency (1/Angstroms); #2 - 1D rotational average of spectrum "
        "(assuming no astigmatism); #3 - 1D rotational average of spectrum; #4 - CTF fit; #5 - cross-correlation "
        "between spectrum and CTF fit; #6 - 2sigma of expected cross correlation of noise",
    ]
    body = []
    for p in profiles:
        for arr in (p.k, p.average_plain, p.average, p.fit, p.cc, p.cc_2sigma):
            body.append(" ".join(f"{x:f}" if math.isfinite(x) else "0.000000" for x in np.asarray(arr, float)))
    return write_text(path, "\n".join(head + body) + "\n")
