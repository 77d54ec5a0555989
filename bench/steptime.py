"""Time one ``tiltflow`` step command in a fresh process, without its imports: wall and CPU seconds.

The child imports torch and the step's module first (so the clock holds only the step, not the ~2 s of
importing torch and pandas), then runs the command through ``cli.main`` exactly as a Nextflow task does,
so ``tiltflow.threads`` takes the thread count from ``TILTFLOW_THREADS``. A fresh process per case also
lets OpenMP read ``OMP_WAIT_POLICY`` anew. CPU = user+system time during the step of the child and of the
programs it ran (a wrapped RELION or CTFFIND is a process of its own).

    python bench/steptime.py RESULTS MODULE ARG...   (the child side; prints one JSON line)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "python"))

#: variables a case sets itself (inherited values would leak the caller's thread settings)
_THREAD_PREFIXES = ("OMP_", "MKL_", "OPENBLAS_", "TILTFLOW_THREADS")


@dataclass(frozen=True)
class Timing:
    """One step's run in a fresh process: wall and CPU seconds, its threads and its peak memory."""

    wall: float
    cpu: float
    threads: int
    peak_mib: float = float("nan")  # the child's peak resident memory (imports included)

    @property
    def cpu_ratio(self) -> float:
        """CPU seconds per wall second (how many cores it kept busy)."""
        return self.cpu / self.wall if self.wall > 0 else float("nan")


def time_step(results: Path, module: str, argv: list[str], threads: int, policy: str = "PASSIVE") -> Timing:
    """Run ``tiltflow ARGV`` in ``results`` in a fresh process with ``threads`` threads; raise on failure."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_THREAD_PREFIXES)}
    env.update(TILTFLOW_THREADS=str(threads), OMP_WAIT_POLICY=policy)
    p = subprocess.run([sys.executable, __file__, str(results), module, *argv], env=env, capture_output=True,
                       text=True)
    if p.returncode:
        raise SystemExit(f"tiltflow {' '.join(argv)} ({threads} threads, {policy}) failed:\n{p.stderr[-2000:]}")
    r = json.loads(p.stdout.strip().splitlines()[-1])
    if r["rc"]:
        raise SystemExit(f"tiltflow {' '.join(argv)} exited {r['rc']}:\n{p.stderr[-2000:]}")
    return Timing(r["wall"], r["cpu"], r["torch_threads"], r.get("peak_mib", float("nan")))


def _children_cpu() -> float:
    """User+system seconds of this process's finished child processes."""
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _child(results: str, module: str, argv: list[str]) -> None:
    import importlib

    from tiltflow import malloc

    malloc.use_huge_pages()  # as cli.main does, before torch loads (torch reads it at its first allocation)
    import torch

    importlib.import_module(module)
    from tiltflow import cli

    os.chdir(results)
    t0, c0, k0 = time.perf_counter(), time.process_time(), _children_cpu()
    rc = cli.main(argv)
    wall = time.perf_counter() - t0
    cpu = time.process_time() - c0 + _children_cpu() - k0  # a wrapped program (RELION, CTFFIND) is a child
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"rc": rc, "wall": wall, "cpu": cpu, "torch_threads": torch.get_num_threads(), "peak_mib": peak}))


if __name__ == "__main__":
    _child(sys.argv[1], sys.argv[2], sys.argv[3:])
