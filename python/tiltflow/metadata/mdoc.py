"""SerialEM autodoc (``.mdoc``) files: a tolerant reader and a writer of SerialEM's layout.

Why our own parser and not teamtomo's ``mdocfile``: it drops the ``[T = ...]`` titles (where the
tilt-axis angle lives), cannot tell a file that SerialEM is still writing (last section partial,
no final newline) from a complete one, and does not separate per-movie ``[FrameSet = n]`` mdocs
and montage mdocs from tilt series. This module keeps every key it sees (as text) so that nothing
a newer SerialEM writes is lost, and never fails on an unknown key.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tiltflow.atomic import atomic_path
from tiltflow.errors import TiltflowError

_SECTION = re.compile(r"^\[\s*(?P<kind>[A-Za-z]+)\s*=\s*(?P<value>[^\]]*?)\s*\]\s*$")
_TITLE_BARE = re.compile(r"^T\s*=\s*(?P<text>.*)$")  # frame mdocs write 'T = SerialEM: ...' unbracketed
_KEY_VALUE = re.compile(r"^(?P<key>[A-Za-z_][A-Za-z0-9_.]*)\s*=\s*(?P<value>.*)$")


@dataclass
class MdocSection:
    """One ``[Kind = value]`` section: ``kind`` is ``ZValue``, ``FrameSet``, ``MontSection``, ..."""

    kind: str
    index: str
    keys: dict[str, str] = field(default_factory=dict)
    line: int = 0  # 1-based line of the header, for messages
    complete: bool = True  # False for a section cut short while SerialEM was writing


@dataclass
class MdocFile:
    """A parsed mdoc: header keys, titles (text inside ``[T = ...]``) and sections, as written."""

    path: Path
    header: dict[str, str] = field(default_factory=dict)
    titles: list[str] = field(default_factory=list)
    sections: list[MdocSection] = field(default_factory=list)
    ends_with_newline: bool = True
    crlf: bool = False

    def kinds(self) -> set[str]:
        """The kinds of section the file holds (``ZValue``, ``FrameSet``, ...), to tell what it describes."""
        return {s.kind for s in self.sections}


def parse_mdoc_text(text: str, path: str | Path = "<mdoc>") -> MdocFile:
    """Parse mdoc text. Unknown keys are kept; lines that are neither key, title nor section are ignored."""
    path = Path(path)
    out = MdocFile(path=path, ends_with_newline=text.endswith(("\n", "\r")), crlf="\r\n" in text)
    current: MdocSection | None = None
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        m = _SECTION.match(line)
        if m:
            kind, value = m.group("kind"), m.group("value")
            if kind == "T":
                out.titles.append(value.strip())
                continue
            current = MdocSection(kind=kind, index=value.strip(), line=lineno)
            out.sections.append(current)
            continue
        if line.startswith("[") and not line.endswith("]"):
            # a header cut in the middle ('[ZValue = 3' at the end of a file being written)
            current = MdocSection(kind=line[1:].split("=")[0].strip() or "?", index="", line=lineno, complete=False)
            out.sections.append(current)
            continue
        m = _KEY_VALUE.match(line)
        if m:
            key, value = m.group("key"), m.group("value").strip()
            if current is None and key == "T":
                out.titles.append(value)
                continue
            target = out.header if current is None else current.keys
            target[key] = value
            continue
        m = _TITLE_BARE.match(line)
        if m and current is None:
            out.titles.append(m.group("text").strip())
    return out


def read_mdoc(path: str | Path) -> MdocFile:
    """Read an mdoc file (any line endings, Latin-1 tolerant: titles may carry odd bytes)."""
    path = Path(path)
    if not path.is_file():
        raise TiltflowError("mdoc file not found", path)
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    return parse_mdoc_text(text, path)


def _fmt(value: object) -> str:
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, float):
        return format(value, ".10g")
    if isinstance(value, (list, tuple)):
        return " ".join(_fmt(v) for v in value)
    return str(value)


def format_mdoc(
    global_keys: Mapping[str, object],
    titles: Iterable[str],
    sections: Iterable[tuple[str, str | int, Mapping[str, object]]],
) -> str:
    """SerialEM's layout as text: header keys, blank line, ``[T = ...]`` titles, then sections.

    Values that are lists/tuples are written space separated (``ImageSize = 4096 4096``).
    """
    lines = [f"{k} = {_fmt(v)}" for k, v in global_keys.items()]
    lines.append("")
    for t in titles:
        lines += [f"[T = {t}]", ""]
    for kind, index, keys in sections:
        lines.append(f"[{kind} = {index}]")
        lines += [f"{k} = {_fmt(v)}" for k, v in keys.items()]
        lines.append("")
    return "\n".join(lines) + "\n"


def write_mdoc(
    path: str | Path,
    global_keys: Mapping[str, object],
    titles: list[str],
    sections: list[tuple[str, str | int, Mapping[str, object]]],
) -> Path:
    """Atomically write an mdoc in SerialEM's layout.

    ``sections`` are ``(kind, index, keys)``: ``("ZValue", 0, {"TiltAngle": 0.0, ...})`` for a tilt
    series, ``("FrameSet", 0, {...})`` for a per-movie mdoc. ``titles`` are the texts inside
    ``[T = ...]`` (e.g. ``"SerialEM: Digitized on ..."`` and ``"    Tilt axis angle = 85.3, binning = 1"``).
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(format_mdoc(global_keys, titles, sections))
    return path
