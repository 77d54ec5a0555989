"""A test hook: hold every worker at one chosen moment of one step, so that a test can ``kill -9`` the run
exactly there (tests/test_runner.py) instead of after a guessed sleep.

``TILTFLOW_TEST_HOLD=<step>:<moment>`` and ``TILTFLOW_TEST_HOLD_DIR=<folder>``: a worker that reaches
``<moment>`` of ``<step>`` (for any series) creates ``<folder>/<step folder, "/" as "__">.<moment>`` and
then waits until it is killed. Unset (always, outside tests) it costs one environment lookup.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

HOLD = "TILTFLOW_TEST_HOLD"
HOLD_DIR = "TILTFLOW_TEST_HOLD_DIR"
#: staged: the step finished and its record is written in the staging root, the old folder untouched;
#: promoting: the old folder moved aside, the new one not yet in place (runner/staging.promote);
#: promoted: the new folder in place, the next step not started
MOMENTS = ("staged", "promoting", "promoted")


def hold(moment: str, folder: str) -> None:
    """Block forever if the test asked to hold ``moment`` of the step writing ``folder`` (e.g. ``align/TS_01``)."""
    if os.environ.get(HOLD) != f"{folder.split('/')[0]}:{moment}":
        return
    (Path(os.environ[HOLD_DIR]) / f"{folder.replace('/', '__')}.{moment}").touch()
    threading.Event().wait()  # until the kill; the worker dies with its parent (runner/execute.py)
