"""``tiltflow run``: the whole pipeline on one machine, same steps and layout as the Nextflow pipeline.

Order: gain (if given) -> import -> per series motioncor .. reconstruct (``jobs`` series at a time, one per
GPU with CUDA) -> export -> report, then the summary table. Each step is skipped when its record says it
is up to date (:mod:`tiltflow.runner.resume`). A series that fails is reported and the others carry on;
the run then ends non-zero. Problems with the input (no mdoc, missing gain) stop it at once.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import multiprocessing as mp
import os
import time
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from tiltflow import star, startext
from tiltflow import threads as cpu_threads
from tiltflow.atomic import clean_partials
from tiltflow.errors import StopSignal, TiltflowError
from tiltflow.metadata.discover import find_mdocs  # the session rule, shared with inspect and Nextflow
from tiltflow.runner import interrupt, plan, resume, staging
from tiltflow.runner.execute import (
    WORKERS_LOCK,
    SeriesOutcome,
    StepOutcome,
    init_worker,
    run_series,
    run_session_step,
)
from tiltflow.runner.options import check_overrides
from tiltflow.runner.params import RunParams
from tiltflow.runner.progress import RunProgress
from tiltflow.runner.summary import SeriesSummary, print_table, series_summary, write_tsv

LOCK = ".tiltflow-run.lock"


@dataclass
class RunResult:
    """What the run did: per series outcomes, session-step outcomes and the summary rows."""

    root: Path
    series: list[SeriesOutcome] = field(default_factory=list)
    session_steps: list[StepOutcome] = field(default_factory=list)
    summaries: list[SeriesSummary] = field(default_factory=list)
    workers: int = 1

    @property
    def failures(self) -> list[str]:
        """One line per failed step, series steps first, for the end of the run."""
        out = [f"{o.name} failed at {o.failed.step}: {o.failed.error}" for o in self.series if o.failed]
        out += [f"{s.step} failed: {s.error}" for s in self.session_steps if s.status == "failed"]
        return out

    def statuses(self) -> dict[tuple[str | None, str], str]:
        """(series or None, step) -> ran/skipped/failed, for tests and logs."""
        d = {(s.series, s.step): s.status for s in self.session_steps}
        for o in self.series:
            d.update({(s.series, s.step): s.status for s in o.steps})
        return d


def _absolute(path: str | None) -> str | None:
    return str(Path(path).resolve()) if path else None


@contextlib.contextmanager
def _exclusive(root: Path) -> Iterator[None]:
    """One ``tiltflow run`` per results folder; the lock goes with the process, even on kill -9."""
    fh = open(root / LOCK, "w")
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise TiltflowError("another tiltflow run is writing into this folder", root) from None
        yield
    finally:
        fh.close()


def wait_for_workers(root: Path, timeout: float = 60.0) -> None:
    """Wait until no worker of an earlier (killed) run still holds the results folder, then go on.

    Workers hold a shared lock for their lifetime and die with their parent; this covers the moment
    between a ``kill -9`` and their exit, and systems without ``PR_SET_PDEATHSIG``.
    """
    deadline = time.monotonic() + timeout
    with open(root / WORKERS_LOCK, "a") as fh:
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(fh, fcntl.LOCK_UN)
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise TiltflowError("processes of an earlier run still write into this folder", root) from None
                time.sleep(0.2)


def plan_workers(device: str, jobs: int) -> tuple[int, int, list[str] | None]:
    """(worker processes, CPU threads each, GPU ids one per worker or None) for ``device`` and ``--jobs``."""
    cores = cpu_threads.choose().count  # the allocation (tiltflow.threads), shared out between the workers
    jobs = max(1, int(jobs))
    if device == "cpu" or device.startswith("cuda:"):
        workers = jobs if device == "cpu" else 1
        return workers, max(1, cores // workers), None
    import torch

    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if n == 0:
        if device == "cuda":
            raise TiltflowError("--device cuda requested but no CUDA GPU is available")
        return jobs, max(1, cores // jobs), None
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [v.strip() for v in visible.split(",") if v.strip()][:n] if visible else [str(i) for i in range(n)]
    return len(ids), max(1, cores // len(ids)), ids


def run_pipeline(session: str | Path, outdir: str | Path, params: RunParams, jobs: int = 1,
                 force: str | None = None, console: Console | None = None) -> RunResult:
    """Run (or resume) the pipeline on ``session`` into ``outdir``; see the module docstring."""
    console = console or Console(stderr=True)
    session = Path(session).resolve()
    mdocs = find_mdocs(session)
    for path in [*mdocs, *([Path(params.frames).resolve()] if params.frames else [])]:
        startext.check(str(path), path)  # STAR files will hold these paths: refuse one they cannot, now
    if params.gain is not None and not Path(params.gain).is_file():
        raise TiltflowError("gain reference not found", params.gain)
    if force is not None and force not in plan.ORDER:
        raise TiltflowError(f"--force {force!r}: choose one of {', '.join(plan.ORDER)}")
    # workers run in the results folder: every path from the user is made absolute here
    params = params.with_values({"input": str(session), "gain": _absolute(params.gain),
                                 "frames": _absolute(params.frames)})
    root = Path(outdir).resolve()
    try:
        root.mkdir(parents=True, exist_ok=True)
        lock = open(root / LOCK, "a")
    except OSError as exc:
        if exc.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise
        return _read_only(root, mdocs, params, console)
    lock.close()
    with _exclusive(root):
        wait_for_workers(root)
        n = staging.recover(root) + clean_partials(root)
        if n:
            console.print(f"removed {n} temporary file(s) left by an interrupted run")
        return _run(root, mdocs, params, jobs, plan.forced_from(force), console)


def _read_only(root: Path, mdocs: list[Path], params: RunParams, console: Console) -> RunResult:
    """A results folder that cannot be written (a read-only mount): report a finished run whose every step is
    up to date, else say which step would have to run; nothing is written.
    """
    from tiltflow.runner.execute import expected_record

    calls = ([plan.gain_call(params)] if params.gain is not None else []) + [plan.import_call(params, mdocs)]
    result = RunResult(root)
    try:
        names = sorted(str(n) for n in star.read_tomograms(root / "import" / "tomograms.star")[star.TOMO_NAME])
    except TiltflowError:
        names = []
    calls += [plan.series_call(s, n, params, params.gain is not None) for n in names for s in plan.SERIES_STEPS]
    calls += [plan.export_call(names)] if names else []
    for call in calls:
        ok, why = resume.up_to_date(root, call.step, call.folder, expected_record(root, call))
        if not ok:
            where = f"{call.series} {call.step}" if call.series else call.step
            raise TiltflowError(f"the results folder is read-only and {where} is not up to date ({why}); "
                                f"use a writable --outdir", root)
    console.print(f"tiltflow run: {root} is read-only; every step is up to date")
    result.series = [SeriesOutcome(n, [StepOutcome(s, n, "skipped", reason="up to date") for s in plan.SERIES_STEPS])
                     for n in names]
    result.summaries = [series_summary(root, n) for n in names]
    if result.summaries:
        print_table(console, result.summaries)
    return result


def _run(root: Path, mdocs: list[Path], params: RunParams, jobs: int, forced: set[str],
         console: Console) -> RunResult:
    workers, threads, gpus = plan_workers(params.device, jobs)
    result = RunResult(root, workers=workers)
    has_gain = params.gain is not None
    ctx = mp.get_context("spawn")
    events = ctx.SimpleQueue()  # put() writes at once: an event is never overtaken by the step's result
    gpu_q = None
    if gpus:
        gpu_q = ctx.Queue()
        for g in gpus:
            gpu_q.put(g)
    session_steps = (["gain"] if has_gain else []) + ["import", "export", "report"]
    where = f"{workers} worker(s) x {threads} thread(s)" + (f" on GPU {','.join(gpus)}" if gpus else " on CPU")
    console.print(f"tiltflow run: {len(mdocs)} mdoc(s) -> {root} ({where})")
    pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=init_worker,
                               initargs=(str(root), events, threads, gpu_q))
    stop: StopSignal | None = None
    try:
        with RunProgress(console, [], len(plan.SERIES_STEPS), session_steps) as progress:
            progress.listen(events)
            try:
                with interrupt.stop_on_signals():
                    _steps(pool, root, params, mdocs, has_gain, forced, result, progress)
            except StopSignal as exc:
                stop = exc
                interrupt.kill_workers(pool)
            finally:
                progress.close(events, wait=stop is None)  # a killed worker may hold the queue's lock
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        staging.recover(root)  # the workers are gone: the staging area (and what a stop left there) can go
    if stop is not None:
        clean_partials(root)
        raise interrupt.stopped(stop.signum, progress.running_steps(), progress.last_finished)
    status = {o.name: (f"failed at {o.failed.step}" if o.failed else "ok") for o in result.series}
    result.summaries = [series_summary(root, name, status[name]) for name in sorted(status)]
    if result.summaries:
        write_tsv(root / "summary.tsv", result.summaries)
        print_table(console, result.summaries)
    for o in result.session_steps:
        for w in o.warnings:
            console.print(f"warning: {o.step}: {w}", style="yellow", overflow="fold")
    return result


def _steps(pool: ProcessPoolExecutor, root: Path, params: RunParams, mdocs: list[Path], has_gain: bool,
           forced: set[str], result: RunResult, progress: RunProgress) -> None:
    names = _session_start(pool, root, params, mdocs, forced, result)
    for name in names:
        progress.add_series(name)
    _series(pool, root, names, params, has_gain, forced, result)
    done = [o.name for o in result.series if not o.failed]
    if done:
        _session_step(pool, root, plan.export_call(done), "export" in forced, result)
        _session_step(pool, root, plan.report_call(done), "report" in forced, result)


def _session_step(pool: ProcessPoolExecutor, root: Path, call: plan.StepCall, forced: bool,
                  result: RunResult) -> StepOutcome:
    try:
        out = pool.submit(run_session_step, root, call, forced).result()
    except BrokenProcessPool:
        out = StepOutcome(call.step, None, "failed", error="the worker process died (out of memory?)")
    result.session_steps.append(out)
    return out


def _session_start(pool: ProcessPoolExecutor, root: Path, params: RunParams, mdocs: list[Path],
                   forced: set[str], result: RunResult) -> list[str]:
    """The gain and import steps; a failure here stops the run (exit 2 for bad input)."""
    calls = ([plan.gain_call(params)] if params.gain is not None else []) + [plan.import_call(params, mdocs)]
    for call in calls:
        out = _session_step(pool, root, call, call.step in forced, result)
        if out.status == "failed":
            if out.user_error:
                raise TiltflowError(out.error or f"{call.step} failed")
            raise RuntimeError(f"{call.step} failed: {out.error}")
    table = star.read_tomograms(root / "import" / "tomograms.star")
    names = sorted(str(n) for n in table[star.TOMO_NAME])
    check_overrides(params, names)
    return names


def _series(pool: ProcessPoolExecutor, root: Path, names: list[str], params: RunParams, has_gain: bool,
            forced: set[str], result: RunResult) -> None:
    futures: dict[Future, str] = {pool.submit(run_series, root, n, params, has_gain, forced): n for n in names}
    outcomes: dict[str, SeriesOutcome] = {}
    for fut, name in futures.items():
        try:
            outcomes[name] = fut.result()
        except BrokenProcessPool:
            o = SeriesOutcome(name)
            o.steps.append(StepOutcome("?", name, "failed", error="the worker process died (out of memory?)"))
            outcomes[name] = o
    result.series = [outcomes[n] for n in names]
