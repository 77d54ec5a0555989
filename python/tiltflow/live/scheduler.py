"""``tiltflow watch``: follow a session folder while SerialEM fills it, and process what becomes complete.

The loop: wake on a file event (watchfiles: inotify, or polling with ``poll=True`` for NFS/SMB shares
where inotify events never arrive) or after ``tick`` seconds; re-read changed mdocs; start the work that
became possible; write the live page. Work runs in the local runner's worker processes
(:func:`tiltflow.runner.execute.init_worker`: thread budget, GPU per worker, die with the parent) in this
order of priority, so that per-tilt feedback keeps up with the microscope:

1. a tilt whose movie is complete: motion correction and a CTF preview (:func:`tasks.process_tilt`);
2. ``relion/tomograms.star`` and the report after a series finished (:func:`tasks.session_files`);
3. a complete series: import, motioncor from the per-tilt results, ctf .. reconstruct
   (:func:`tasks.finish_series`).

Ends after ``timing.idle`` seconds with nothing new and nothing to do, when the stop file appears
(running work finishes, nothing new starts) or on Ctrl-C. A restart on the same outdir skips every tilt
and step already done (per-tilt results in ``live/<TS>/tilts``, the runner's resume records).
"""

from __future__ import annotations

import multiprocessing as mp
import threading
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from tiltflow.atomic import clean_partials
from tiltflow.errors import TiltflowError
from tiltflow.live import state as st
from tiltflow.live.completeness import Timing
from tiltflow.live.tasks import TiltResult, finish_series, process_tilt, session_files
from tiltflow.runner.execute import SeriesOutcome, init_worker
from tiltflow.runner.params import RunParams
from tiltflow.runner.pipeline import _exclusive, plan_workers, wait_for_workers
from tiltflow.runner.summary import SeriesSummary, print_table, series_summary, write_tsv

STOP_FILE = "STOP"  # default stop file, in the outdir


@dataclass
class WatchSettings:
    """How watch follows the session (see ``tiltflow watch --help``)."""

    timing: Timing = field(default_factory=Timing)
    expected_tilts: int | None = None
    stop_file: Path | None = None
    poll: bool = False
    tick: float = 0.5  # s between looks when no file event comes
    jobs: int = 1
    report_every: float = 2.0  # s between live-page refreshes (at most)


@dataclass
class WatchResult:
    """What a watch ended with: the results folder, each series' track and summary, and what stopped it."""

    root: Path
    series: dict[str, st.SeriesTrack]
    summaries: list[SeriesSummary]
    stopped_by: str

    @property
    def failures(self) -> list[str]:
        """``name: error`` for each series that failed."""
        return [f"{t.name}: {t.error}" for t in self.series.values() if t.state == st.FAILED]

    @property
    def incomplete(self) -> list[str]:
        """Series that neither finished nor failed when the watch stopped."""
        return [t.name for t in self.series.values() if t.state not in (st.FINISHED, st.FAILED)]


@dataclass
class _Task:
    kind: str  # "tilt", "session", "series"
    series: str | None
    key: str | None = None  # the tilt's movie root


