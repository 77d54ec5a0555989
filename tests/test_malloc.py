"""tiltflow.malloc: a large block freed and allocated again is reused, not faulted in from the kernel again."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

PROBE = """
import json, resource, sys
import numpy as np
from tiltflow import malloc
try:  # numpy asks for huge pages on large arrays; count plain 4 KiB pages here
    from numpy._core.multiarray import _set_madvise_hugepage
except ImportError:
    from numpy.core.multiarray import _set_madvise_hugepage
_set_madvise_hugepage(False)
reused = malloc.reuse_freed_memory() if sys.argv[1] == "reuse" else None
a = np.ones(1 << 24)  # 128 MiB, above glibc's largest mmap threshold (32 MiB)
del a
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
a = np.ones(1 << 24)  # the same size again, every page written
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({"reused": reused, "faults": faults}))
"""


def _faults(mode: str) -> dict:
    p = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    return json.loads(p.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_a_freed_large_block_is_reused_without_page_faults():
    default, reuse = _faults("default"), _faults("reuse")
    assert default["faults"] > 10_000  # control: glibc unmapped the block; 128 MiB of 4 KiB pages came back
    assert reuse["reused"] is True
    assert reuse["faults"] < 1_000
