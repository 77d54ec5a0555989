"""Fake CTFFIND: replays the real CTFFIND 5.0.2 run in ``tests/data/ctffind-5.0.2-run__TS_01_000_0_0_*``.

What it prints is the real console transcript: the banner, then every prompt with the wording, padding and
order of the real run, each answer echoed as CTFFIND echoes it in scripted mode (cisTEM
``src/core/userinput.cpp``: ``AskQuestion`` pads the question to 50 columns and prints `` : ``,
``DoGotValidAnswer`` prints the answer and a newline when stdin is not a terminal), then the results text.
It writes the real ``_PS.txt`` and ``_PS_avrot.txt``. Only file names are substituted (the real run's
``motioncor/...`` input and ``ctf/...`` diagnostic names become the ones given). No real diagnostic
``.ctf`` image is kept, so the fake writes a blank ``box x box`` MRC of the size CTFFIND writes.

Answers are checked as ``UserInput`` checks them: a blank answer exits with "Blank answer in scripted mode",
a number that does not start like one or is out of the prompt's range exits with "answer is not
recognized" (status 255 = ``exit(-1)``). The real run took the "no" branch of every yes/no question; a "yes"
would lead to prompts the transcript does not show, so the fake refuses it. So does an input image of
another size than the real one (1024 x 1024 x 1): the printed results belong to that image.

``version="4.1.14"``: CTFFIND 4.1.14 asks the same questions minus "Determine samnple thickness?"
(cisTEM ``src/programs/ctffind/ctffind.cpp`` at ``ctffind_version = "4.1.14"``, commit 00dbc58e); the
banner says 4.1.14; everything printed after the prompts and the files written are the 5.0.2 run's.
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from fakes import DATA, refuse, substitute

RUN = "ctffind-5.0.2-run__TS_01_000_0_0"
TRANSCRIPT = DATA / f"{RUN}_ctffind.log"
SUMMARY = DATA / f"{RUN}_PS.txt"
AVROT = DATA / f"{RUN}_PS_avrot.txt"
#: the real run's image: the printed results are only true for an image of this size
REAL_SIZE = (1024, 1024, 1)
THICKNESS = "Determine samnple thickness?"  # 5.x only; the typo is CTFFIND's
#: answer checks of ctffind.cpp (GetFloatFromUser/GetIntFromUser min, max); the max resolution must not
#: exceed the minimum resolution given, the max defocus must not be below the min defocus
RANGES = {"Pixel size": (0.0, None), "Acceleration voltage": (0.0, None), "Spherical aberration": (0.0, None),
          "Amplitude contrast": (0.0, 1.0), "Size of amplitude spectrum to compute": (128, None),
          "Minimum resolution": (0.0, 50.0), "Maximum resolution": (0.0, "Minimum resolution"),
          "Minimum defocus": (None, None), "Maximum defocus": ("Minimum defocus", None),
          "Defocus search step": (1.0, None)}
FILES = ("Input image file name", "Output diagnostic image file name")


@dataclass(frozen=True)
class Prompt:
    """One question of the real run: the text CTFFIND printed, the answer given, output before the echo."""

    question: str
    printed: str  # question padded to 50 columns + " : "
    answer: str
    between: str  # what CTFFIND printed after reading the answer and before echoing it


@dataclass(frozen=True)
class Transcript:
    banner: str
    prompts: list[Prompt]
    results: str

    def answer(self, question: str) -> str:
        return next(p.answer for p in self.prompts if p.question == question)


_PROMPT = re.compile(r"^(?P<q>.{50}) : (?P<rest>.*)$")
_WX_LOG = re.compile(r"^\d\d:\d\d:\d\d: ")  # a wxWidgets log line CTFFIND printed in the middle of a prompt


def read_transcript(path: Path = TRANSCRIPT) -> Transcript:
    """Split the real console transcript into banner, prompts (with the answers given) and results."""
    lines = path.read_text().splitlines(keepends=True)
    i = 0
    while not _PROMPT.match(lines[i].rstrip("\n")):
        i += 1
    banner = "".join(lines[:i])
    prompts = []
    while i < len(lines) and (m := _PROMPT.match(lines[i].rstrip("\n"))):
        rest, between = m.group("rest"), ""
        if _WX_LOG.match(rest):
            between, i = rest + "\n", i + 1
            rest = lines[i].rstrip("\n")
        prompts.append(Prompt(m.group("q").rstrip(), m.group("q") + " : ", rest, between))
        i += 1
    return Transcript(banner, prompts, "".join(lines[i:]))


def questions(version: str, transcript: Transcript | None = None) -> list[str]:
    """The questions CTFFIND ``version`` asks on the real run's path (all yes/no answered "no")."""
    t = transcript or read_transcript()
    qs = [p.question for p in t.prompts]
    return qs if version.startswith("5") else [q for q in qs if q != THICKNESS]


