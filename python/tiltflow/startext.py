"""STAR text: values quoted so that RELION reads them back, and a reader that tokenises as RELION does.

Why not the ``starfile`` package for this: its loop reader turns every ``'`` into ``"`` before splitting
(so ``"a 'q' b"`` falls apart) and its writer quotes only values with a space. The rules here follow
RELION 5's reader (``src/strings.cpp``: ``simplify`` then ``nextTokenInSTAR``; ``src/metadata_table.cpp``
``readStarLoop``): tokens are separated by spaces or tabs; a token that starts with ``'`` or ``"`` runs to
the same quote followed by whitespace or the end of the line; a token starting with ``#`` ends the line;
multi-line ``;`` fields are not supported; ``simplify`` collapses runs of spaces and drops control
characters. So a value can be written when it has no control character, no two spaces in a row and not
both ``' `` and ``" `` (the closing sequences of both quotes); anything else is refused, naming the value.

The layout is the one ``starfile`` writes (tab-separated rows, ``_label #n`` headers), so files written
before and after this module are byte-identical for ordinary values.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tiltflow.errors import TiltflowError

HEADER = "# version 50001"  # what RELION 5 writes; no time stamp, so re-made files are byte-identical
_NA = ("nan", "NaN", "<NA>")
_RESERVED = ("data_", "loop_", "save_", "global_", "stop_")


def unrepresentable(value: str) -> str | None:
    """Why ``value`` cannot be written as one STAR token RELION reads back unchanged, or None."""
    for ch in value:
        if ord(ch) < 32 or ord(ch) == 127:
            return f"the control character {ch!r}"
    if "  " in value:
        return "two spaces in a row (RELION's reader makes them one)"
    if "' " in value and '" ' in value:
        return "both ' and \" followed by a space (no STAR quote can enclose it)"
    return None


def check(value: str, what: str | Path) -> None:
    """Refuse ``value`` (a path that STAR files will hold) up front, naming it and the character."""
    why = unrepresentable(value)
    if why is not None:
        raise TiltflowError(f"cannot be written into a STAR file: the path contains {why}; rename it", what)


def quote(value: Any, where: Path | None = None) -> Any:
    """``value`` as a STAR token: strings quoted where RELION needs it, anything else unchanged."""
    if not isinstance(value, str):
        return value
    why = unrepresentable(value)
    if why is not None:
        raise TiltflowError(f"cannot write {value!r} into a STAR file: it contains {why}", where)
    if value and " " not in value and value[0] not in "'\"#_;$[]" and not value.lower().startswith(_RESERVED):
        return value
    q = '"' if '" ' not in value else "'"
    return f"{q}{value}{q}"


def tokens(line: str) -> list[str]:
    """The values on one data line, as RELION's ``nextTokenInSTAR`` splits them."""
    out: list[str] = []
    i, n = 0, len(line)
    while i < n:
        while i < n and line[i] in " \t":
            i += 1
        if i >= n or line[i] == "#":
            break
        if line[i] in "'\"":
            q, j = line[i], i + 1
            while j < n and not (line[j] == q and (j + 1 == n or line[j + 1] in " \t")):
                j += 1
            if j >= n:
                raise ValueError(f"unterminated quote in: {line[:80]}")
            out.append(line[i + 1:j])
            i = j + 1
        else:
            j = i
            while j < n and line[j] not in " \t":
                j += 1
            out.append(line[i:j])
            i = j
    return out


# --- writing -------------------------------------------------------------------------------------
def render(blocks: dict[str, pd.DataFrame | dict[str, Any]], float_format: str = "%.6f",
           where: Path | None = None) -> str:
    """The text of a STAR file holding ``blocks`` (a DataFrame: a ``loop_`` table; a dict: key-value pairs)."""
    lines = [HEADER, "", ""]
    for name, block in blocks.items():
        lines += [f"data_{name}", ""]
        if isinstance(block, dict):
            lines += [f"_{k}\t\t\t{quote(v, where)}" for k, v in block.items()]
        else:
            lines.append("loop_")
            lines += [f"_{c} #{i}" for i, c in enumerate(block.columns, 1)]
            if len(block):
                text = block.map(lambda v: quote(v, where)).to_csv(
                    sep="\t", header=False, index=False, float_format=float_format, na_rep="<NA>",
                    quoting=csv.QUOTE_NONE, lineterminator="\n")
                lines += text.split("\n")[:-1]  # not splitlines(): U+0085 may be in a path
        lines += ["", ""]
    return "".join(line + "\n" for line in lines)


# --- reading -------------------------------------------------------------------------------------
def parse(text: str, as_string: tuple[str, ...] = ()) -> dict[str, pd.DataFrame | dict[str, Any]]:
    """Every data block of a STAR file: loops as DataFrames, key-value blocks as dicts (numbers converted
    unless the label is in ``as_string``).
    """
    blocks: dict[str, pd.DataFrame | dict[str, Any]] = {}
    lines = [ln.rstrip("\r") for ln in text.split("\n")]  # not splitlines(): U+2028 may be in a path
    i = 0
    while i < len(lines):
        line = lines[i].strip(" \t")
        if not line.startswith("data_"):
            i += 1
            continue
        name, i = line[5:], i + 1
        while i < len(lines) and not lines[i].strip(" \t"):
            i += 1
        if i < len(lines) and lines[i].strip(" \t").startswith("loop_"):
            blocks[name], i = _loop(lines, i + 1, as_string)
        else:
            blocks[name], i = _pairs(lines, i, as_string)
    return blocks


def _loop(lines: list[str], i: int, as_string: tuple[str, ...]) -> tuple[pd.DataFrame, int]:
    labels: list[str] = []
    while i < len(lines) and lines[i].strip(" \t").startswith("_"):
        labels.append(lines[i].split()[0][1:])
        i += 1
    rows: list[list[str]] = []
    while i < len(lines) and not lines[i].strip(" \t").startswith("data_"):
        values = tokens(lines[i])
        if values:
            if len(values) != len(labels):
                raise ValueError(f"line {i + 1} has {len(values)} values for {len(labels)} columns")
            rows.append(values)
        i += 1
    if not rows:
        return pd.DataFrame(np.zeros((0, len(labels))), columns=labels), i
    df = pd.DataFrame(rows, columns=labels)
    for col in labels:
        if col not in as_string:
            df[col] = _typed(df[col])
    return df, i


def _typed(col: pd.Series) -> pd.Series:
    """A column as numbers when every value is one (``nan``/``<NA>`` as NaN), as pandas' CSV reader does."""
    values = col.where(~col.isin(_NA), np.nan)
    if values.isna().all():
        return values.astype(float)
    if (values == "").any():  # an empty string is a value (a tilt without a reason), not a missing number
        return values
    if set(values.dropna()) <= {"True", "False"}:
        return values == "True"
    try:
        return pd.to_numeric(values)
    except (ValueError, TypeError):
        return values


def _pairs(lines: list[str], i: int, as_string: tuple[str, ...]) -> tuple[dict[str, Any], int]:
    block: dict[str, Any] = {}
    while i < len(lines) and not lines[i].strip(" \t").startswith("data_"):
        line = lines[i].strip(" \t")
        if line.startswith("_"):
            parts = tokens(line)
            if len(parts) != 2:
                raise ValueError(f"line {i + 1}: expected '_label value', got {len(parts)} tokens")
            key, value = parts[0][1:], parts[1]
            block[key] = value if key in as_string else _number(value)
        i += 1
    return block, i


def _number(value: str) -> Any:
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value
