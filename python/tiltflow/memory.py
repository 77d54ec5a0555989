"""How much memory a tiltflow process may use: the one place that decides it (as :mod:`tiltflow.threads` for CPUs).

Why: a built-in step runs its tilts side by side (:mod:`tiltflow.parallel`), and each worker holds a movie's
frames; two workers on a K3 series held 4.7 GB where one held 2.8. A scheduler kills a job that goes over
its allocation (Slurm's ``--mem``, a container's limit) and a workstation swaps, so the workers are capped by
the memory this process may use, not only by its threads.

Order: ``TILTFLOW_MEMORY_GB`` (GiB, as Nextflow's ``task.memory.toGiga()`` and Slurm count; the modules set it
from ``task.memory``), else the smallest of what the scheduler and the machine allow: the cgroup memory limit
(v2 ``memory.max``, v1 ``memory.limit_in_bytes``: Slurm's cgroups, podman/apptainer limits), Slurm's
``SLURM_MEM_PER_NODE`` / ``SLURM_MEM_PER_CPU`` (MiB) and, on any machine, what this process holds now plus
the kernel's ``MemAvailable`` (memory it can take without swapping, /proc/meminfo; kernel's proc.rst).
"""

from __future__ import annotations

import os
import resource
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tiltflow.errors import TiltflowError
from tiltflow.threads import cgroup_files

GIB = 1 << 30
_NO_LIMIT = 1 << 60  # cgroup v1 writes "no limit" as a number near 2^63


@dataclass(frozen=True)
class MemoryChoice:
    """The bytes this process may hold in all and where the figure came from (for logs: ``4.0 GiB (cgroup)``)."""

    total: int
    source: str

    def __str__(self) -> str:
        return f"{self.total / GIB:.1f} GiB ({self.source})"


def cgroup_limit(root: Path = Path("/sys/fs/cgroup"), proc_cgroup: Path = Path("/proc/self/cgroup")) -> int | None:
    """The cgroup memory limit of this process in bytes (v2 ``memory.max``, v1 ``memory.limit_in_bytes``); None = none."""
    for path in cgroup_files("memory.max", "memory", "memory.limit_in_bytes", root, proc_cgroup):
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text == "max":
            return None
        try:
            value = int(text)
        except ValueError:
            continue
        return value if 0 < value < _NO_LIMIT else None
    return None


def mem_available(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    """The kernel's estimate of memory available without swapping (``MemAvailable``, kB in the file)."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def resident() -> int:
    """What this process holds now (bytes resident; /proc/self/statm, else the peak so far)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _mib(env: Mapping[str, str], name: str) -> int | None:
    value = env.get(name, "").strip()
    if not value:
        return None
    try:
        n = int(value.rstrip("Mm"))  # Slurm exports MiB as a number ("4096"); older ones may append "M"
    except ValueError:
        return None
    return n * (1 << 20) if n > 0 else None


def slurm_limit(env: Mapping[str, str]) -> int | None:
    """Slurm's allocation: ``SLURM_MEM_PER_NODE``, else ``SLURM_MEM_PER_CPU`` x the task's CPUs (sbatch(1))."""
    per_node = _mib(env, "SLURM_MEM_PER_NODE")
    if per_node is not None:
        return per_node
    per_cpu = _mib(env, "SLURM_MEM_PER_CPU")
    if per_cpu is None:
        return None
    try:
        cpus = max(1, int(env.get("SLURM_CPUS_PER_TASK", "1")))
    except ValueError:
        cpus = 1
    return per_cpu * cpus


def allowed(env: Mapping[str, str] | None = None) -> MemoryChoice:
    """``TILTFLOW_MEMORY_GB``, else the smallest of the cgroup limit, Slurm's allocation and held + available."""
    env = os.environ if env is None else env
    value = env.get("TILTFLOW_MEMORY_GB", "").strip()
    if value:
        try:
            gb = float(value)
        except ValueError:
            raise TiltflowError(f"TILTFLOW_MEMORY_GB={value!r} is not a number of GiB") from None
        if not gb > 0:
            raise TiltflowError(f"TILTFLOW_MEMORY_GB={value!r}: the memory must be more than 0")
        return MemoryChoice(int(gb * GIB), "TILTFLOW_MEMORY_GB")
    found: list[MemoryChoice] = []
    limit = cgroup_limit()
    if limit is not None:
        found.append(MemoryChoice(limit, "cgroup memory limit"))
    limit = slurm_limit(env)
    if limit is not None:
        found.append(MemoryChoice(limit, "Slurm"))
    free = mem_available()
    if free is not None:
        found.append(MemoryChoice(resident() + free, "held + MemAvailable"))
    if not found:  # no way to tell: assume the 4 GB the built-in steps are sized for
        return MemoryChoice(4 * GIB, "default")
    return min(found, key=lambda c: c.total)


def headroom(env: Mapping[str, str] | None = None) -> int:
    """Bytes this process may still take on top of what it holds now (never below 0)."""
    return max(0, allowed(env).total - resident())