def _number(question: str, value: str, given: dict[str, float]) -> float | str:
    """``value`` as GetFloatFromUser/GetIntFromUser accept it (atof of a number-like start), else why not."""
    if not (value[:1].isdigit() or (value[:1] in "-." and value[1:2].isdigit())):
        return ""
    m = re.match(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", value)
    x = float(m.group(0)) if m else 0.0
    if question == "Size of amplitude spectrum to compute":
        x = float(int(x))
    lo, hi = RANGES.get(question, (None, None))
    lo = given.get(lo, lo) if isinstance(lo, str) else lo
    hi = given.get(hi, hi) if isinstance(hi, str) else hi
    if (lo is not None and x < lo) or (hi is not None and x > hi):
        return "\nError: Number outside of acceptable range!\n\n"
    return x


def _image_size(path: str) -> tuple[int, int, int] | None:
    import mrcfile

    try:
        with mrcfile.open(path, header_only=True, permissive=True) as m:
            return int(m.header.nx), int(m.header.ny), int(m.header.nz)
    except (OSError, ValueError):
        return None


def main(version: str = "5.0.2") -> int:
    t = read_transcript()
    out = sys.stdout
    if sys.stdin.isatty():
        return refuse("CTFFIND", "interactive mode (the real run was scripted)")
    banner = t.banner.replace("Version : 5.0.2", f"Version : {version}")
    out.write(banner)
    out.flush()
    by_question = {p.question: p for p in t.prompts}
    answers: dict[str, str] = {}
    numbers: dict[str, float] = {}
    for q in questions(version, t):
        p = by_question[q]
        out.write(p.printed)
        out.flush()
        line = sys.stdin.readline()
        value = line.rstrip("\n")
        if not value:
            out.write("\n Error: Blank answer in scripted mode, exiting...\n\n")
            return 255
        if q in FILES:
            if q == FILES[0] and not os.path.isfile(value):
                out.write("\nError: File does not exist, please provide an existing file!\n\n")
                out.write("\n Error: Running as script, and answer is not recognized...\n\n")
                return 255
        elif q in RANGES:
            x = _number(q, value, numbers)
            if isinstance(x, str):
                out.write(x + "\n Error: Running as script, and answer is not recognized...\n\n")
                return 255
            numbers[q] = x
        else:  # yes/no
            if value[0] not in "yYnN":
                out.write("\n Error: Running as script, and answer is not recognized...\n\n")
                return 255
            if value[0] in "yY":
                return refuse("CTFFIND", f"answering yes to {q!r} (the real run answered no)")
        out.write(p.between + value + "\n")
        out.flush()
        answers[q] = value
        if q == FILES[0] and _image_size(value) != REAL_SIZE:
            return refuse("CTFFIND", f"an image of size {_image_size(value)} (the real run's was {REAL_SIZE})")
    record = os.environ.get("FAKE_CTFFIND_RECORD")
    if record:
        with open(record, "a") as fh:
            fh.write(json.dumps(answers) + "\n")
    if os.environ.get("FAKE_CTFFIND_SILENT"):  # a program that exits 0 without writing anything
        return 0
    real_diag = t.answer(FILES[1])
    ours = {t.answer(FILES[0]): answers[FILES[0]],
            Path(t.answer(FILES[0])).name: Path(answers[FILES[0]]).name,
            real_diag.rsplit(".", 1)[0]: answers[FILES[1]].rsplit(".", 1)[0]}
    root = answers[FILES[1]].rsplit(".", 1)[0]
    Path(root + ".txt").write_text(substitute(SUMMARY.read_text(), ours))
    Path(root + "_avrot.txt").write_text(substitute(AVROT.read_text(), ours))
    _write_diagnostic(answers[FILES[1]], int(numbers["Size of amplitude spectrum to compute"]),
                      numbers["Pixel size"])
    out.write(substitute(t.results, ours))
    return 0


def _write_diagnostic(path: str, box: int, pixel_size: float) -> None:
    import mrcfile
    import numpy as np

    with mrcfile.new(path, overwrite=True) as m:
        m.set_data(np.zeros((1, box, box), np.float32))
        m.voxel_size = pixel_size
