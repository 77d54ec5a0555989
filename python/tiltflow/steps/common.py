"""What every per-tilt-series step shares: where its outputs go and how it is executed.

Layout (the same for ``tiltflow run`` and for Nextflow's published results)::

    <root>/<step>/<series>/<series>.star   the contract for the next step
    <root>/<step>/<series>/console.log     everything the step reported
    <root>/<step>/<series>/error.log       warnings and errors
    <root>/<step>/<series>/...             the step's images and files

Paths written into STAR files are relative to ``root``, the project root every step is given explicitly
(the command layer passes the folder it was started in, the runner its staging folder); relative
``in_star``/``step_dir`` arguments are taken relative to it.

The step protocol: every ``steps/<step>.py`` has an ``Options`` frozen dataclass whose field names are the
CLI options (``--res-min`` -> ``res_min``), each with its default and ``help``/``unit`` in the field
metadata (:func:`option`), and ``validate()``; a per-series step has ``run_series(ts, out_dir, options,
root)``, which :func:`run_star_step` wraps. :mod:`tiltflow.steps.registry` lists the steps.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import MISSING, Field, field, fields
from pathlib import Path
from typing import Any, TypeVar

from tiltflow import star
from tiltflow.errors import TiltflowError
from tiltflow.steplog import step_logs

T = TypeVar("T")
log = logging.getLogger("tiltflow")


def option(default: Any, help: str, unit: str = "", *, flag: str | None = None, **limits: float) -> Any:
    """An Options field: its default and what the CLI shows (``help``, ``unit``; ``flag`` replaces the
    derived ``--name`` or ``--name/--no-name``; ``limits`` are typer's ``min``/``max``).
    """
    return field(default=default, metadata={"help": help, "unit": unit, "flag": flag, "limits": limits})


def cli_flag(name: str) -> str:
    """The CLI option of an Options field: ``res_min`` -> ``--res-min``."""
    return f"--{name.replace('_', '-')}"


def option_fields(options_cls: type) -> dict[str, Field]:
    """The fields of an Options class that are CLI options (those declared with :func:`option`)."""
    return {f.name: f for f in fields(options_cls) if "help" in f.metadata}


def default_of(f: Field) -> Any:
    """A field's default value (calling its factory)."""
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    raise TypeError(f"option {f.name} has no default")


def at_root(path: str | Path, root: str | Path) -> Path:
    """``path`` as the process can open it: relative paths are relative to the project ``root``."""
    p = Path(path)
    return p if p.is_absolute() else Path(root) / p


def run_star_step(step: str, in_star: str | Path, step_dir: str | Path, options: Any, root: str | Path) -> Path:
    """The STAR-level form of every per-series step (what ``tiltflow <step> IN.star --outdir DIR`` runs):
    validate ``options``, then ``steps/<step>.run_series`` between reading ``in_star`` and writing
    ``<step_dir>/<name>/<name>.star``.
    """
    from tiltflow.steps import registry

    options.validate()
    module = registry.module(step)
    root = Path(root).absolute()
    return execute_series_step(step, in_star, step_dir, lambda ts, out: module.run_series(ts, out, options, root),
                               root)


class _RootRelative(logging.Filter):
    """Paths under the project root logged as the STAR files name them: the runner's root is a staging
    folder that is gone once the step's folder is in place.
    """

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.prefix = f"{root}{os.sep}"

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if self.prefix in message:
            record.msg, record.args = message.replace(self.prefix, ""), ()
        return True


@contextlib.contextmanager
def root_relative_logs(root: str | Path) -> Iterator[None]:
    """While a step runs, its log lines name files relative to ``root`` (see :class:`_RootRelative`)."""
    handlers = logging.getLogger("tiltflow").handlers
    relative = _RootRelative(Path(root).absolute())
    for h in handlers:
        h.addFilter(relative)
    try:
        yield
    finally:
        for h in handlers:
            h.removeFilter(relative)


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
    root: str | Path,
) -> Path:
    """Read ``in_star``, run ``fn(ts, out_dir)`` with logs in ``out_dir``, write the new STAR.

    ``fn`` writes its images into ``out_dir`` (atomically) and returns the updated series; the
    STAR file is written last, so its presence means the step finished. The input is never modified.
    ``rlnTomoTiltSeriesStarFile`` is the STAR path as given (relative to ``root`` for a relative ``step_dir``).
    """
    ts = star.read_tilt_series(at_root(in_star, root))
    out_dir = at_root(series_dir(step_dir, ts.name), root)
    with step_logs(step, out_dir, ts.name), root_relative_logs(root):
        new = fn(ts.copy(), out_dir)
        out = series_star(step_dir, ts.name)
        new.globals[star.TS_STAR_FILE] = str(out)
        star.write_tilt_series(new, at_root(out, root))
    return at_root(out, root)


def each_tilt(tilts: Sequence[T], fn: Callable[[T], Any], series: str, what: str,
              workers: int = 1) -> tuple[list[Any], dict[int, str]]:
    """``fn(tilt)`` for every tilt (``workers`` at a time, :mod:`tiltflow.parallel`); a :class:`TiltflowError`
    of one tilt (an empty fitting band, a blank micrograph) flags that tilt with its reason and the series
    goes on, as one bad exposure of 61 should not cost the other 60. Returns the results (None where flagged)
    and ``{position: reason}``; when no tilt succeeds the first problem stops the series (whether enough
    tilts remain is the exclusion's decision). Any other exception stops the series (the first in order).
    """
    from tiltflow.parallel import outcomes

    results: list[Any] = []
    problems: dict[int, str] = {}
    for i, (value, exc) in enumerate(outcomes(fn, tilts, workers)):
        if exc is not None and not isinstance(exc, TiltflowError):
            raise exc
        results.append(value)
        if exc is not None:
            problems[i] = str(exc)
            log.warning("%s: no %s: %s", series, what, exc)  # the step's error names the tilt
    if tilts and len(problems) == len(tilts):
        raise TiltflowError(f"{series}: no tilt could be processed ({what}); the first: {problems[0]}")
    return results, problems
