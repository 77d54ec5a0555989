"""One rule for a test that needs a program from the machine: in CI (``CI`` set) its absence is a failure,
elsewhere a skip, so that CI can never pass by skipping a peer, a browser or a container engine."""

from __future__ import annotations

import os

import pytest


def missing(message: str, module_level: bool = False) -> None:
    """Fail (CI) or skip (a developer's machine) because ``message`` names what is not installed."""
    if os.environ.get("CI"):
        pytest.fail(f"{message} (CI is set: it must be tested)", pytrace=False)
    pytest.skip(message, allow_module_level=module_level)
