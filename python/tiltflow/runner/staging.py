"""Step folders are replaced whole: a step builds its outputs beside the old ones and they change places
only when the new ones are complete, the same write-then-rename rule as for single files (atomic.py).

Why: a rerun that fails (a typo in an option, a full disk, Ctrl-C) must keep the previous good result,
and the RELION export and the report must never point at files that are gone.

How: the step runs in a staging project root ``<root>/.tiltflow-staging/<id>/`` that holds hard links to
the files of the folders it reads (``import/``, ``gain/``, its upstream step folders), so every relative
path a step resolves or writes (``motioncor/TS_01/x.mrc``, ``../../motioncor/...`` in a filelist) is the
same as in the real root. Its logs are hard links too: a failed attempt's messages land in the real
``console.log``/``error.log``. When the step has finished and its record is written, :func:`promote` moves
the old folder aside, the new one in, and removes the old one; :func:`recover` (at the start of every run)
finishes or undoes a promotion that a ``kill -9`` cut in two, and removes the staging area.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from tiltflow.runner import testhold

STAGING = ".tiltflow-staging"
OLD = ".tiltflow-old"  # suffix of a folder being replaced: .<name>.tiltflow-old next to it
LOGS = ("console.log", "error.log")


def staging_root(root: Path, folder: str) -> Path:
    """A fresh, empty staging project root for the step writing ``folder`` (e.g. ``ctf/TS_01``)."""
    base = root / STAGING / folder.replace("/", "__")
    if base.exists():
        shutil.rmtree(base)
    base.mkdir(parents=True)
    return base


def _link_tree(src: Path, dst: Path) -> None:
    """Hard-link every file under ``src`` to the same place under ``dst`` (a copy where links fail)."""
    if not src.exists():
        return
    if src.is_file():
        dst.parent.mkdir(parents=True, exist_ok=True)
        _link(src, dst)
        return
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames[:] = [d for d in dirnames if not d.endswith(OLD)]
        here = dst / Path(dirpath).relative_to(src)
        here.mkdir(parents=True, exist_ok=True)
        for f in filenames:
            _link(Path(dirpath) / f, here / f)


def _link(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # a file system without hard links
        shutil.copy2(src, dst)


def prepare(root: Path, folder: str, reads: Iterable[str], reads_all: bool = False) -> Path:
    """The staging root for ``folder``: the folders in ``reads`` (all top-level ones with ``reads_all``)
    linked in, and the real folder's logs linked into the new folder so that both attempts append to them.
    """
    stage = staging_root(root, folder)
    names = ([p.name for p in root.iterdir() if not p.name.startswith(".") and p.name != folder.split("/")[0]]
             if reads_all else list(reads))
    for rel in sorted(set(names)):
        if rel != folder:
            _link_tree(root / rel, stage / rel)
    out = stage / folder
    out.mkdir(parents=True, exist_ok=True)
    real = root / folder
    real.mkdir(parents=True, exist_ok=True)
    for log in LOGS:
        (real / log).touch()
        _link(real / log, out / log)
    return stage


def promote(root: Path, stage: Path, folder: str) -> None:
    """Put the finished ``stage/folder`` in place of ``root/folder`` (the old one goes only after that)."""
    real = root / folder
    old = real.with_name(f".{real.name}{OLD}")
    if old.exists():
        shutil.rmtree(old)
    if real.exists():
        os.replace(real, old)
    testhold.hold("promoting", folder)
    os.replace(stage / folder, real)  # a kill between the two replaces is undone by recover()
    if old.exists():
        shutil.rmtree(old)
    discard(stage)


def discard(stage: Path) -> None:
    """Remove a staging root (a failed or interrupted attempt); the real folder is untouched."""
    shutil.rmtree(stage, ignore_errors=True)  # the staging area itself goes at the end of the run (recover)


def recover(root: Path) -> int:
    """After a killed run: finish or undo a cut promotion, drop the staging area; return what was fixed."""
    n = 0
    for old in list(root.glob(f".*{OLD}")) + list(root.glob(f"*/.*{OLD}")):
        real = old.with_name(old.name[1:-len(OLD)])
        if real.exists():
            shutil.rmtree(old)  # the new folder was already in place
        else:
            os.replace(old, real)  # killed between the two replaces: the previous result comes back
        n += 1
    if (root / STAGING).exists():
        n += sum(1 for _ in (root / STAGING).iterdir())
        shutil.rmtree(root / STAGING)
    return n
