"""Every external program tiltflow can drive, described once: names, environment variables, version probe.

Why one table: the wrappers, ``tiltflow version`` (Nextflow's versions.yml) and the runner's check before
any work all have to find the same program the same way. Each entry is consumed by
:func:`tiltflow.backends.toolrun.find_executable` (``--executable``, else the environment variables in
order, else the names on ``PATH``, else ``$<home_var>/bin``) and
:func:`tiltflow.backends.toolrun.detect_version`.

Environment variables: RELION's own (``RELION_CTFFIND_EXECUTABLE``, ``RELION_MOTIONCOR2_EXECUTABLE``,
``RELION_ARETOMO_EXECUTABLE``, ``RELION_RUN_MOTIONCORR_EXECUTABLE``: relion ``src/pipeline_jobs.cpp``), after
tiltflow's ``TILTFLOW_*`` where one exists; IMOD's programs also live in ``$IMOD_DIR/bin``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Tool:
    """How to find one external program and ask its version."""

    name: str  # as messages name it ("CTFFIND", "MotionCor2")
    executables: tuple[str, ...]  # names tried on PATH, in order
    env_vars: tuple[str, ...] = ()  # variables naming the program, tried before PATH, in order
    version_pattern: str | None = None  # first group = the version; None: the program cannot tell
    version_args: tuple[str, ...] = ("--version",)  # how to ask (() = start it with no input)
    home_var: str | None = None  # a software home whose bin/ holds the program (IMOD_DIR)


#: CTFFIND prints ``Version : 5.0.2`` in its banner before the first prompt (cisTEM src/programs/ctffind)
_CTFFIND_VERSION = r"Version\s*:\s*([0-9]+(?:\.[0-9]+)+)"
_CTFFIND_ENV = ("TILTFLOW_CTFFIND", "RELION_CTFFIND_EXECUTABLE")
#: MotionCor2/3 print ``MotionCor2 version 1.6.4`` for ``--version``
_MOTIONCOR_VERSION = r"MotionCor[23]?\s+[Vv]ersion\s+([0-9][\w.\-]*)"
#: AreTomo2 prints "AreTomo2 version 1.1.3", AreTomo3 1.x only "version 1.0.16, built on ..." (whole line kept:
#: backends.aretomo.parse_version tells the flavour from it)
_ARETOMO_VERSION = r"(?i)((?:aretomo\s*\d?\s*)?version[^\n]*)"

TOOLS: dict[str, Tool] = {
    "ctffind4": Tool("CTFFIND", ("ctffind4", "ctffind"), _CTFFIND_ENV, _CTFFIND_VERSION, ()),
    "ctffind5": Tool("CTFFIND", ("ctffind5", "ctffind"), _CTFFIND_ENV, _CTFFIND_VERSION, ()),
    "motioncor2": Tool("MotionCor2", ("MotionCor2", "motioncor2"),
                       ("TILTFLOW_MOTIONCOR2", "RELION_MOTIONCOR2_EXECUTABLE"), _MOTIONCOR_VERSION),
    "motioncor3": Tool("MotionCor3", ("MotionCor3", "motioncor3"), ("TILTFLOW_MOTIONCOR3",), _MOTIONCOR_VERSION),
    "relion": Tool("RELION", ("relion_run_motioncorr",), ("RELION_RUN_MOTIONCORR_EXECUTABLE",),
                   r"RELION version:\s*([0-9][\w.\-]*)"),
    "aretomo2": Tool("AreTomo2", ("AreTomo2",), ("RELION_ARETOMO_EXECUTABLE",), _ARETOMO_VERSION),
    "aretomo3": Tool("AreTomo3", ("AreTomo3",), ("RELION_ARETOMO_EXECUTABLE",), _ARETOMO_VERSION),
    # IMOD programs have no version option (the version is that of $IMOD_DIR)
    "imod": Tool("newstack", ("newstack",), home_var="IMOD_DIR"),
}

