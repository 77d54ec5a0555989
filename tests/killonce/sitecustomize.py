"""A scheduler killing one task mid-write, for tests/test_nextflow_run.py (imported by Python at start-up
when this folder is on PYTHONPATH).

In a ``tiltflow <TILTFLOW_KILL_STEP>`` process, and only while the file ``TILTFLOW_KILL_MARKER`` does not
exist: as soon as the step has written its first per-tilt output (``<step>/*/frames/*``), create the marker
and SIGKILL this process, as SLURM does at a time or memory limit. The task exits 137 with half its outputs
written; Nextflow retries it (conf/base.config) and the retry, finding the marker, runs normally.
"""

import os
import sys

_STEP = os.environ.get("TILTFLOW_KILL_STEP")
_MARKER = os.environ.get("TILTFLOW_KILL_MARKER")

if _STEP and _MARKER and sys.argv[1:2] == [_STEP] and not os.path.exists(_MARKER):
    import glob
    import signal
    import threading
    import time

    def _kill_when_writing() -> None:
        while not glob.glob(os.path.join(_STEP, "*", "frames", "*")):
            time.sleep(0.05)
        try:
            fd = os.open(_MARKER, os.O_CREAT | os.O_EXCL | os.O_WRONLY)  # one kill, even with parallel tasks
        except FileExistsError:
            return
        os.write(fd, os.getcwd().encode())
        os.close(fd)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=_kill_when_writing, daemon=True).start()
