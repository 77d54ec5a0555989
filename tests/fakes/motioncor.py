"""Fake MotionCor2/3: prints a real MotionCor2 log (tests/data, nysbc/appion) with only file names substituted.

- ``-InTiff``: ``appion__29123499.motioncor2.log`` (a 28-frame TIFF movie, old ``Frame (  1) shift:`` table);
- ``-InEer``: ``appion__motioncor2_1.5.0_log.txt`` (1539 EER fractions rendered to 16 frames).

The movie, ``-OutMrc``, ``-Gain`` and ``-FmIntFile`` paths of the real run become the ones given; every other
line (sizes, timings, the shift table, even the dark reference the real run had) is the real text. What the
real logs cannot describe is refused (status 64): MRC movies, ``-Throw``/``-Trunc``, a movie whose frame count
is not the real run's. The sums are written from the given movie (gain applied, TIFF rows reversed as MotionCor
reads them: ``TiffUtil/CLoadTiffImage.cpp``), without any alignment: only the log's table is MotionCor's.
``--version`` prints what MotionCor3 prints (``CMotionCor3.cpp``); errors use its wording (``Error: All GPUs
are in use, quit.``, to stderr).
"""

from __future__ import annotations

import json
import os
import re
import sys

from fakes import DATA, refuse, substitute

LOGS = {"-intiff": DATA / "appion__29123499.motioncor2.log", "-ineer": DATA / "appion__motioncor2_1.5.0_log.txt"}
VERSION = "MotionCor3 version 1.2.1\nBuilt on May 14 2025\n"  # CMotionCor3.cpp, --version
_PARAM = re.compile(r"^(-\w+)\s+(.*?)\s*$")


def real_parameters(text: str) -> dict[str, str]:
    """The parameter dump at the top of a MotionCor log: ``-Tag value`` per line (first one wins)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        m = _PARAM.match(line)
        if m and m.group(1) not in out:
            out[m.group(1)] = m.group(2)
    return out


def frames_in(text: str) -> int:
    """Frames the real run aligned: rows of its 'Full-frame alignment shift' table."""
    return len(re.findall(r"Frame \(\s*\d+\) shift:", text))


def _parse(argv: list[str]) -> dict[str, list[str]]:
    opts: dict[str, list[str]] = {}
    key = None
    for a in argv:
        if a.startswith("-") and a[1:2].isalpha():
            key = a.lower()
            opts[key] = []
        elif key is not None:
            opts[key].append(a)
    return opts


def _movie_frames(opts: dict[str, list[str]]):
    import numpy as np
    import tifffile

    if "-intiff" in opts:
        return np.asarray(tifffile.imread(opts["-intiff"][0]), np.float32)[:, ::-1]  # MotionCor: rows reversed
    n_raw, per, _ = open(opts["-fmintfile"][0]).read().split()
    with tifffile.TiffFile(opts["-ineer"][0]) as t:
        h, w = t.pages[0].shape
    s = int(opts.get("-eersampling", ["1"])[0])
    return np.ones((int(n_raw) // int(per), h * s, w * s), np.float32)  # rendered frames; content irrelevant


def main() -> int:
    import mrcfile
    import numpy as np

    args = sys.argv[1:]
    if len(args) == 1 and args[0].lower() == "--version":
        sys.stdout.write(VERSION)
        return 0
    opts = _parse(args)
    record = os.environ.get("FAKE_MC_RECORD")
    if record:
        extra = {"fmint": open(opts["-fmintfile"][0]).read()} if "-fmintfile" in opts else {}
        with open(record, "a") as fh:
            fh.write(json.dumps({"argv": args, **extra}) + "\n")
    if os.environ.get("FAKE_MC_FAIL"):  # mCheckFreeGpus fails: exit status eNoFreeGPUs = 1
        sys.stderr.write("Error: All GPUs are in use, quit.\n\n")
        return 1
    flag = next((f for f in LOGS if f in opts), None)
    if flag is None:
        return refuse("MotionCor", "this input (real logs: -InTiff, -InEer)")
    for f in ("-throw", "-trunc"):
        if int(float(opts.get(f, ["0"])[0])):
            return refuse("MotionCor", f"{f} (the real runs used none)")
    text = LOGS[flag].read_text()
    real = real_parameters(text)
    frames = _movie_frames(opts)
    if len(frames) != frames_in(text):
        return refuse("MotionCor", f"a movie of {len(frames)} frames (the real run aligned {frames_in(text)})")
    ours = {real[{"-intiff": "-InTiff", "-ineer": "-InEer"}[flag]]: opts[flag][0], real["-OutMrc"]: opts["-outmrc"][0]}
    for tag in ("-Gain", "-FmIntFile"):
        if real.get(tag) and tag.lower() in opts:
            ours[real[tag]] = opts[tag.lower()][0]
    sys.stdout.write(substitute(text, ours))
    sys.stdout.flush()
    if os.environ.get("FAKE_MC_NOOUTPUT"):
        return 0
    if "-gain" in opts:
        with mrcfile.open(opts["-gain"][0]) as g:
            frames = frames * np.asarray(g.data, np.float32)
    ftbin = float(opts.get("-ftbin", ["1"])[0])
    pix = float(opts["-pixsize"][0])

    def save(img, path):
        b = int(round(ftbin))
        if b > 1:
            h, w = img.shape[0] // b * b, img.shape[1] // b * b
            img = img[:h, :w].reshape(h // b, b, w // b, b).mean(axis=(1, 3))
        with mrcfile.new(path, overwrite=True) as m:
            m.set_data(np.ascontiguousarray(img, np.float32))
            m.voxel_size = pix * ftbin

    stem = opts["-outmrc"][0]  # MotionCor3 sGenOutputName: cut at the first ".mrc", then at the first ".st"
    for cut in (".mrc", ".st"):
        i = stem.lower().find(cut)
        stem = stem[:i] if i >= 0 else stem
    save(frames.sum(axis=0), stem + ".mrc")
    if "-fmdose" in opts:
        save(0.9 * frames.sum(axis=0), stem + "_DW.mrc")  # a stand-in for dose weighting
    if opts.get("-splitsum", ["0"])[0] == "1":
        save(frames[0::2].sum(axis=0), stem + "_ODD.mrc")
        save(frames[1::2].sum(axis=0), stem + "_EVN.mrc")
    if "-logdir" in opts:  # MotionCor's own per-movie log, named as MotionCor names it
        with open(os.path.join(opts["-logdir"][0], os.path.basename(stem) + "-Patch-Full.log"), "w") as fh:
            fh.write("")
    return 0
