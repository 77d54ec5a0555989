"""CPU seconds of one movie's motion correction against its pixel count (1 thread), to see whether it is linear.

    .venv/bin/python bench/bench_motion_pixels.py                    # 1024^2 and 2048^2, 8 frames
    .venv/bin/python bench/bench_motion_pixels.py --sizes 2048 4096 --frames 10

A movie in memory (a smooth random specimen drifting 0.5 px per frame, Poisson counts at 1 e/px/frame), no
file decoding, so the time is ``motion.correct.correct_movie`` alone (global alignment, summation with dose
weighting and halves, the spectrum thumbnail). Printed: CPU and wall seconds per movie, the kernel's share
of the CPU (page faults of large allocations show there) and the exponent log(CPU ratio) / log(pixel ratio)
between successive sizes (1.0 = linear).
"""

from __future__ import annotations

import argparse
import math
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))


class _Movie:
    """What correct_movie reads: frames of one (n, h, w) uint8 array."""

    def __init__(self, frames: np.ndarray):
        self.frames, self.path = frames, Path("memory.tif")
        self.n_frames, self.shape, self.dtype = len(frames), frames.shape[1:], frames.dtype

    def frame(self, i: int) -> np.ndarray:
        return self.frames[i]


def _movie(size: int, n: int, seed: int = 0) -> _Movie:
    rng = np.random.default_rng(seed)
    k2 = np.add.outer(np.fft.fftfreq(size) ** 2, np.fft.rfftfreq(size) ** 2)
    spec = np.fft.rfft2(rng.standard_normal((size, size))) * np.exp(-2000 * k2)
    ky, kx = np.fft.fftfreq(size)[:, None], np.fft.rfftfreq(size)[None, :]
    frames = np.empty((n, size, size), np.uint8)
    for i in range(n):
        shifted = np.fft.irfft2(spec * np.exp(-2j * np.pi * (kx + ky) * 0.5 * i), s=(size, size))
        frames[i] = rng.poisson(np.clip(1.0 + 0.3 * shifted / shifted.std(), 0, None)).astype(np.uint8)
    return _Movie(frames)


def _cpu() -> tuple[float, float]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048])
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=2, help="runs per size; the lowest CPU time is kept")
    ap.add_argument("--no-reuse", action="store_true", help="leave glibc's malloc as it is (the cost before)")
    a = ap.parse_args(argv)
    import torch

    from tiltflow.motion.correct import Exposure, MotionSettings, correct_movie

    if a.no_reuse:
        print("glibc's default malloc (large blocks mmapped and unmapped per allocation)")
    else:
        from tiltflow import malloc

        print(f"freed large blocks reused (tiltflow.malloc, as every tiltflow command): {malloc.reuse_freed_memory()}")
    torch.set_num_threads(1)
    print(f"{'size':>6}{'CPU s':>8}{'wall s':>8}{'kernel %':>9}{'peak MiB':>9}{'exponent':>9}")
    prev = None
    for size in a.sizes:
        movie = _movie(size, a.frames)
        best = None
        for _ in range(a.repeat):
            (u0, s0), w0 = _cpu(), time.perf_counter()
            correct_movie(movie, pixel_size=1.0, settings=MotionSettings(), exposure=Exposure(0.3, 0.0))
            (u1, s1), w1 = _cpu(), time.perf_counter()
            run = (u1 - u0 + s1 - s0, w1 - w0, s1 - s0)
            best = run if best is None or run[0] < best[0] else best
        cpu, wall, kern = best
        exp = math.log(cpu / prev[1]) / math.log(size**2 / prev[0] ** 2) if prev else float("nan")
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"{size:>6}{cpu:>8.2f}{wall:>8.2f}{100 * kern / cpu:>9.0f}{peak:>9.0f}" + (f"{exp:>9.2f}" if prev else ""),
              flush=True)
        prev = (size, cpu)
    return 0


if __name__ == "__main__":
    sys.exit(main())
