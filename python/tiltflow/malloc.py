"""Large tensors on huge pages: per-frame work on 4k and K3 images stops paying for page faults.

glibc serves every allocation above its mmap threshold (at most 32 MiB) with a fresh ``mmap`` and returns it
with ``munmap`` when freed, so each full-size tensor of a 4k frame (64-130 MiB) is faulted in again, 4 KiB at
a time: motion correction spent 31-55 % of its CPU in the kernel on 2k to K3 movies. torch's own switch
``THP_MEM_ALLOC_ENABLE`` (c10/core/impl/alloc_cpu.cpp) aligns allocations of 2 MiB and more and asks the kernel
for transparent huge pages (``madvise(MADV_HUGEPAGE)``): a 128 MiB tensor took 619 faults instead of 32812
(``tests/test_malloc.py``), and the memory still goes back to the system when freed.

Measured, one K3 movie (5760x4092, 10 frames, 1 thread; ``bench/bench_motion_pixels.py --sizes 5760x4092
--frames 10 --malloc default|huge-pages``): 16.6 -> 11.9 CPU s, kernel 55 -> 41 %. The earlier way (glibc told
to keep freed blocks, mmap off) was as fast but fragmented the heap: ``tiltflow motioncor`` on a simulated
3-tilt K3 series peaked at 4.8 GiB (ru_maxrss), and 5.7 GiB with the same code in one Python process, against
2.6-2.8 GiB with glibc's default or huge pages: over the 4 GB a K3 series must stay under.
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping
from pathlib import Path

#: torch's environment switch (read once, at its first large allocation)
TORCH_THP = "THP_MEM_ALLOC_ENABLE"
THP_MODE = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def kernel_offers_huge_pages(mode_file: Path = THP_MODE) -> bool:
    """Whether the kernel gives transparent huge pages to a region that asks (mode ``always`` or ``madvise``)."""
    try:
        text = mode_file.read_text()
    except OSError:
        return False
    chosen = text[text.find("[") + 1:text.find("]")] if "[" in text else text.strip()
    return chosen in ("always", "madvise")


def use_huge_pages(env: MutableMapping[str, str] = os.environ, mode_file: Path = THP_MODE) -> bool:
    """Ask torch for huge pages on large tensors (before torch is imported); True when it will.

    A value the user set is kept (``THP_MEM_ALLOC_ENABLE=0`` turns it off); nothing is set where the kernel
    has no huge pages to give, or once torch is loaded (too late to take effect).
    """
    if TORCH_THP in env:
        return env[TORCH_THP] not in ("", "0")
    if "torch" in sys.modules or not kernel_offers_huge_pages(mode_file):
        return False
    env[TORCH_THP] = "1"
    return True
