"""The typer options of a step command, built from the step's ``Options`` fields (one source for every
default and help text; ``tests/test_option_defaults.py`` compares them with the runner and Nextflow).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from tiltflow.steps.common import cli_flag, default_of, option_fields


def option(options_cls: type, name: str) -> Any:
    """``typer.Option`` for field ``name`` of ``options_cls``: its default, ``--name`` (or the field's own
    flag), its help and limits.
    """
    f = option_fields(options_cls)[name]
    meta = f.metadata
    default = default_of(f)
    flag = meta["flag"] or (f"{cli_flag(name)}/--no-{name.replace('_', '-')}" if isinstance(default, bool)
                            else cli_flag(name))
    return typer.Option(default, flag, help=meta["help"], **meta["limits"])


def root_option() -> Any:
    """``--root``: the project root of a step command."""
    return typer.Option(None, "--root", help="Project root: paths in STAR files and relative paths given here are "
                                             "relative to it (default: the current folder).")


def project_root(root: Path | None) -> Path:
    """The project root of a step command: ``--root``, else the folder it was started in, taken once here
    (the library never looks at the working directory).
    """
    return (root if root is not None else Path.cwd()).absolute()


def shown(path: Path, root: Path) -> str:
    """A written file as the command prints it: relative to the project root when inside it."""
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def build(options_cls: type, values: dict[str, Any]) -> Any:
    """``options_cls`` from a command's parameters (``locals()``): the names are the same by construction."""
    names = option_fields(options_cls)
    return options_cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in values.items() if k in names})
