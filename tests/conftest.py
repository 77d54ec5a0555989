"""Fixtures shared by several test files."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def one_torch_thread():
    """Two cores shared by many test runs: one torch thread is faster than contended OpenMP threads."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def _restore_thread_env():
    """``cli.main`` exports the thread choice (tiltflow.threads.apply) into os.environ: undo it after each test."""
    import os

    names = ("TILTFLOW_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_WAIT_POLICY")
    saved = {n: os.environ.get(n) for n in names}
    yield
    for n, v in saved.items():
        if v is None:
            os.environ.pop(n, None)
        else:
            os.environ[n] = v


@pytest.fixture(autouse=True)
def _restore_tiltflow_logger():
    """``cli.main`` run in-process attaches a console handler to the then-current (captured) stderr; once pytest
    closes that stream, a later test's log record would print a logging traceback. Undo it after each test.
    """
    import logging

    logger = logging.getLogger("tiltflow")
    handlers, level, propagate = list(logger.handlers), logger.level, logger.propagate
    yield
    for h in list(logger.handlers):
        if h not in handlers:
            logger.removeHandler(h)
    logger.setLevel(level)
    logger.propagate = propagate


@pytest.fixture(autouse=True)
def _nothing_written_into_the_checkout():
    """A test writes only under its tmp_path: a step command given a relative --outdir without --root writes
    into the working directory, which is the checkout when pytest runs from it. Fail the test that does.
    """
    from pathlib import Path

    here = Path.cwd()
    before = {p.name for p in here.iterdir()}
    yield
    # test-artifacts/ is the one folder tests keep on purpose (the report's screenshot, git-ignored)
    new = sorted({p.name for p in here.iterdir()} - before - {"test-artifacts"})
    assert not new, f"the test wrote {new} into {here} (give the step --root or an absolute --outdir)"
