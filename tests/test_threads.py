"""tiltflow.threads: the thread count comes from --threads, TILTFLOW_THREADS or the scheduler, never cpu_count."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tiltflow import threads
from tiltflow.errors import TiltflowError


@pytest.fixture
def machine(monkeypatch, tmp_path):
    """A 64-core node with no scheduler variables, affinity of 64 CPUs and no cgroup quota."""
    for var in ("TILTFLOW_THREADS", "SLURM_CPUS_PER_TASK", "NSLOTS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    monkeypatch.setattr(threads, "cgroup_cpus", lambda: None)
    return tmp_path


def test_order_threads_option_then_env_then_scheduler(machine, monkeypatch):
    assert threads.choose() == threads.ThreadChoice(64, "CPU affinity")
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "8")
    assert threads.choose() == threads.ThreadChoice(8, "SLURM_CPUS_PER_TASK")
    monkeypatch.setenv("TILTFLOW_THREADS", "3")
    assert threads.choose() == threads.ThreadChoice(3, "TILTFLOW_THREADS")
    assert threads.choose(5) == threads.ThreadChoice(5, "--threads")


def test_smallest_allocation_wins(machine, monkeypatch):
    """Slurm says 8 but the job is pinned to 2 CPUs (or its cgroup allows 2.5): never more than those."""
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "8")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert threads.choose() == threads.ThreadChoice(2, "CPU affinity")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    monkeypatch.setattr(threads, "cgroup_cpus", lambda: 3)
    assert threads.choose() == threads.ThreadChoice(3, "cgroup CPU quota")
    monkeypatch.delenv("SLURM_CPUS_PER_TASK")
    monkeypatch.setenv("NSLOTS", "2")  # SGE
    assert threads.choose() == threads.ThreadChoice(2, "NSLOTS")


def test_no_affinity_api_is_one_thread_not_cpu_count(machine, monkeypatch):
    monkeypatch.delattr(os, "sched_getaffinity")
    assert threads.choose() == threads.ThreadChoice(1, "default")


@pytest.mark.parametrize("bad", ["0", "-2", "two"])
def test_bad_env_value_is_one_line_error(machine, monkeypatch, bad):
    monkeypatch.setenv("TILTFLOW_THREADS", bad)
    with pytest.raises(TiltflowError, match="TILTFLOW_THREADS"):
        threads.choose()


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v2_quota_of_own_cgroup(tmp_path):
    """cpu.max "250000 100000" = 2.5 CPUs -> 3 threads; "max" = no quota (kernel's cgroup-v2.rst format)."""
    proc = tmp_path / "proc_cgroup"
    _write(proc, "0::/slurm/job_7\n")
    _write(tmp_path / "cg/slurm/job_7/cpu.max", "250000 100000\n")
    _write(tmp_path / "cg/cpu.max", "max 100000\n")
    assert threads.cgroup_cpus(tmp_path / "cg", proc) == 3
    _write(tmp_path / "cg/slurm/job_7/cpu.max", "max 100000\n")
    assert threads.cgroup_cpus(tmp_path / "cg", proc) is None


def test_cgroup_v1_quota(tmp_path):
    proc = tmp_path / "proc_cgroup"
    _write(proc, "4:cpu,cpuacct:/docker/abc\n3:memory:/docker/abc\n")
    _write(tmp_path / "cg/cpu,cpuacct/docker/abc/cpu.cfs_quota_us", "200000\n")
    _write(tmp_path / "cg/cpu,cpuacct/docker/abc/cpu.cfs_period_us", "100000\n")
    assert threads.cgroup_cpus(tmp_path / "cg", proc) == 2
    _write(tmp_path / "cg/cpu,cpuacct/docker/abc/cpu.cfs_quota_us", "-1\n")
    assert threads.cgroup_cpus(tmp_path / "cg", proc) is None
    assert threads.cgroup_cpus(tmp_path / "nothing", tmp_path / "missing") is None


def test_apply_exports_for_children_and_passive_wait(machine):
    env: dict[str, str] = {}
    threads.apply(threads.ThreadChoice(2, "--threads"), env)
    assert env == {"TILTFLOW_THREADS": "2", "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2",
                   "OPENBLAS_NUM_THREADS": "2", "OMP_WAIT_POLICY": "PASSIVE"}
    env = {"OMP_WAIT_POLICY": "ACTIVE"}
    threads.apply(threads.ThreadChoice(1, "--threads"), env)
    assert env["OMP_WAIT_POLICY"] == "ACTIVE"  # the user's own choice is kept


@pytest.mark.parametrize("argv, expected", [
    (["simulate", "out", "--threads", "3"], 3), (["simulate", "--threads=2", "out"], 2),
    (["motioncor", "in.star"], None), (["run", "s", "--", "--threads", "4"], None),
])
def test_threads_option_found_in_argv(argv, expected):
    assert threads.argv_threads(argv) == expected


def test_cli_process_has_the_allocation_before_torch_loads(tmp_path):
    """A command started with TILTFLOW_THREADS=1 on a 2-CPU affinity mask: torch and OpenMP see 1 thread, passive."""
    code = ("import os, sys; from tiltflow import cli; from tiltflow.device import get_device;"
            "sys.argv=['tiltflow','version']; rc=cli.main(['version']); import torch; get_device('cpu');"
            "print(torch.get_num_threads(), os.environ['OMP_NUM_THREADS'], os.environ['OMP_WAIT_POLICY'])")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "MKL_", "OPENBLAS_"))}
    env["TILTFLOW_THREADS"] = "1"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split()[-3:] == ["1", "1", "PASSIVE"]