class Watcher:
    """One watch of ``session`` into ``root`` (see the module docstring)."""

    def __init__(self, session: Path, root: Path, params: RunParams, settings: WatchSettings, console: Console):
        self.session, self.root, self.params, self.cfg, self.console = session, root, params, settings, console
        self.has_gain = params.gain is not None
        self.gain = st.SizeWatch()
        self.gain_state = st.DONE if not self.has_gain else st.WAITING
        self.series: dict[str, st.SeriesTrack] = {}
        self.running: dict[Future, _Task] = {}
        self.session_dirty = False
        self.last_activity = st.monotonic()
        self.last_report = 0.0
        self.report_dirty = True
        self.stopping = False
        self.stop_event = threading.Event()
        self.workers = 1

    # --- the loop --------------------------------------------------------------------------------
    def run(self) -> WatchResult:
        """Watch the session until it is stopped or done, processing each tilt and series as it completes."""
        import watchfiles

        workers, threads, gpus = plan_workers(self.params.device, self.cfg.jobs)
        self.workers = workers
        ctx = mp.get_context("spawn")
        gpu_q = None
        if gpus:
            gpu_q = ctx.Queue()
            for g in gpus:
                gpu_q.put(g)
        mode = "polling" if self.cfg.poll else "file events"
        self.console.print(f"tiltflow watch: {self.session} -> {self.root} ({workers} worker(s) x {threads} "
                           f"thread(s), {mode}; stop file {self._stop_file()})")
        pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=init_worker,
                                   initargs=(str(self.root), None, threads, gpu_q))
        self.pool = pool
        stopped_by = "idle"
        paths = [self.session] + ([Path(self.params.frames)] if self.params.frames else [])
        try:
            self.step()
            for changes in watchfiles.watch(*paths, force_polling=self.cfg.poll, poll_delay_ms=300,
                                            rust_timeout=int(self.cfg.tick * 1000), yield_on_timeout=True,
                                            debounce=200, step=50, stop_event=self.stop_event,
                                            raise_interrupt=True):
                if changes:
                    self.last_activity = st.monotonic()
                reason = self.step()
                if reason:
                    stopped_by = reason
                    break
        except KeyboardInterrupt:
            stopped_by = "interrupt"
            self.console.print("tiltflow watch: interrupted; stopping")
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            self._collect()
            for t in self.series.values():
                if t.state not in (st.FINISHED, st.FAILED):
                    t.state = st.INCOMPLETE
            self.write_page(final=True, stopped_by=stopped_by)
        return self._result(stopped_by)

    def step(self) -> str | None:
        """One look: read mdocs, collect finished work, start new work, refresh the page; why to stop."""
        now = st.monotonic()
        if not self.stopping:
            self._scan(now)
        self._collect()
        if self._stop_file().exists() and not self.stopping:
            self.stopping = True
            self.console.print(f"tiltflow watch: {self._stop_file()} found; finishing the running work")
        if not self.stopping:
            self._dispatch(st.monotonic())
        if self.report_dirty and st.monotonic() - self.last_report >= self.cfg.report_every:
            self.write_page()
        if self.stopping and not self.running:
            self._stop_file().unlink(missing_ok=True)  # consumed: a restart is not stopped by it again
            return "stop file"
        if not self.running and not self._pending() and st.monotonic() - self.last_activity >= self.cfg.timing.idle:
            return "idle"
        return None

    def _stop_file(self) -> Path:
        return self.cfg.stop_file or self.root / STOP_FILE

    # --- reading the folder ---------------------------------------------------------------------
    def _scan(self, now: float) -> None:
        from tiltflow.metadata.discover import series_name
        from tiltflow.runner.pipeline import find_mdocs

        try:
            mdocs = find_mdocs(self.session)
        except TiltflowError:
            mdocs = []  # no mdoc yet: the session has not started
        for mdoc in mdocs:
            name = series_name(mdoc)
            track = self.series.setdefault(name, st.SeriesTrack(name, mdoc))
            if st.read_series(track, self.root, self.params, now):
                self._activity()
                if track.state in (st.FINISHED, st.FAILED) and track.sections != track.finished_sections:
                    track.state = st.COLLECTING  # more sections after it was finished: finish again
            for tilt in track.tilts.values():
                if tilt.state == st.WAITING:
                    if st.restore_tilt(track, tilt, self.root):
                        tilt.state, tilt.why = st.DONE, ""
                        self._activity()
                    elif st.check_movie(track, tilt, self.root, self.cfg.timing, now):
                        tilt.state, tilt.ready_at = st.QUEUED, now
                        self._activity()
            if track.state == st.COLLECTING and st.series_complete(track, self.cfg.expected_tilts,
                                                                   self.cfg.timing, now):
                track.state, track.complete_at = st.COMPLETE, now
                self._activity()

    def _activity(self) -> None:
        self.last_activity = st.monotonic()
        self.report_dirty = True

    def _pending(self) -> bool:
        return self.session_dirty or any(
            t.state == st.COMPLETE or any(x.state == st.QUEUED for x in t.tilts.values()) for t in self.series.values())

    # --- starting and collecting work ---------------------------------------------------------------
    def _dispatch(self, now: float) -> None:
        while len(self.running) < self.workers:
            task = self._next()
            if task is None:
                return
            self._submit(task)

    def _next(self) -> _Task | None:
        if self.gain_state != st.DONE:
            return self._gain_task()
        queued = [(tilt.ready_at or 0.0, t.name, tilt.root) for t in self.series.values()
                  for tilt in t.tilts.values() if tilt.state == st.QUEUED]
        if queued:
            _, name, key = min(queued)
            return _Task("tilt", name, key)
        if self.session_dirty and not any(t.kind == "session" for t in self.running.values()):
            return _Task("session", None)
        complete = sorted((t.complete_at or 0.0, t.name) for t in self.series.values() if t.state == st.COMPLETE)
        if complete:
            return _Task("series", complete[0][1])
        return None

    def _gain_task(self) -> _Task | None:
        """The gain step first, as ``tiltflow run`` does, once the file is there and no longer growing
        (SerialEM saves the gain reference with the first movie).
        """
        if self.gain_state != st.WAITING:
            return None
        gain = Path(self.params.gain)
        if gain.is_file() and self.gain.update(gain.stat().st_size, st.monotonic()) >= self.cfg.timing.movie_stable:
            return _Task("gain", None)
        return None

    def _submit(self, task: _Task) -> None:
        root = str(self.root)
        if task.kind == "gain":
            from tiltflow.runner import plan
            from tiltflow.runner.execute import run_step

            self.gain_state = st.RUNNING
            fut = self.pool.submit(run_step, self.root, plan.gain_call(self.params), False)
        elif task.kind == "tilt":
            track = self.series[task.series]
            tilt = track.tilts[task.key]
            try:
                row = st.tilt_row(track, task.key)
            except KeyError:  # dropped as a retake since it was queued
                del track.tilts[task.key]
                return
            tilt.state = st.RUNNING
            fut = self.pool.submit(process_tilt, root, row, self.params, self.has_gain)
        elif task.kind == "session":
            self.session_dirty = False
            names = sorted(t.name for t in self.series.values() if t.state == st.FINISHED)
            fut = self.pool.submit(session_files, root, names)
        else:
            track = self.series[task.series]
            track.state, track.finished_sections = st.FINISHING, track.sections
            fut = self.pool.submit(finish_series, root, track.name, self.params, self.has_gain, str(track.mdoc))
        self.running[fut] = task

    def _collect(self) -> None:
        for fut in [f for f in self.running if f.done()]:
            task = self.running.pop(fut)
            try:
                out = fut.result()
            except BrokenProcessPool:
                out = None
            except Exception as exc:  # cancelled at a stop, or a worker crashed
                out = exc
            self._activity()
            if task.kind == "gain":
                self._gain_done(out)
            elif task.kind == "tilt":
                self._tilt_done(task, out)
            elif task.kind == "series":
                self._series_done(task, out)

    def _gain_done(self, out) -> None:
        if getattr(out, "status", None) in ("ran", "skipped"):
            self.gain_state = st.DONE
            return
        self.gain_state = st.WAITING if self.stopping or out is None else st.FAILED
        if self.gain_state == st.FAILED:
            raise TiltflowError(getattr(out, "error", None) or f"gain step failed: {out}", self.params.gain)

    def _tilt_done(self, task: _Task, out) -> None:
        tilt = self.series[task.series].tilts.get(task.key)
        if tilt is None:
            return
        if isinstance(out, TiltResult) and out.error is None:
            tilt.state, tilt.done_at = st.DONE, st.monotonic()
        elif isinstance(out, TiltResult):
            tilt.state, tilt.error = st.TILT_FAILED, out.error
            self.console.print(f"tiltflow watch: {task.series} {task.key} failed: {out.error}")
        else:
            tilt.state = st.WAITING  # cancelled at a stop, or the worker died: looked at again

    def _series_done(self, task: _Task, out) -> None:
        track = self.series[task.series]
        if isinstance(out, SeriesOutcome) and out.failed is None:
            track.state, track.finished_at = st.FINISHED, st.monotonic()
            self.session_dirty = True
            self.console.print(f"tiltflow watch: {track.name} finished ({len(track.tilts)} tilts)")
        elif isinstance(out, SeriesOutcome):
            f = out.failed
            track.state, track.error = st.FAILED, f"failed at {f.step}: {f.error}"
            self.console.print(f"tiltflow watch: {track.name} {track.error}")
        else:
            track.state = st.COMPLETE  # interrupted: a restart finishes it

    # --- the end ---------------------------------------------------------------------------------
    def write_page(self, final: bool = False, stopped_by: str | None = None) -> None:
        """Write the live page; a failure is only printed, as the page must never stop the processing."""
        from tiltflow.live.page import write_live_page

        self.last_report = st.monotonic()
        self.report_dirty = False
        try:
            write_live_page(self.root, self.session, self.series, self.cfg, final=final, stopped_by=stopped_by)
        except Exception as exc:  # the page must never stop the processing
            self.console.print(f"tiltflow watch: live page not written: {type(exc).__name__}: {exc}")

    def _result(self, stopped_by: str) -> WatchResult:
        status = {n: ("ok" if t.state == st.FINISHED else (t.error or t.state)) for n, t in self.series.items()}
        summaries = [series_summary(self.root, n, status[n]) for n in sorted(status)]
        if summaries:
            write_tsv(self.root / "summary.tsv", summaries)
            print_table(self.console, summaries, title=f"tiltflow watch (stopped: {stopped_by})")
        return WatchResult(self.root, self.series, summaries, stopped_by)


def watch_session(session: str | Path, outdir: str | Path, params: RunParams, settings: WatchSettings,
                  console: Console | None = None) -> WatchResult:
    """Watch ``session`` into ``outdir`` until idle, the stop file or Ctrl-C (see the module docstring)."""
    console = console or Console(stderr=True)
    session = Path(session).resolve()
    if not session.is_dir():
        raise TiltflowError("session folder not found (watch needs the folder SerialEM writes into)", session)
    gain = Path(params.gain).resolve() if params.gain else None
    if gain is not None and not gain.is_file() and session not in gain.parents:
        raise TiltflowError("gain reference not found (one inside the session folder is waited for)", gain)
    params = params.with_values({"input": str(session),
                                 "gain": str(Path(params.gain).resolve()) if params.gain else None,
                                 "frames": str(Path(params.frames).resolve()) if params.frames else None})
    root = Path(outdir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    with _exclusive(root):
        wait_for_workers(root)
        n = clean_partials(root)
        if n:
            console.print(f"removed {n} temporary file(s) left by an interrupted run")
        return Watcher(session, root, params, settings, console).run()
