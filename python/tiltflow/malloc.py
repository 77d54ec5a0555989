"""Keep freed large blocks for reuse (glibc): per-frame work on 4k images stops paying for page faults.

glibc serves every allocation above its mmap threshold (at most 32 MiB) with a fresh ``mmap`` and returns it
with ``munmap`` when freed, so each full-size tensor of a 4k frame (64-130 MiB) is faulted in and zeroed by
the kernel again: motion correction spent 43 % of its CPU in the kernel on 2k movies and grew faster than
the pixel count (``bench/bench_motion_pixels.py``). With mmap off for malloc and a high trim threshold, a freed
block stays in the heap and the next frame's tensor reuses it (2k movie: 3.3 -> 1.9 CPU s, kernel 43 -> 21 %).
The peak is unchanged; the process keeps its peak until it exits (every step is a process of its own).
No-op where the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util

#: glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
TRIM_THRESHOLD = 1 << 30  # bytes free at the top of the heap before it is given back


def reuse_freed_memory() -> bool:
    """Tell glibc's malloc to keep large freed blocks; True when it accepted (glibc), False elsewhere."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
