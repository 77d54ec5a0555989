"""One rule for a test that needs a program from the machine: in CI (``CI`` set) its absence is a failure,
elsewhere a skip, so that CI can never pass by skipping a peer, a browser or a container engine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import NoReturn

import pytest


def missing(message: str, module_level: bool = False) -> NoReturn:
    """Fail (CI) or skip (a developer's machine) because ``message`` names what is not installed."""
    if os.environ.get("CI"):
        pytest.fail(f"{message} (CI is set: it must be tested)", pytrace=False)
    pytest.skip(message, allow_module_level=module_level)


def chromium() -> str:
    """Headless Chromium from Debian's ``chromium`` package (``make test`` installs it)."""
    exe = next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser")) if p), None)
    if exe is None:
        missing("chromium is not installed (make test installs it)")
    return exe


def run_chromium(exe: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    """Chromium headless with a fresh profile and no network chatter (for a test's page)."""
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-dev-shm-usage", f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)
