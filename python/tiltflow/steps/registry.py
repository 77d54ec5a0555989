"""Every pipeline step in one table: what it is called, where it lives, what it reads and what it writes.

The CLI (``tiltflow.cli``), the local runner's plan (``runner/plan.py``), its option mapping
(``runner/options.py``) and the report (``qc/report/collect.py``) all read this table, so a step is added
or changed here and in its own ``steps/<step>.py``. Building it imports no step module (and so no torch):
:func:`module` and :func:`options_class` import one step when asked.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

from tiltflow.errors import TiltflowError


@dataclass(frozen=True)
class Step:
    """One step of the pipeline.

    ``reads``: the step folder its input STAR comes from (per-series steps); ``also_reads``: further step
    folders whose outputs it opens; ``writes``: the folder it writes (``<writes>/<series>/`` per series).
    """

    name: str
    module: str  # the module that does the work
    per_series: bool
    reads: str | None
    also_reads: tuple[str, ...]
    writes: str
    command: str  # tiltflow.commands.<command>

    def import_module(self) -> ModuleType:
        """The step's module; if it is missing, the error says that this installation lacks the step."""
        try:
            return importlib.import_module(self.module)
        except ModuleNotFoundError as exc:
            if exc.name == self.module:
                raise TiltflowError(f"step '{self.name}' is not available in this tiltflow installation") from None
            raise


#: in pipeline order; ``tiltflow run --force STEP`` re-runs that step and every later one
STEPS: tuple[Step, ...] = (
    Step("gain", "tiltflow.steps.gain", False, None, (), "gain", "gain"),
    Step("import", "tiltflow.steps.importer", False, None, (), "import", "import_"),
    Step("motioncor", "tiltflow.steps.motioncor", True, "import", (), "motioncor", "motioncor"),
    Step("ctf", "tiltflow.steps.ctf", True, "motioncor", (), "ctf", "ctf"),
    Step("exclude", "tiltflow.steps.exclude", True, "ctf", ("motioncor",), "exclude", "exclude"),
    Step("stack", "tiltflow.steps.stack", True, "exclude", ("motioncor",), "stack", "stack"),
    Step("align", "tiltflow.steps.align", True, "stack", (), "align", "align"),
    Step("reconstruct", "tiltflow.steps.reconstruct", True, "align", ("stack",), "reconstruct", "reconstruct"),
    Step("export", "tiltflow.steps.export", False, "reconstruct", (), "relion", "export"),
    Step("report", "tiltflow.qc.report", False, None, (), "report", "report"),
)

BY_NAME: dict[str, Step] = {s.name: s for s in STEPS}
ORDER: tuple[str, ...] = tuple(s.name for s in STEPS)
SERIES_STEPS: tuple[str, ...] = tuple(s.name for s in STEPS if s.per_series)


def get(name: str) -> Step:
    """The step called ``name`` (a :class:`TiltflowError` for an unknown one)."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise TiltflowError(f"unknown step '{name}' (choose {', '.join(ORDER)})") from None


def module(name: str) -> ModuleType:
    """The step's module (imported now)."""
    return get(name).import_module()


def options_class(name: str) -> type:
    """The step's ``Options`` dataclass."""
    return module(name).Options
