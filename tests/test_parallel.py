"""tiltflow.parallel: tilts side by side on the threads a process was given, with results that do not depend on
how many threads ran them.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from builders import motion_series
from tiltflow import parallel, star
from tiltflow.errors import TiltflowError
from tiltflow.steps.common import each_tilt, run_star_step


def _concurrency(workers: int, n: int = 6) -> int:
    """The most calls of a 50 ms task that ran at the same time under ``map_ordered``."""
    lock, active, peak = threading.Lock(), [0], [0]

    def task(i: int) -> int:
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.05)
        with lock:
            active[0] -= 1
        return i * i

    assert parallel.map_ordered(task, range(n), workers) == [i * i for i in range(n)]
    return peak[0]


def test_workers_run_side_by_side_and_results_keep_their_order():
    assert _concurrency(1) == 1
    assert _concurrency(3) == 3


def test_workers_come_from_the_thread_choice_capped_by_tilts_and_one_on_a_gpu(monkeypatch):
    monkeypatch.setenv("TILTFLOW_THREADS", "4")
    assert parallel.workers_for(10) == 4
    assert parallel.workers_for(2) == 2
    assert parallel.workers_for(10, torch.device("cpu")) == 4
    assert parallel.workers_for(10, "cuda:0") == 1


def test_torch_runs_one_thread_per_worker_and_gets_its_threads_back():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for workers in (1, 2):  # one worker too: a tilt's result must not depend on the thread count
            assert parallel.map_ordered(lambda _: torch.get_num_threads(), range(4), workers) == [1, 1, 1, 1]
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert torch.get_num_threads() == before


def test_the_first_failure_in_tilt_order_is_raised_after_the_others_finished():
    done = []

    def task(i: int) -> int:
        if i in (1, 3):
            time.sleep(0.05 if i == 1 else 0.0)  # tilt 3 fails first in time, tilt 1 first in order
            raise TiltflowError(f"tilt {i} is bad")
        done.append(i)
        return i

    with pytest.raises(TiltflowError, match="tilt 1 is bad"):
        parallel.map_ordered(task, range(5), 2)
    assert sorted(done) == [0, 2, 4]


def test_each_tilt_flags_bad_tilts_in_parallel_and_stops_on_a_bug():
    def fit(i: int) -> int:
        if i == 2:
            raise TiltflowError("empty fitting band")
        return 10 * i

    results, problems = each_tilt(list(range(4)), fit, "TS_01", "CTF fit", workers=2)
    assert results == [0, 10, None, 30] and problems == {2: "empty fitting band"}

    def buggy(i: int) -> int:
        if i == 1:
            raise ZeroDivisionError("a bug")
        return i

    with pytest.raises(ZeroDivisionError):
        each_tilt(list(range(4)), buggy, "TS_01", "CTF fit", workers=2)


def test_motion_correction_and_ctf_give_the_same_files_with_one_or_two_threads(tmp_path, monkeypatch):
    """Every tilt is computed with one torch thread whether one or two run at once: the outputs are bit-equal."""
    from tiltflow.steps.ctf import Options as CtfOptions
    from tiltflow.steps.motioncor import Options as McOptions

    s = motion_series(tmp_path, n_tilts=4, shape=(128, 128))
    outs = {}
    for n in (1, 2):
        monkeypatch.setenv("TILTFLOW_THREADS", str(n))
        mc = run_star_step("motioncor", s["star"], f"mc{n}", McOptions(gain=s["gain"], device="cpu"), tmp_path)
        ctf = run_star_step("ctf", mc, f"ctf{n}", CtfOptions(device="cpu", res_max=6.0, png="none"), tmp_path)
        outs[n] = (star.read_tilt_series(mc), star.read_tilt_series(ctf))
    from tiltflow.io.mrc import read_mrc

    for col in (star.MICROGRAPH,):
        for a, b in zip(outs[1][0].tilts[col], outs[2][0].tilts[col], strict=True):
            assert np.array_equal(read_mrc(tmp_path / a)[0], read_mrc(tmp_path / b)[0])
    one, two = outs[1][1].tilts, outs[2][1].tilts
    for col in (star.DEFOCUS_U, star.DEFOCUS_V, star.DEFOCUS_ANGLE, star.CTF_FOM, star.MOTION_TOTAL):
        assert one[col].tolist() == two[col].tolist(), col


def test_work_started_inside_a_worker_gets_one_worker(monkeypatch):
    """A step part run inside a pool thread (a WBP inside a half tomogram) must not start a pool of its own."""
    monkeypatch.setenv("TILTFLOW_THREADS", "2")
    inner = parallel.map_ordered(lambda _: parallel.workers_for(8), range(2), 2)
    assert inner == [1, 1]
    assert parallel.workers_for(8) == 2  # the calling thread is not a worker
