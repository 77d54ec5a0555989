r"""IMOD/Etomo dataset files: the ``.edf`` directive file and ``.com`` command files.

One reader for the files etomo wrote (``tests/data/IMOD__*``, ``etomofiles__TS_001.edf``) and for
the ones tiltflow writes, so that a written dataset is checked exactly as a real one is read.

- ``.edf``: Java properties (Etomo's ``BaseMetaData`` saves a ``java.util.Properties``): ``#`` or
  ``!`` comment lines (Etomo writes the date), then ``key=value`` lines; ``\`` escapes ``= : # !``.
- ``.com``: IMOD command files (``IMOD/com/*.com``, run by ``vmstopy``/``subm``): ``#`` comments,
  ``$`` lines (``$setenv``, ``$if``, or ``$program -StandardInput``), and after a
  ``-StandardInput`` command one ``Key value`` line per PIP option (space or tab separated;
  option names are case-insensitive, e.g. ``Mode 2`` in cryoCAT's tilt.com).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tiltflow.atomic import write_text
from tiltflow.errors import TiltflowError


# --- .edf ------------------------------------------------------------------------------------
def read_edf(path: str | Path) -> dict[str, str]:
    """Properties of an Etomo directive file, in file order (comment lines skipped)."""
    path = Path(path)
    if not path.is_file():
        raise TiltflowError(".edf file not found", path)
    out: dict[str, str] = {}
    for lineno, raw in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        line = raw.strip()
        if not line or line[0] in "#!":
            continue
        key, value = _split_property(line)
        if not key:
            raise TiltflowError(f"line {lineno} of .edf is not key=value: '{line}'", path)
        out[key] = value
    return out


def write_edf(path: str | Path, properties: Mapping[str, object], comment: str = "") -> Path:
    """Write ``properties`` as Etomo does (``key=value``); ``comment`` replaces Etomo's date line.

    No timestamp is written, so that a re-run produces the same bytes (resume checks).
    """
    lines = [f"#{comment}"] if comment else []
    lines += [f"{_escape(k)}={_escape(_text(v))}" for k, v in properties.items()]
    return write_text(path, "\n".join(lines) + "\n")


def _split_property(line: str) -> tuple[str, str]:
    """Java's rule: the key ends at the first unescaped ``=`` or ``:``."""
    i = 0
    while i < len(line):
        c = line[i]
        if c == "\\":
            i += 2
            continue
        if c in "=:":
            return _unescape(line[:i].strip()), _unescape(line[i + 1 :].strip())
        i += 1
    return "", ""


def _escape(s: str) -> str:
    return "".join("\\" + c if c in "\\=:#!" else c for c in s)


def _unescape(s: str) -> str:
    out, i = [], 0
    while i < len(s):
        if s[i] == "\\" and i + 1 < len(s):
            i += 1
        out.append(s[i])
        i += 1
    return "".join(out)


def _text(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


# --- .com ------------------------------------------------------------------------------------
@dataclass
class ComCommand:
    """One ``$program`` line and, for ``-StandardInput`` programs, its ``Key value`` options."""

    program: str
    args: str = ""
    options: list[tuple[str, str]] = field(default_factory=list)
    separator: str = " "  # between key and value when written (etomo uses a tab in newst.com)

    def get(self, key: str, default: str | None = None) -> str | None:
        """Value of option ``key`` (case-insensitive, first occurrence); ``""`` for a flag."""
        k = key.lower()
        return next((v for name, v in self.options if name.lower() == k), default)

    def has(self, key: str) -> bool:
        """Whether option ``key`` is given (a flag counts)."""
        return self.get(key) is not None

    def numbers(self, key: str) -> list[float]:
        """Numeric values of ``key`` (``1,2`` or ``1 2``), e.g. ``FULLIMAGE`` -> [nx, ny]."""
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return [float(x) for x in value.replace(",", " ").split()]


@dataclass
class ComFile:
    """A command file: its lines in order; commands are :class:`ComCommand`, the rest text."""

    items: list[ComCommand | str] = field(default_factory=list)

    @property
    def commands(self) -> list[ComCommand]:
        """The ``$program`` commands of the file, in order, without the text lines."""
        return [c for c in self.items if isinstance(c, ComCommand)]

    def command(self, program: str) -> ComCommand:
        """The first ``$program`` command (``KeyError`` if the file has none)."""
        for c in self.commands:
            if c.program == program:
                return c
        raise KeyError(program)


#: ``$`` lines that are shell directives of the com-file runner, not programs
_DIRECTIVES = ("if", "setenv", "echo", "sync", "mv", "rm", "cp", "\\rm", "\\mv")


def read_com(path: str | Path) -> ComFile:
    """Parse an IMOD command file (PIP style with ``-StandardInput``, or arguments on the line)."""
    path = Path(path)
    if not path.is_file():
        raise TiltflowError(".com file not found", path)
    com = ComFile()
    current: ComCommand | None = None
    for raw in path.read_text(errors="replace").splitlines():
        line = raw.rstrip()
        stripped = line.strip()
        if stripped.startswith("$"):
            parts = stripped[1:].split(None, 1)
            name = parts[0] if parts else ""
            rest = parts[1] if len(parts) > 1 else ""
            if not name or name in _DIRECTIVES:
                com.items.append(line)
                current = None
                continue
            current = ComCommand(name, rest)
            com.items.append(current)
            if "-StandardInput" not in rest.split():
                current = None  # options were on the command line
            continue
        if current is None or not stripped or stripped.startswith("#"):
            com.items.append(line)
            continue
        parts = stripped.split(None, 1)
        if "\t" in line and current.separator == " ":
            current.separator = "\t"
        current.options.append((parts[0], parts[1].strip() if len(parts) > 1 else ""))
    if not com.commands:
        raise TiltflowError(".com file has no $program line", path)
    return com


def write_com(path: str | Path, com: ComFile) -> Path:
    """Write ``com`` back in IMOD's layout (``$program args`` then ``Key<sep>value`` lines)."""
    lines: list[str] = []
    for item in com.items:
        if isinstance(item, str):
            lines.append(item)
            continue
        lines.append(f"${item.program} {item.args}".rstrip())
        lines += [f"{k}{item.separator}{v}".rstrip() if v else k for k, v in item.options]
    return write_text(path, "\n".join(lines) + "\n")


def com_file(header: Iterable[str], commands: Iterable[ComCommand | str]) -> ComFile:
    """A command file from comment lines and its commands/directives, in that order."""
    return ComFile([*(f"# {h}".rstrip() for h in header), *commands])
