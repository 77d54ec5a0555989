"""Progress of a run: one bar per tilt series (and one for the session-level steps), fed by worker events.

Workers put ``("start", series, step)`` and ``("end", series, step, status, seconds, note)`` on a queue; a
thread in the parent moves the bars and prints one line per finished step above them, so the same
record of what ran, what was skipped and what failed appears in a terminal and in a log file.
"""

from __future__ import annotations

import threading
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

SESSION = "session"


class RunProgress:
    """The live display; use as a context manager around the run, with :meth:`listen` on the event queue."""

    def __init__(self, console: Console, series: list[str], n_series_steps: int, session_steps: list[str]):
        self.console = console
        self.progress = Progress(
            TextColumn("[bold]{task.fields[label]:<12}"), TextColumn("{task.fields[step]:<12}"), BarColumn(),
            MofNCompleteColumn(), TimeElapsedColumn(), console=console, transient=False,
        )
        self.tasks: dict[str, Any] = {}
        self._n = n_series_steps
        self._session_steps = session_steps
        self._thread: threading.Thread | None = None
        self._running: dict[str, str] = {}  # series (or SESSION) -> the step running now
        self.last_finished: str | None = None  # "TS_01 motioncor": where a stopped run got to
        self.add_session()
        for name in series:
            self.add_series(name)

    def add_session(self) -> None:
        """Add the row of the session steps."""
        self.tasks[SESSION] = self.progress.add_task("", total=len(self._session_steps), label=SESSION, step="")

    def add_series(self, name: str) -> None:
        """Add a row for series ``name``, unless it has one."""
        if name not in self.tasks:
            self.tasks[name] = self.progress.add_task("", total=self._n, label=name, step="waiting")

    def __enter__(self) -> RunProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.stop()

    def listen(self, queue: Any) -> None:
        """Consume events from ``queue`` in a thread until :meth:`close` puts the sentinel."""
        self._thread = threading.Thread(target=self._loop, args=(queue,), daemon=True)
        self._thread.start()

    def close(self, queue: Any, wait: bool = True) -> None:
        """Stop listening; ``wait=False`` after workers were killed: the listener is a daemon thread and
        putting the sentinel could block on a lock that a killed worker held.
        """
        if not wait:
            return
        queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout=10)

    def running_steps(self) -> list[str]:
        """``"TS_01 ctf"``-style labels of the steps that had started and not ended."""
        return [f"{k} {v}" if k != SESSION else v for k, v in sorted(self._running.items())]

    def _loop(self, queue: Any) -> None:
        while True:
            event = queue.get()
            if event is None:
                return
            self.handle(event)

    def handle(self, event: tuple) -> None:
        """Show one step event (start or end) on its series' row."""
        kind, series, step = event[0], event[1], event[2]
        key = series or SESSION
        if key not in self.tasks:
            self.add_series(key)
        task = self.tasks[key]
        if kind == "start":
            self._running[key] = step
            self.progress.update(task, step=step)
            return
        self._running.pop(key, None)
        self.last_finished = f"{series} {step}" if series else step
        status, seconds, note = event[3], event[4], event[5]
        self.progress.advance(task)
        where = f"{series} {step}" if series else step
        if status == "ran":
            self.console.print(Text(f"  {where}: done in {seconds:.1f} s ({note})"))
        elif status == "skipped":
            self.console.print(Text(f"  {where}: skipped ({note})"))
        else:
            self.progress.update(task, step=f"[red]{step} failed")
            self.console.print(Text(f"  {where}: failed: {note}", style="red"))
        if status != "failed" and self.progress.tasks[task].completed >= (self.progress.tasks[task].total or 0):
            self.progress.update(task, step="[green]done")
