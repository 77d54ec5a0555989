"""How many CPU threads a tiltflow process may use: the one place that decides it.

Order: an explicit ``--threads``, else ``TILTFLOW_THREADS``, else what the scheduler gave this process
(``SLURM_CPUS_PER_TASK``, SGE's ``NSLOTS``, the CPU affinity mask, the cgroup v2/v1 CPU quota; the smallest
of those present). Never ``os.cpu_count()``: on a shared node that is the whole machine, and OpenMP threads
beyond the allocation spin against each other (motion correction was 6x slower with 2 threads than 1 on a
loaded machine).

``apply`` exports the choice to child programs (OMP/MKL/OpenBLAS) and sets OpenMP's wait policy to
passive: a spinning OpenMP thread holds its core after each parallel region, which is what made more threads
slower on busy cores. libgomp reads ``OMP_WAIT_POLICY`` once when it is loaded, so ``apply`` must run before
torch is imported (``cli.main`` calls it first; the commands import torch lazily).
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tiltflow.errors import TiltflowError

#: environment variables read by the thread pools of torch/numpy and of child programs
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@dataclass(frozen=True)
class ThreadChoice:
    """The thread count and where it came from (for logs: ``4 (SLURM_CPUS_PER_TASK)``)."""

    count: int
    source: str

    def __str__(self) -> str:
        return f"{self.count} ({self.source})"


def _positive_int(value: str | None, name: str) -> int | None:
    if value is None or not value.strip():
        return None
    try:
        n = int(value)
    except ValueError:
        raise TiltflowError(f"{name}={value!r} is not a whole number of threads") from None
    if n < 1:
        raise TiltflowError(f"{name}={value!r}: the thread count must be 1 or more")
    return n


def cgroup_files(v2_name: str, v1_controller: str, v1_name: str, root: Path = Path("/sys/fs/cgroup"),
                 proc_cgroup: Path = Path("/proc/self/cgroup")) -> list[Path]:
    """Where this process's cgroup limit file may be: its own cgroup first (v2 unified, then v1), then the root.

    ``/proc/self/cgroup`` lines are ``id:controllers:path`` (kernel's cgroup-v2.rst; v2 has empty controllers).
    """
    candidates: list[Path] = []
    try:
        for line in proc_cgroup.read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            rel = path.lstrip("/")
            if controllers == "":  # cgroup v2 unified hierarchy
                candidates.append(root / rel / v2_name)
            elif v1_controller in controllers.split(","):
                candidates.append(root / controllers / rel / v1_name)
    except (OSError, ValueError):
        pass
    return candidates + [root / v2_name, root / v1_controller / v1_name]


def cgroup_cpus(root: Path = Path("/sys/fs/cgroup"), proc_cgroup: Path = Path("/proc/self/cgroup")) -> int | None:
    """CPUs allowed by the cgroup CPU quota (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``), rounded up; None = no quota."""
    candidates = cgroup_files("cpu.max", "cpu", "cpu.cfs_quota_us", root, proc_cgroup)
    candidates.append(root / "cpu,cpuacct" / "cpu.cfs_quota_us")
    for path in candidates:
        try:
            if path.name == "cpu.max":
                quota, period = path.read_text().split()[:2]
            else:
                quota, period = path.read_text().strip(), (path.parent / "cpu.cfs_period_us").read_text().strip()
        except (OSError, ValueError):
            continue
        if quota in ("max", "-1") or int(period) <= 0:
            return None
        return max(1, math.ceil(int(quota) / int(period)))
    return None


def affinity_cpus() -> int | None:
    """CPUs in this process's affinity mask (what taskset, Slurm's cgroups or Nextflow's cpus pin us to)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or None
    return None


def allocated(env: Mapping[str, str] | None = None) -> ThreadChoice:
    """The scheduler's allocation: the smallest of Slurm's, SGE's, the affinity mask and the cgroup quota."""
    env = os.environ if env is None else env
    found: list[ThreadChoice] = []
    for name in ("SLURM_CPUS_PER_TASK", "NSLOTS"):
        n = _positive_int(env.get(name), name)
        if n is not None:
            found.append(ThreadChoice(n, name))
    n = affinity_cpus()
    if n is not None:
        found.append(ThreadChoice(n, "CPU affinity"))
    n = cgroup_cpus()
    if n is not None:
        found.append(ThreadChoice(n, "cgroup CPU quota"))
    if not found:  # no scheduler, no affinity API: one thread cannot oversubscribe anything
        return ThreadChoice(1, "default")
    return min(found, key=lambda c: c.count)


def choose(requested: int | None = None, env: Mapping[str, str] | None = None) -> ThreadChoice:
    """``requested`` (``--threads``), else ``TILTFLOW_THREADS``, else :func:`allocated`."""
    env = os.environ if env is None else env
    if requested is not None:
        if requested < 1:
            raise TiltflowError(f"--threads {requested}: the thread count must be 1 or more")
        return ThreadChoice(requested, "--threads")
    n = _positive_int(env.get("TILTFLOW_THREADS"), "TILTFLOW_THREADS")
    if n is not None:
        return ThreadChoice(n, "TILTFLOW_THREADS")
    return allocated(env)


def apply(choice: ThreadChoice, env: dict[str, str] | None = None) -> ThreadChoice:
    """Export ``choice`` for this process and its children; set torch's threads when torch is loaded already."""
    env = os.environ if env is None else env  # type: ignore[assignment]
    env["TILTFLOW_THREADS"] = str(choice.count)
    for var in THREAD_VARS:
        env[var] = str(choice.count)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # a user's own setting wins (it is read once, at load)
    if "torch" in sys.modules:
        set_torch_threads()
    return choice


def set_torch_threads() -> int:
    """Give torch's intra-op pool the chosen count (``TILTFLOW_THREADS``, else the allocation)."""
    import torch

    n = choose().count
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def argv_threads(argv: list[str]) -> int | None:
    """The value of a command's ``--threads N`` / ``--threads=N`` in ``argv`` (None when it has none)."""
    for i, arg in enumerate(argv):
        if arg == "--":
            break
        if arg == "--threads" and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith("--threads="):
            value = arg.split("=", 1)[1]
        else:
            continue
        try:
            return int(value)
        except ValueError:
            return None  # the command's own option parsing reports it
    return None


def configure(argv: list[str] | None = None) -> ThreadChoice:
    """Start-up of every command: choose the thread count from ``argv``/environment/scheduler and apply it."""
    argv = sys.argv[1:] if argv is None else argv
    requested = argv_threads(argv)
    return apply(choose(requested if requested and requested > 0 else None))
