"""tiltflow.malloc: large torch tensors come on huge pages (far fewer page faults), freed memory goes back."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tiltflow import malloc

PROBE = """
import json, resource, sys
from tiltflow import malloc
on = malloc.use_huge_pages() if sys.argv[1] == "huge" else None
import torch
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
a = torch.ones(1 << 25)  # 128 MiB, every page written
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
rss = lambda: int(open("/proc/self/statm").read().split()[1])
with_a = rss()
del a
print(json.dumps({"on": on, "faults": faults, "freed_pages": with_a - rss()}))
"""


def _probe(mode: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != malloc.TORCH_THP}
    p = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=120, env=env)
    assert p.returncode == 0, p.stderr[-2000:]
    return json.loads(p.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="transparent huge pages are Linux's")
def test_large_tensors_fault_in_huge_pages_where_the_kernel_offers_them():
    default, huge = _probe("default"), _probe("huge")
    assert default["faults"] > 10_000  # control: 128 MiB of 4 KiB pages faulted in one by one
    assert huge["on"] is malloc.kernel_offers_huge_pages()
    if huge["on"]:
        assert huge["faults"] < default["faults"] / 20
    else:  # nothing changed where the kernel has none to give
        assert huge["faults"] > 10_000
    for run in (default, huge):  # either way the freed tensor's memory goes back to the system
        assert run["freed_pages"] > (1 << 27) // 4096 * 0.9


def test_the_kernel_mode_and_the_users_choice(tmp_path, monkeypatch):
    mode = tmp_path / "enabled"
    for text, offered in (("always [madvise] never\n", True), ("[always] madvise never\n", True),
                          ("always madvise [never]\n", False)):
        mode.write_text(text)
        assert malloc.kernel_offers_huge_pages(mode) is offered
    assert malloc.kernel_offers_huge_pages(tmp_path / "absent") is False
    mode.write_text("always [madvise] never\n")
    assert malloc.use_huge_pages({malloc.TORCH_THP: "0"}, mode) is False  # the user's 0 is kept
    monkeypatch.setitem(sys.modules, "torch", object())
    env: dict[str, str] = {}
    assert malloc.use_huge_pages(env, mode) is False and env == {}  # too late once torch is loaded
    monkeypatch.delitem(sys.modules, "torch")
    assert malloc.use_huge_pages(env, mode) is True and env == {malloc.TORCH_THP: "1"}
    mode.write_text("always madvise [never]\n")
    env = {}
    assert malloc.use_huge_pages(env, mode) is False and env == {}
