"""CPU seconds of one movie's motion correction against its pixel count (1 thread), to see whether it is linear.

    .venv/bin/python bench/bench_motion_pixels.py                    # 1024^2 and 2048^2, 8 frames
    .venv/bin/python bench/bench_motion_pixels.py --sizes 2048 4096 --frames 10
    .venv/bin/python bench/bench_motion_pixels.py --sizes 5760x4092 --frames 10 --malloc default   # K3, before

A movie in memory (a smooth random specimen drifting 0.5 px per frame, Poisson counts at 1 e/px/frame), no
file decoding, so the time is ``motion.correct.correct_movie`` alone (global alignment, summation with dose
weighting and halves, the spectrum thumbnail). Printed: CPU and wall seconds per movie, the kernel's share
of the CPU (page faults of large allocations show there) and the exponent log(CPU ratio) / log(pixel ratio)
between successive sizes (1.0 = linear). ``--malloc`` chooses how large tensors get their memory: huge pages
(what every tiltflow command asks for, ``tiltflow.malloc``) or glibc's default (4 KiB page faults).

Measured (``--sizes 2048 4096 5760x4092 --frames 10``, 1 thread, best of 2, machine shared with a test run;
peak = the process's, cumulative, with the in-memory movies):
    malloc       size        CPU s  kernel %  peak MiB
    default      2048x2048    1.99     31       1209
    default      4096x4096   12.73     49       2495
    default      5760x4092   16.56     55       3203
    huge pages   2048x2048    1.45     13       1274
    huge pages   4096x4096   10.07     37       2573
    huge pages   5760x4092   11.89     41       3445
What remains in the kernel is mostly zeroing fresh pages (perf: ``clear_page_erms``, 28 % at 4096^2); the
torch profiler puts most fresh memory in ``nonzero`` (2.5 GB over 10 frames: the hot-pixel mask indexing), the
next thing to remove.
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


def _shape(text: str) -> tuple[int, int]:
    """``N`` or ``WxH`` -> (h, w)."""
    w, _, h = text.lower().partition("x")
    return int(h or w), int(w)


def _movie(shape: tuple[int, int], n: int, seed: int = 0) -> _Movie:
    rng = np.random.default_rng(seed)
    h, w = shape
    k2 = np.add.outer(np.fft.fftfreq(h) ** 2, np.fft.rfftfreq(w) ** 2)
    spec = np.fft.rfft2(rng.standard_normal(shape)) * np.exp(-2000 * k2)
    ky, kx = np.fft.fftfreq(h)[:, None], np.fft.rfftfreq(w)[None, :]
    frames = np.empty((n, h, w), np.uint8)
    for i in range(n):
        shifted = np.fft.irfft2(spec * np.exp(-2j * np.pi * (kx + ky) * 0.5 * i), s=shape)
        frames[i] = rng.poisson(np.clip(1.0 + 0.3 * shifted / shifted.std(), 0, None)).astype(np.uint8)
    return _Movie(frames)


def _cpu() -> tuple[float, float]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=_shape, nargs="+", default=[(1024, 1024), (2048, 2048)], help="N or WxH each")
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=2, help="runs per size; the lowest CPU time is kept")
    ap.add_argument("--malloc", choices=("huge-pages", "default"), default="huge-pages",
                    help="huge pages for large tensors (as every tiltflow command) or glibc's default")
    a = ap.parse_args(argv)
    from tiltflow import malloc

    if a.malloc == "default":
        print("glibc's default malloc (large blocks mmapped and faulted in 4 KiB at a time per allocation)")
    else:
        print(f"huge pages for large tensors (tiltflow.malloc, as every tiltflow command): {malloc.use_huge_pages()}")
    import torch

    from tiltflow.motion.correct import Exposure, MotionSettings, correct_movie

    torch.set_num_threads(1)
    print(f"{'size':>10}{'CPU s':>8}{'wall s':>8}{'kernel %':>9}{'peak MiB':>9}{'exponent':>9}")
    prev = None
    for shape in a.sizes:
        movie = _movie(shape, a.frames)
        size = math.sqrt(shape[0] * shape[1])
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
        print(f"{shape[1]:>5}x{shape[0]:<4}{cpu:>8.2f}{wall:>8.2f}{100 * kern / cpu:>9.0f}{peak:>9.0f}" + (f"{exp:>9.2f}" if prev else ""),
              flush=True)
        prev = (size, cpu)
    return 0


if __name__ == "__main__":
    sys.exit(main())
