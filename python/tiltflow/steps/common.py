"""What every per-tilt-series step shares: where its outputs go and how it is executed.

Layout (the same for ``tiltflow run`` and for Nextflow's published results)::

    <root>/<step>/<series>/<series>.star   the contract for the next step
    <root>/<step>/<series>/console.log     everything the step reported
    <root>/<step>/<series>/error.log       warnings and errors
    <root>/<step>/<series>/...             the step's images and files

Paths written into STAR files are relative to ``root`` (the folder the step runs in).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from tiltflow import star
from tiltflow.errors import TiltflowError
from tiltflow.steplog import step_logs

T = TypeVar("T")
log = logging.getLogger("tiltflow")

STEPS = ("import", "motioncor", "ctf", "exclude", "stack", "align", "reconstruct", "export")


def series_dir(step_dir: str | Path, name: str) -> Path:
    """The folder holding one series' outputs of one step."""
    return Path(step_dir) / name


def series_star(step_dir: str | Path, name: str) -> Path:
    """The contract file a step writes for one series."""
    return series_dir(step_dir, name) / f"{name}.star"


def execute_series_step(
    step: str,
    in_star: str | Path,
    step_dir: str | Path,
    fn: Callable[[star.TiltSeriesStar, Path], star.TiltSeriesStar],
) -> Path:
    """Read ``in_star``, run ``fn(ts, out_dir)`` with logs in ``out_dir``, write the new STAR.

    ``fn`` writes its images into ``out_dir`` (atomically) and returns the updated series; the
    STAR file is written last, so its presence means the step finished. The input is never modified.
    """
    ts = star.read_tilt_series(in_star)
    out_dir = series_dir(step_dir, ts.name)
    with step_logs(step, out_dir, ts.name):
        new = fn(ts.copy(), out_dir)
        out = series_star(step_dir, ts.name)
        new.globals[star.TS_STAR_FILE] = str(out)
        star.write_tilt_series(new, out)
    return out


def each_tilt(tilts: Sequence[T], fn: Callable[[T], Any], series: str, what: str) -> tuple[list[Any], dict[int, str]]:
    """``fn(tilt)`` for every tilt; a :class:`TiltflowError` of one tilt (an empty fitting band, a blank
    micrograph) flags that tilt with its reason and the series goes on, as one bad exposure of 61 should not
    cost the other 60. Returns the results (None where flagged) and ``{position: reason}``; when no tilt
    succeeds the first problem stops the series (whether enough tilts remain is the exclusion's decision)."""
    results: list[Any] = []
    problems: dict[int, str] = {}
    for i, t in enumerate(tilts):
        try:
            results.append(fn(t))
        except TiltflowError as exc:
            results.append(None)
            problems[i] = str(exc)
            log.warning("%s: no %s: %s", series, what, exc)  # the step's error names the tilt
    if tilts and len(problems) == len(tilts):
        raise TiltflowError(f"{series}: no tilt could be processed ({what}); the first: {problems[0]}")
    return results, problems
