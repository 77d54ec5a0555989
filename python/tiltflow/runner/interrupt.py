"""Ctrl-C and SIGTERM (what SLURM sends at the time limit, and ``timeout``) stop ``tiltflow run`` at once.

Why the parent kills its workers instead of waiting: a worker runs a whole tilt series' chain, so waiting
for it took minutes. Killing is safe because a step only becomes visible when it is complete
(runner/staging.py): a killed step leaves a staging folder that the next run removes, and every finished
step keeps its record, so the rerun resumes where this one stopped.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

from tiltflow.errors import Interrupted, StopSignal

SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Turn the first SIGINT/SIGTERM into :class:`StopSignal`; later ones are ignored while the run stops."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired: list[int] = []

    def handler(signum: int, frame: Any) -> None:
        if not fired:
            fired.append(signum)
            raise StopSignal(signum)

    old = {s: signal.signal(s, handler) for s in SIGNALS}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def kill_workers(pool: Any, grace: float = 3.0) -> None:
    """SIGTERM every worker of ``pool`` (they keep the default action: immediate exit), SIGKILL stragglers."""
    procs = list(getattr(pool, "_processes", {}).values())  # ProcessPoolExecutor keeps them there
    for p in procs:
        with contextlib.suppress(OSError, ValueError):
            p.terminate()
    for p in procs:
        p.join(grace)
        if p.is_alive():
            p.kill()
            p.join(grace)


def stopped(signum: int, running: list[str], last: str | None) -> Interrupted:
    """The one line for the user: which signal, where the run was, and that a rerun resumes."""
    name = signal.Signals(signum).name
    where = f"during {', '.join(running)}" if running else (f"after {last}" if last else "before the first step")
    return Interrupted(f"stopped by {name} {where}; finished steps are kept, unfinished ones left nothing "
                       f"behind: run the same command again to resume", signum)
