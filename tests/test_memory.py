"""tiltflow.memory: the memory a process may use (cgroup, Slurm, MemAvailable, TILTFLOW_MEMORY_GB), and the
cap it puts on tilts at a time, which must not change a result.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

from builders import motion_series
from tiltflow import memory, parallel, star
from tiltflow.errors import TiltflowError
from tiltflow.io.mrc import read_mrc
from tiltflow.steps.common import run_star_step

GIB = 1 << 30


def _cgroup(tmp_path, lines: str, files: dict[str, str]):
    proc = tmp_path / "proc_cgroup"
    proc.write_text(lines)
    for rel, text in files.items():
        (tmp_path / "cg" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "cg" / rel).write_text(text)
    return tmp_path / "cg", proc


def test_cgroup_v2_memory_max_of_own_cgroup(tmp_path):
    """memory.max holds bytes or "max" (kernel's cgroup-v2.rst)."""
    root, proc = _cgroup(tmp_path, "0::/slurm/job_7\n", {"slurm/job_7/memory.max": "4294967296\n"})
    assert memory.cgroup_limit(root, proc) == 4 * GIB
    (root / "slurm/job_7/memory.max").write_text("max\n")
    assert memory.cgroup_limit(root, proc) is None


def test_cgroup_v1_limit_and_its_no_limit_number(tmp_path):
    """v1 writes "no limit" as 9223372036854771712 (what this kind of machine reports): no limit."""
    lines = "5:cpu,cpuacct:/\n4:memory:/process_api/abc\n0::/\n"
    root, proc = _cgroup(tmp_path, lines, {"memory/process_api/abc/memory.limit_in_bytes": "9223372036854771712"})
    assert memory.cgroup_limit(root, proc) is None
    (root / "memory/process_api/abc/memory.limit_in_bytes").write_text("2147483648\n")
    assert memory.cgroup_limit(root, proc) == 2 * GIB


def test_mem_available_is_read_in_kib(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24576000 kB\nMemFree:  100 kB\nMemAvailable:    1048576 kB\n")
    assert memory.mem_available(meminfo) == GIB
    assert memory.mem_available(tmp_path / "absent") is None


def test_slurm_memory_per_node_or_per_cpu_times_cpus():
    """sbatch(1): SLURM_MEM_PER_NODE / SLURM_MEM_PER_CPU are MiB; per CPU counts the task's CPUs."""
    assert memory.slurm_limit({"SLURM_MEM_PER_NODE": "8192"}) == 8 * GIB
    assert memory.slurm_limit({"SLURM_MEM_PER_CPU": "2048", "SLURM_CPUS_PER_TASK": "3"}) == 6 * GIB
    assert memory.slurm_limit({"SLURM_MEM_PER_CPU": "2048"}) == 2 * GIB
    assert memory.slurm_limit({}) is None


def test_the_smallest_source_wins_and_the_users_value_overrides_them(monkeypatch):
    monkeypatch.setattr(memory, "cgroup_limit", lambda: 6 * GIB)
    monkeypatch.setattr(memory, "mem_available", lambda: 10 * GIB)
    monkeypatch.setattr(memory, "resident", lambda: 1 * GIB)
    assert memory.allowed({}) == memory.MemoryChoice(6 * GIB, "cgroup memory limit")
    assert memory.allowed({"SLURM_MEM_PER_NODE": "4096"}) == memory.MemoryChoice(4 * GIB, "Slurm")
    monkeypatch.setattr(memory, "cgroup_limit", lambda: None)
    assert memory.allowed({}) == memory.MemoryChoice(11 * GIB, "held + MemAvailable")
    assert memory.allowed({"TILTFLOW_MEMORY_GB": "2.5", "SLURM_MEM_PER_NODE": "1024"}).total == int(2.5 * GIB)
    assert memory.headroom({"TILTFLOW_MEMORY_GB": "0.5"}) == 0  # never below 0
    for bad in ("lots", "0", "-1"):
        with pytest.raises(TiltflowError, match="TILTFLOW_MEMORY_GB"):
            memory.allowed({"TILTFLOW_MEMORY_GB": bad})


def test_workers_are_capped_by_what_fits_but_one_always_runs(monkeypatch, caplog):
    monkeypatch.setenv("TILTFLOW_THREADS", "4")
    monkeypatch.setattr(memory, "headroom", lambda env=None: 5 * GIB)
    assert parallel.workers_for(10, item_bytes=1 * GIB) == 4
    with caplog.at_level(logging.INFO, logger="tiltflow.parallel"):
        assert parallel.workers_for(10, item_bytes=2 * GIB) == 2
    assert "2 tilts at a time, not 4" in caplog.text
    assert parallel.workers_for(10, item_bytes=8 * GIB) == 1
    assert parallel.workers_for(10) == 4  # a step that does not say what a tilt holds is not capped


def test_a_tight_memory_limit_runs_one_movie_at_a_time_without_its_frames_cached_same_images(
        tmp_path, monkeypatch, caplog):
    """Two threads, room for both movies and their frames vs. room for one movie and no frames: the same files."""
    from tiltflow.steps.motioncor import Options as McOptions

    s = motion_series(tmp_path, n_tilts=3, shape=(128, 128))
    monkeypatch.setenv("TILTFLOW_THREADS", "2")
    images = {}
    for name, gb in (("roomy", "64"), ("tight", "0.001")):
        monkeypatch.setenv("TILTFLOW_MEMORY_GB", gb)
        caplog.clear()
        with caplog.at_level(logging.INFO):
            mc = run_star_step("motioncor", s["star"], name, McOptions(gain=s["gain"], device="cpu"), tmp_path)
        plan = [r.getMessage() for r in caplog.records if "tilts at a time;" in r.getMessage()]
        assert plan, caplog.text
        if name == "roomy":
            assert plan[0].startswith("2 tilts at a time; 4.0 GB per movie"), plan
        else:
            assert plan[0].startswith("1 tilts at a time; 0.0 GB per movie"), plan
        ts = star.read_tilt_series(mc)
        images[name] = [read_mrc(tmp_path / p)[0] for p in ts.tilts[star.MICROGRAPH]]
        logs = sorted((tmp_path / name).rglob("*.log"))
        kept = {p.read_text().split("kept in memory: ")[1].split("\n")[0] for p in logs if p.parent.name == "frames"}
        assert kept == ({"8 of 8"} if name == "roomy" else {"0 of 8"})
    for a, b in zip(images["roomy"], images["tight"], strict=True):
        assert np.array_equal(a, b)
