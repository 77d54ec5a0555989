"""Per-step records: what a finished step read, how it was configured and what it wrote.

Why a record and not "the output exists": a run killed mid-step, a changed option or a re-made input must
all re-run the step, and nothing else. ``<folder>/.tiltflow-step.json`` holds the hashes of the step's
inputs (its input STAR files and the records of the steps it reads from, so a change upstream travels
down the chain), its options, tiltflow's version and every output file with its size. It is written
atomically after the step's own STAR file, so it exists only for a step that finished; it holds no
timestamps, so re-running a deterministic step rewrites it byte for byte.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tiltflow import __version__
from tiltflow.atomic import write_text

RECORD = ".tiltflow-step.json"
#: files in a step folder that are not outputs: logs are appended across attempts, the record is ours
NOT_OUTPUTS = {"console.log", "error.log", RECORD}


def file_digest(path: str | Path) -> str:
    """sha256 of a file's content (streamed: gain references can be large)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def normalise(options: Any) -> Any:
    """Options as plain JSON values (tuples -> lists, paths -> str), so a loaded record compares equal."""
    return json.loads(json.dumps(options, sort_keys=True, default=str))


@dataclass
class Expected:
    """What a step's record must say for the step to be skipped."""

    inputs: dict[str, str]  # name (relative path) -> sha256
    options: dict[str, Any]
    version: str = __version__

    def record(self, step: str, series: str | None, outputs: dict[str, int],
               warnings: list[str] | None = None) -> dict[str, Any]:
        """The record to write after the step ran, so that a later run can skip it."""
        rec = {
            "step": step,
            "series": series,
            "version": self.version,
            "inputs": dict(sorted(self.inputs.items())),
            "options": normalise(self.options),
            "outputs": dict(sorted(outputs.items())),
        }
        if warnings:  # kept with the result: a skipped step still shows them in the summary and the report
            rec["warnings"] = list(warnings)
        return rec


def file_stamp(path: str | Path) -> str:
    """A raw input's key as Nextflow's default cache mode has it: size and modification time (ns), without
    reading the content (movies are large). A file replaced by another one with the same name changes it.
    """
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        return "missing"
    return f"stat {st.st_size} {st.st_mtime_ns}"


def inputs_of(root: Path, files: Iterable[str], records: Iterable[str], raw: Iterable[str] = ()) -> dict[str, str]:
    """Hashes of input ``files``, of the records in the step ``records`` folders (relative to root) and the
    size+mtime stamps of ``raw`` files (movies, absolute paths).

    A missing input hashes as ``"missing"``, so the step runs and reports the problem itself.
    """
    out: dict[str, str] = {}
    for rel in files:
        p = root / rel
        out[rel] = file_digest(p) if p.is_file() else "missing"
    for folder in records:
        p = root / folder / RECORD
        out[f"{folder}/{RECORD}"] = file_digest(p) if p.is_file() else "missing"
    for path in raw:
        out[str(path)] = file_stamp(path)
    return out


def list_outputs(root: Path, folder: str) -> dict[str, int]:
    """Every file under ``root/folder`` except logs, records and temporaries: relative path -> size."""
    base = root / folder
    out: dict[str, int] = {}
    if not base.is_dir():
        return out
    for p in sorted(base.rglob("*")):
        if p.is_file() and p.name not in NOT_OUTPUTS and ".part" not in p.name:
            out[p.relative_to(root).as_posix()] = p.stat().st_size
    return out


def warnings_of(root: Path, folder: str) -> list[str]:
    """The warnings the finished step in ``folder`` logged (a movie shorter than the mdoc says, bad gain
    pixels replaced...): things that change the result, so the summary and the report show them.
    """
    rec = load_record(root, folder)
    return list(rec.get("warnings") or []) if rec else []


def load_record(root: Path, folder: str) -> dict[str, Any] | None:
    """A step folder's record, or None when it is missing or unreadable (then the step runs again)."""
    p = root / folder / RECORD
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


def up_to_date(root: Path, step: str, folder: str, expected: Expected) -> tuple[bool, str]:
    """Whether the step in ``folder`` can be skipped, and why not (for the log)."""
    rec = load_record(root, folder)
    if rec is None:
        return False, "no record"
    if rec.get("step") != step:
        return False, "record of another step"
    if rec.get("version") != expected.version:
        return False, f"tiltflow version changed ({rec.get('version')} -> {expected.version})"
    if rec.get("options") != normalise(expected.options):
        old, new = rec.get("options") or {}, normalise(expected.options)
        changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        return False, f"options changed ({', '.join(changed)})"
    old_inputs = rec.get("inputs") or {}
    if old_inputs != dict(sorted(expected.inputs.items())):
        changed = sorted(k for k in set(old_inputs) | set(expected.inputs) if old_inputs.get(k) != expected.inputs.get(k))
        return False, f"inputs changed ({_names(changed)})"
    outputs = rec.get("outputs") or {}
    if not outputs:
        return False, "no outputs recorded"
    for rel, size in outputs.items():
        p = root / rel
        if not p.is_file() or p.stat().st_size != size:
            return False, f"output {rel} missing or changed"
    return True, "up to date"


def _names(keys: list[str]) -> str:
    """Changed inputs for the log: an upstream step by its folder, a file by its name."""
    shown = [k[: -len(RECORD) - 1] if k.endswith(RECORD) else Path(k).name for k in keys]
    return ", ".join(shown[:3]) + (f" and {len(shown) - 3} more" if len(shown) > 3 else "")


def write_record(root: Path, folder: str, step: str, series: str | None, expected: Expected,
                 warnings: list[str] | None = None) -> dict[str, Any]:
    """Record the finished step (last, atomically): the outputs as they are now on disk, and its warnings."""
    rec = expected.record(step, series, list_outputs(root, folder), warnings)
    write_text(root / folder / RECORD, json.dumps(rec, indent=2) + "\n")
    return rec
