"""Fakes of the field's programs we cannot install (CTFFIND, MotionCor2/3, IMOD newstack), in one place.

Each fake replays what the real program printed and wrote in a real run kept in ``tests/data`` (see
PROVENANCE.md there), with only file names substituted, so a wrapper tested against a fake is tested
against the program's real wording, prompt order and output layout. A fake refuses (exit status 64, message
starting ``fake ...: no real transcript``) whatever its transcript does not cover, instead of inventing output.

:func:`install` writes a small launcher into a ``bin`` folder; the launcher runs ``main(**kwargs)`` of the
fake's module with this interpreter.
"""

from __future__ import annotations

import stat
import sys
from pathlib import Path

DATA = Path(__file__).resolve().parent.parent / "data"
#: exit status of a fake asked for something its real transcript does not show
NO_TRANSCRIPT = 64


def install(bin_dir: str | Path, name: str, module: str, **kwargs) -> Path:
    """Write an executable ``bin_dir/name`` that runs ``tests/fakes/<module>.py``'s ``main(**kwargs)``."""
    exe = Path(bin_dir) / name
    exe.parent.mkdir(parents=True, exist_ok=True)
    tests_dir = str(Path(__file__).resolve().parent.parent)
    exe.write_text(
        f"#!{sys.executable}\n"
        "import sys\n"
        f"sys.path.insert(0, {tests_dir!r})\n"
        f"from fakes.{module} import main\n"
        f"sys.exit(main(**{kwargs!r}))\n"
    )
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return exe


def refuse(program: str, what: str) -> int:
    """Say on stderr that the real transcript does not cover ``what``; the status to exit with."""
    sys.stderr.write(f"fake {program}: no real transcript for {what}\n")
    return NO_TRANSCRIPT


def substitute(text: str, names: dict[str, str]) -> str:
    """Replace each real file name in ``text`` by ours, longest first and in one pass (no re-replacing)."""
    import re

    keys = sorted((k for k in names if k), key=len, reverse=True)
    if not keys:
        return text
    pattern = re.compile("|".join(re.escape(k) for k in keys))
    return pattern.sub(lambda m: names[m.group(0)], text)
