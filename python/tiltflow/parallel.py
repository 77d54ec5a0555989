"""Tilts in parallel threads of one torch thread each: how a built-in step uses the cores it was given.

Why over tilts, and why threads: torch's own intra-op threads gave 1.1-1.25x with 2 threads for motion
correction, CTF and WBP (``bench/bench_threads.py``: many small operators with Python between them, and
sparse products that run on one thread), while two independent one-thread workers on the same cores gave
1.5-1.9x. torch and numpy release the GIL inside their operators, so threads run the tilts side by side in
one process: no second import of torch, no copy of the gain or the images, and results that do not depend
on the thread count (every tilt is computed with one intra-op thread, however many run at once, also
when a step is given one tilt, as ``tiltflow watch`` does).

The number of workers is :mod:`tiltflow.threads`' choice (``--threads``, ``TILTFLOW_THREADS``, the
scheduler's allocation), never more than the tilts, nor more than fit in the memory the process may use
(:mod:`tiltflow.memory`) when the step says what a tilt holds; on a GPU one worker (the device serialises
the work).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

log = logging.getLogger("tiltflow.parallel")

#: set in the pool's threads: work started inside a worker (a WBP inside a half tomogram) gets one worker
_worker = threading.local()

T = TypeVar("T")
R = TypeVar("R")


def workers_for(n_items: int, device: Any = None, item_bytes: int | None = None) -> int:
    """Workers for ``n_items`` independent tilts: the thread choice, capped by the tilts; 1 off the CPU.

    ``item_bytes`` (what one tilt holds while it is worked on) also caps them by the memory this process may
    still take (:func:`tiltflow.memory.headroom`); one worker always runs, however little is left.
    """
    from tiltflow import threads

    if device is not None and str(getattr(device, "type", device)).split(":")[0] not in ("cpu", "auto"):
        return 1
    if getattr(_worker, "active", False):  # inside a worker already: the outer pool holds the threads
        return 1
    workers = max(1, min(int(n_items), threads.choose().count))
    if item_bytes and workers > 1:
        from tiltflow import memory

        room = memory.headroom()
        fit = max(1, room // int(item_bytes))
        if fit < workers:
            log.info("%d tilts at a time, not %d: each holds about %.1f GiB and %.1f GiB is free (%s)", fit,
                     workers, item_bytes / memory.GIB, room / memory.GIB, memory.allowed())
            workers = int(fit)
    return workers


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """Torch's intra-op pool at one thread for the block (workers are the parallelism), restored after.

    A no-op where torch is not loaded: the external-program backends stay torch-free (their work is a child
    process's, with its own threads); the built-in ones have loaded torch before their tilts run.
    """
    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def outcomes(fn: Callable[[T], R], items: Sequence[T], workers: int) -> list[tuple[R | None, BaseException | None]]:
    """``(fn(item), None)`` or ``(None, exception)`` for every item, in order; ``workers`` at a time.

    Every item runs with one torch thread: one worker in the calling thread, more in a pool of threads
    (so ``tiltflow watch``, which gives a step one tilt at a time, computes what a batch run computes with
    two tilts at a time, bit for bit). A KeyboardInterrupt cancels the items not started and
    waits for the running ones (one tilt each) before it propagates.
    """
    def guarded(item: T) -> tuple[R | None, BaseException | None]:
        try:
            return fn(item), None
        except Exception as exc:  # returned, not raised: the caller decides per item
            return None, exc

    def in_worker(item: T) -> tuple[R | None, BaseException | None]:
        _worker.active = True  # a pool thread: nested steps run their parts in it, one at a time
        return guarded(item)

    with one_torch_thread():  # also with one worker: a tilt's result never depends on the thread count
        if workers <= 1 or len(items) <= 1:
            return [guarded(x) for x in items]
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tilt")
        try:
            futures = [pool.submit(in_worker, x) for x in items]
            return [f.result() for f in futures]
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def map_ordered(fn: Callable[[T], R], items: Sequence[T], workers: int) -> list[R]:
    """``[fn(x) for x in items]`` on ``workers`` threads; the first item's exception (in order) is raised."""
    results = outcomes(fn, items, workers)
    for _, exc in results:
        if exc is not None:
            raise exc
    return [r for r, _ in results]  # type: ignore[misc]
