"""Running planned steps with resume, in worker processes.

Why workers for every step (session-level ones included): each step runs with the project root as its
working directory, as a Nextflow task does, and with its own thread budget and GPU; a worker process gives
that without touching the parent (which only plans, shows progress and summarises). Workers die with the
parent (``PR_SET_PDEATHSIG``), so a ``kill -9`` of ``tiltflow run`` leaves no process writing into the
results while the next run starts.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tiltflow.errors import TiltflowError, write_problem
from tiltflow.runner import resume, staging, testhold
from tiltflow.runner.params import RunParams
from tiltflow.runner.plan import SERIES_STEPS, StepCall, series_call
from tiltflow.steplog import record_failure

_EVENTS: Any = None  # the parent's event queue, set by init_worker
_HELD: Any = None  # this worker's shared lock on the results folder (see pipeline.wait_for_workers)
WORKERS_LOCK = ".tiltflow-workers.lock"


@dataclass
class StepOutcome:
    """What happened to one step: ``ran``, ``skipped`` (up to date) or ``failed``."""

    step: str
    series: str | None
    status: str
    seconds: float = 0.0
    reason: str = ""
    error: str | None = None
    user_error: bool = False
    warnings: list[str] = field(default_factory=list)


@dataclass
class SeriesOutcome:
    """The steps one tilt series went through in a run, in order."""

    name: str
    steps: list[StepOutcome] = field(default_factory=list)

    @property
    def failed(self) -> StepOutcome | None:
        """The step that failed, if one did."""
        return next((s for s in self.steps if s.status == "failed"), None)


def init_worker(root: str, events: Any, threads: int, gpu_ids: Any) -> None:
    """Per worker: die with the parent, hold the workers' lock, use ``threads`` threads, take one GPU."""
    import fcntl

    _die_with_parent()
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent decides
    global _EVENTS, _HELD
    _EVENTS = events
    _HELD = open(Path(root) / WORKERS_LOCK, "a")
    fcntl.flock(_HELD, fcntl.LOCK_SH)
    for var in ("TILTFLOW_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    if gpu_ids is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu_ids.get())
    # steps log into their folders (steplog); nothing may reach the terminal under the progress display
    root = logging.getLogger("tiltflow")
    root.addHandler(logging.NullHandler())
    root.propagate = False
    import warnings

    # library warnings go to the running step's console.log/error.log, not over the progress bars
    warnings.showwarning = lambda msg, cat, filename, lineno, file=None, line=None: logging.getLogger(
        "tiltflow.warnings").warning("%s:%s: %s: %s", filename, lineno, cat.__name__, msg)


def _die_with_parent() -> None:
    """SIGKILL this worker when its parent dies: ``PR_SET_PDEATHSIG`` on Linux, and everywhere a thread that
    watches the parent id (an idle worker blocked on its task pipe was seen to outlive a killed parent).
    """
    import threading

    parent = os.getppid()
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.2)
        os._exit(137)

    threading.Thread(target=watch, name="tiltflow-parent-watch", daemon=True).start()


def _emit(*event: Any) -> None:
    if _EVENTS is not None:
        _EVENTS.put(event)


def _set_torch_threads() -> None:
    import sys

    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(max(1, int(os.environ.get("TILTFLOW_THREADS", "1"))))


def expected_record(root: Path, call: StepCall) -> resume.Expected:
    """What ``call``'s record must say for the step to be skipped: its inputs now, and its options."""
    raw = call.raw_inputs(root)
    return resume.Expected(resume.inputs_of(root, call.input_files, call.upstream, raw), call.options)


