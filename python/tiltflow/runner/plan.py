"""The plan: which step runs on what, writes where, with which options - the same calls as the CLI.

Why a plan and not a workflow engine: the pipeline is a fixed chain per tilt series between two
session-level ends (gain, import | export, report). Each :class:`StepCall` names the step function that
the ``tiltflow <step>`` command calls, its arguments (paths relative to the project root, as Nextflow's
task folders have them, so STAR files come out identical), its options, the files it reads and the
step folders whose records chain into its own (see :mod:`tiltflow.runner.resume`).
"""

from __future__ import annotations

import importlib
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any

from tiltflow.runner.params import RunParams
from tiltflow.steps import registry

#: every step in pipeline order and the per-series ones (steps/registry.py)
ORDER = registry.ORDER
SERIES_STEPS = registry.SERIES_STEPS


@dataclass
class StepCall:
    """One step on one series (or on the session): what to call and what decides whether to re-run."""

    step: str
    series: str | None
    folder: str  # output folder relative to the project root, e.g. "ctf/TS_01"
    target: str  # "module:function"
    args: tuple[Any, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)
    input_files: tuple[str, ...] = ()  # hashed into the record (relative to the root or absolute)
    upstream: tuple[str, ...] = ()  # folders whose records chain in
    options: dict[str, Any] = field(default_factory=dict)  # what the record keeps
    raw: tuple[str, ...] = ()  # raw files and folders keyed by size+mtime (absolute)
    movies_from: str | None = None  # a STAR file whose movies are raw inputs too (read when the step is due)
    movies_dir: str | None = None  # where the step also looks for those movies (--frames)
    reads_all: bool = False  # reads every step folder (the report), not only ``upstream``

    def reads(self) -> list[str]:
        """The result folders the step reads: its upstream folders and those of its relative input files."""
        parents = [str(Path(f).parent) for f in self.input_files if not Path(f).is_absolute()]
        return [f for f in (*self.upstream, *parents) if f not in (".", "")]

    def raw_inputs(self, root: Path) -> list[str]:
        """``raw`` plus every place the step may read a movie of ``movies_from`` from (as motioncor looks)."""
        out = list(self.raw)
        if self.movies_from is None:
            return out
        from tiltflow import star
        from tiltflow.errors import TiltflowError

        try:
            names = star.read_tilt_series(root / self.movies_from).tilts[star.MOVIE].astype(str)
        except (TiltflowError, KeyError):
            return out  # the step itself reports an unreadable input
        for name in names:
            out.append(str(star.resolve(name, root)))
            if self.movies_dir:
                out.append(str(Path(self.movies_dir) / name.replace("\\", "/").rsplit("/", 1)[-1]))
        return out

    def function(self):
        """The function that runs the step, imported from ``target`` only when it is called."""
        module, name = self.target.split(":")
        return getattr(importlib.import_module(module), name)

    def __call__(self, root: Path) -> Any:
        """Run the step with ``root`` as its project root (the runner's staging folder)."""
        return self.function()(*self.args, **self.kwargs, root=root)


def series_star(step: str, name: str) -> str:
    """``<step>/<name>/<name>.star``: the contract file, relative to the project root."""
    return f"{step}/{name}/{name}.star"


def _options_record(opts: Any) -> dict[str, Any]:
    return asdict(opts) if is_dataclass(opts) else dict(opts)


def gain_call(p: RunParams) -> StepCall:
    """The gain step, with the gain file as its input."""
    from tiltflow.runner.options import param_values, step_options

    gain = str(Path(p.gain).resolve())  # type: ignore[arg-type]
    return StepCall("gain", None, "gain", "tiltflow.steps.gain:run_session", (gain, "gain", step_options("gain", p, True)),
                    input_files=(gain,), options=param_values("gain", p))


def import_call(p: RunParams, mdocs: list[Path]) -> StepCall:
    """The import step of ``mdocs``; the frames folder counts as an input, as it changes what import finds."""
    from tiltflow.runner.options import param_values, step_options

    values = param_values("import", p)
    frames = values["frames"]
    paths = [str(m) for m in mdocs]
    # the folder's own stamp changes when a movie appears or goes, which changes what import finds
    return StepCall("import", None, "import", "tiltflow.steps.importer:run_session",
                    (paths, "import", step_options("import", p, False)),
                    input_files=tuple(paths), options=values, raw=(frames,) if frames else ())


def series_call(step: str, name: str, p: RunParams, has_gain: bool) -> StepCall:
    """The call ``tiltflow <step> <prev>/<name>/<name>.star --outdir <step>`` makes, with ``p``'s options."""
    from tiltflow.runner.options import frames_dir, step_options

    entry = registry.get(step)
    in_star = series_star(entry.reads, name)
    opts = step_options(step, p, has_gain, name)
    upstream = tuple(f"{f}/{name}" for f in (entry.reads, *entry.also_reads) if f != "import")
    if step == "motioncor" and has_gain:
        upstream = ("gain",)
    movies = dict(movies_from=in_star, movies_dir=frames_dir(p)) if step == "motioncor" else {}
    return StepCall(step, name, f"{entry.writes}/{name}", "tiltflow.steps.common:run_star_step",
                    (step, in_star, entry.writes, opts),
                    input_files=(in_star,), upstream=upstream, options=_options_record(opts), **movies)


def export_call(names: list[str]) -> StepCall:
    """The export step: the reconstructed series into a RELION project (``relion/``)."""
    from tiltflow.steps.export import Options

    stars = [series_star("reconstruct", n) for n in sorted(names)]
    return StepCall("export", None, "relion", "tiltflow.steps.export:run_session", (stars, "relion", Options()),
                    input_files=tuple(stars), upstream=tuple(f"reconstruct/{n}" for n in sorted(names)))


def report_call(names: list[str]) -> StepCall:
    """``tiltflow report . --output report/report.html``."""
    ups = [f"{s}/{n}" for n in sorted(names) for s in SERIES_STEPS] + ["relion"]
    return StepCall("report", None, "report", "tiltflow.qc.report:write_report", (), {"output": "report/report.html"},
                    upstream=tuple(ups), reads_all=True)


def forced_from(force: str | None) -> set[str]:
    """``--force STEP``: that step and every later one."""
    if not force:
        return set()
    return set(ORDER[ORDER.index(force):])
