"""Write-then-rename helpers: an interrupted step never leaves a half-written output.

Every file tiltflow writes goes through :func:`atomic_path`: the content is written to a
temporary name in the same directory and renamed over the target only when complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tiltflow.errors import write_problem


@contextlib.contextmanager
def atomic_path(target: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; rename it onto ``target`` on success.

    The temporary name keeps the target's suffix (``suffix`` overrides it) so that libraries
    choosing a format from the extension (mrcfile, tifffile, matplotlib) still work.
    """
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        sfx = target.suffix if suffix is None else suffix
        fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=f".part{sfx}", dir=target.parent)
        os.close(fd)
    except OSError as exc:
        raise write_problem(exc, target) or exc from None
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates 0600 files; give outputs the usual permissions (0666 less the umask)
        os.chmod(tmp_path, 0o666 & ~_UMASK)
        os.replace(tmp_path, target)
    except OSError as exc:  # a full disk: name the file being written, not the temporary one
        raise write_problem(exc, target) or exc from None
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_fresh_path(target: str | Path) -> Iterator[Path]:
    """Like :func:`atomic_path`, but the yielded path does not exist yet: for external programs.

    IMOD renames an output that already exists to ``name~`` before writing (``imodBackupFile``,
    ``libcfshr/b3dutil.c``), so a pre-created temporary file would leave a ``.name.part.mrc~`` behind. The
    path is ``target``'s name inside a new hidden folder next to it; the folder goes, whatever happens.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f".{target.stem}.", suffix=".part", dir=target.parent))
    tmp_path = folder / target.name
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_UMASK)
        os.replace(tmp_path, target)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: read once, at import: reading the umask means setting it, and tilts written by parallel threads
#: (:mod:`tiltflow.parallel`) must never create a file or folder under the momentary 0
_UMASK = _read_umask()



def write_text(target: str | Path, text: str) -> Path:
    """Atomically write ``text`` to ``target``."""
    with atomic_path(target) as tmp:
        tmp.write_text(text)
    return Path(target)


def write_json(target: str | Path, data: Any) -> Path:
    """Atomically write ``data`` as indented JSON."""
    return write_text(target, json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def clean_partials(directory: str | Path) -> int:
    """Remove temporary files and folders left by a killed run (``.name.*.part*``); return how many."""
    n = 0
    directory = Path(directory)
    if not directory.exists():
        return 0
    for p in sorted(directory.rglob(".*.part*"), reverse=True):  # deepest first
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
            n += 1
        elif p.exists():
            p.unlink()
            n += 1
    return n