def run_step(root: Path, call: StepCall, forced: bool) -> StepOutcome:
    """Skip ``call`` when its record says it is up to date, else run it beside the old folder, record it and
    put it in place of the old one.
    """
    _emit("start", call.series, call.step)
    t0 = time.perf_counter()
    try:
        expected = expected_record(root, call)
        ok, why = (False, "forced") if forced else resume.up_to_date(root, call.step, call.folder, expected)
        if ok:
            out = StepOutcome(call.step, call.series, "skipped", time.perf_counter() - t0, why)
        else:
            _set_torch_threads()
            _run_staged(root, call, expected)
            out = StepOutcome(call.step, call.series, "ran", time.perf_counter() - t0, why)
    except TiltflowError as exc:
        out = StepOutcome(call.step, call.series, "failed", time.perf_counter() - t0, error=str(exc),
                          user_error=True)
    except Exception as exc:  # a bug or a resource problem: one line here, the traceback is in error.log
        problem = write_problem(exc, _real_path(root, getattr(exc, "filename", None), call.folder))
        if problem is not None:  # a full disk: which file, how much space is left, that a rerun resumes
            out = StepOutcome(call.step, call.series, "failed", time.perf_counter() - t0, error=str(problem),
                              user_error=True)
        else:
            msg = " ".join(str(exc).split())[:300]
            if type(exc).__name__ == "OutOfMemoryError":
                msg = f"GPU out of memory: {msg}"
            out = StepOutcome(call.step, call.series, "failed", time.perf_counter() - t0,
                              error=f"{type(exc).__name__}: {msg}")
    if out.error:  # also when the step failed before its first log line (its error.log would be empty)
        record_failure(root / call.folder, " ".join(filter(None, (call.step, call.series))), out.error)
    _emit("end", call.series, call.step, out.status, out.seconds, out.reason or out.error or "")
    return out


class _Warnings(logging.Handler):
    """The warnings a step logs while it runs, one line each, for its record."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if not getattr(record, "file_only", False):
            self.lines.append(" ".join(record.getMessage().split())[:300])


def _real_path(root: Path, filename: str | None, folder: str) -> Path:
    """Where a file named in an OSError will be once the step's folder is in place (or the folder itself)."""
    if not filename:
        return root / folder
    p = Path(filename)
    parts = p.parts
    if staging.STAGING in parts:  # <root>/.tiltflow-staging/<id>/<folder>/...: name it as the user sees it
        return root.joinpath(*parts[parts.index(staging.STAGING) + 2:])
    return p if p.is_absolute() else root / p


def _run_staged(root: Path, call: StepCall, expected: resume.Expected) -> None:
    """Run ``call`` in a staging root and put its folder in place only when it finished (runner/staging.py)."""
    stage = staging.prepare(root, call.folder, call.reads(), call.reads_all)
    warnings = _Warnings()
    logging.getLogger("tiltflow").addHandler(warnings)
    try:
        call(stage)
        resume.write_record(stage, call.folder, call.step, call.series, expected, warnings.lines)
        testhold.hold("staged", call.folder)
    except BaseException:
        staging.discard(stage)
        raise
    finally:
        logging.getLogger("tiltflow").removeHandler(warnings)
    staging.promote(root, stage, call.folder)
    testhold.hold("promoted", call.folder)


def run_session_step(root: Path, call: StepCall, forced: bool) -> StepOutcome:
    """A session-level step (gain, import, export, report) in a worker."""
    return run_step(root, call, forced)


def run_series(root: Path, name: str, params: RunParams, has_gain: bool, forced: set[str]) -> SeriesOutcome:
    """The per-series chain motioncor -> reconstruct; stops at the first failing step."""
    result = SeriesOutcome(name)
    for step in SERIES_STEPS:
        try:
            call = series_call(step, name, params, has_gain)
        except TiltflowError as exc:
            result.steps.append(StepOutcome(step, name, "failed", error=str(exc), user_error=True))
            record_failure(root / step / name, f"{step} {name}", str(exc))
            _emit("end", name, step, "failed", 0.0, str(exc))
            break
        outcome = run_step(root, call, step in forced)
        result.steps.append(outcome)
        if outcome.status == "failed":
            break
    return result
