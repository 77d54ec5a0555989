"""CTFFIND 4.1 / 5.0 backend: prompts, version detection, output parsing, failures - against fake programs.

The fake programs behave like CTFFIND in scripted mode (stdin not a terminal, cisTEM ``UserInput``): they
print the banner, ask the prompts in CTFFIND's order (5.0 adds the sample-thickness question), exit with
"Blank answer in scripted mode" when an answer is missing, reject answers of the wrong type, and write
the diagnostic MRC, the summary ``.txt`` (7 columns in 4.1, 10 in 5.0) and ``_avrot.txt``.
"""

from __future__ import annotations

import json
import math
import os
import stat
import sys
from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd
import pytest

from tiltflow import star
from tiltflow.backends import ctffind
from tiltflow.ctffit.ctffind_files import read_avrot, read_summary
from tiltflow.errors import TiltflowError, ToolError
from tiltflow.steps.ctf import CtfOptions, run, run_from_star

DATA = Path(__file__).parent / "data"

FAKE = r'''#!{python}
import json, os, sys
import numpy as np
import mrcfile

VERSION = "{version}"
MODE = os.environ.get("FAKE_CTFFIND_MODE", "ok")
answers = []

def out(text):
    sys.stdout.write(text)
    sys.stdout.flush()

def ask(prompt, kind):
    out(prompt.ljust(50) + " : ")
    line = sys.stdin.readline()
    value = line.rstrip("\n")
    if not value:
        out("\n Error: Blank answer in scripted mode, exiting...\n\n")
        sys.exit(255)
    ok = {{"float": value[0] in "-.0123456789", "int": value.lstrip("-").isdigit(),
          "yesno": value[0] in "yYnN", "file": True}}[kind]
    if not ok:
        out("\n Error: invalid answer %r for %r\n" % (value, prompt))
        sys.exit(3)
    answers.append([prompt, value])
    if kind == "yesno":
        return value[0] in "yY"
    return float(value) if kind in ("float", "int") else value

out("\n\n        **   Welcome to Ctffind   **\n\n")
out("             Version : %s\n            Compiled : Jan  1 2024\n                Mode : Scripted\n\n" % VERSION)
image = ask("Input image file name", "file")
with mrcfile.open(image, header_only=True, permissive=True) as m:
    nz = int(m.header.nz)
if nz > 1:
    ask("Input is a movie (stack of frames)", "yesno")
diag = ask("Output diagnostic image file name", "file")
px = ask("Pixel size", "float"); kv = ask("Acceleration voltage", "float"); cs = ask("Spherical aberration", "float")
ac = ask("Amplitude contrast", "float"); box = int(ask("Size of amplitude spectrum to compute", "int"))
rmin = ask("Minimum resolution", "float"); rmax = ask("Maximum resolution", "float")
dmin = ask("Minimum defocus", "float"); dmax = ask("Maximum defocus", "float"); ask("Defocus search step", "float")
if ask("Do you know what astigmatism is present?", "yesno"):
    ask("Slower, more exhaustive search?", "yesno"); ask("Known astigmatism", "float"); ask("Known astigmatism angle", "float")
else:
    ask("Slower, more exhaustive search?", "yesno")
    if ask("Use a restraint on astigmatism?", "yesno"):
        ask("Expected (tolerated) astigmatism", "float")
phase = ask("Find additional phase shift?", "yesno")
if phase:
    ask("Minimum phase shift (rad)", "float"); ask("Maximum phase shift (rad)", "float"); ask("Phase shift search step", "float")
else:
    ask("Determine sample tilt?", "yesno")
if VERSION.startswith("5"):
    ask("Determine samnple thickness?", "yesno")
ask("Do you want to set expert options?", "yesno")
if os.environ.get("FAKE_CTFFIND_RECORD"):
    with open(os.environ["FAKE_CTFFIND_RECORD"], "a") as fh:
        fh.write(json.dumps(answers) + "\n")
if MODE == "fail":
    out("\nError: cannot allocate memory for the spectrum\n")
    sys.exit(1)
if MODE == "silent":
    sys.exit(0)
mid = 0.5 * (dmin + dmax)
d1, d2, az, ps, cc, res = mid + 250.0, mid - 250.0, 33.5, (0.35 if phase else 0.0), 0.123, 7.5
root = diag.rsplit(".", 1)[0]
with mrcfile.new(diag, overwrite=True) as m:
    m.set_data(np.random.default_rng(0).random((1, box, box)).astype(np.float32))
    m.voxel_size = px
cols = "#1 - micrograph number; #2 - defocus 1 [Angstroms]; #3 - defocus 2; #4 - azimuth of astigmatism; #5 - additional phase shift [radians]; #6 - cross correlation; #7 - spacing (in Angstroms) up to which CTF rings were fit successfully"
values = [1.0, d1, d2, az, ps, cc, res]
if VERSION.startswith("5"):
    cols += "; #8 - Estimated tilt axis angle; #9 - Estimated tilt angle ; #10 Estimated sample thickness (in Angstroms)"
    values += [0.0, 0.0, 0.0]
head = ["# Output from CTFFind version %s, run on 2024-01-01 12:00:00" % VERSION,
        "# Input file: %s ; Number of micrographs: 1" % image,
        "# Pixel size: %0.3f Angstroms ; acceleration voltage: %0.1f keV ; spherical aberration: %0.2f mm ; amplitude contrast: %0.2f" % (px, kv, cs, ac),
        "# Box size: %i pixels ; min. res.: %0.1f Angstroms ; max. res.: %0.1f Angstroms ; min. def.: %0.1f um; max. def. %0.1f um" % (box, rmin, rmax, dmin, dmax),
        "# Columns: " + cols]
with open(root + ".txt", "w") as fh:
    fh.write("\n".join(head + [" ".join("%f" % v for v in values)]) + "\n")
n = box // 2
k = np.arange(n) / (box * px)
with open(root + "_avrot.txt", "w") as fh:
    fh.write("\n".join(head[:4] + ["# 6 lines per micrograph: #1 - spatial frequency (1/Angstroms); ..."]) + "\n")
    for row in (k, np.ones(n), np.cos(k * 300) ** 2, np.sin(k * 300) ** 2, np.linspace(1, 0, n), np.full(n, 0.1)):
        fh.write(" ".join("%f" % v for v in row) + "\n")
out("\n\nEstimated defocus values        : %0.2f , %0.2f Angstroms\n" % (d1, d2))
out("Estimated azimuth of astigmatism: %0.2f degrees\nScore                           : %0.5f\n" % (az, cc))
out("Thon rings with good fit up to  : %0.1f Angstroms\n" % res)
out("\n\nSummary of results                          : %s.txt\n" % root)
'''


def make_fake(tmp_path: Path, version: str, name: str = "ctffind") -> Path:
    exe = tmp_path / "bin" / name
    exe.parent.mkdir(parents=True, exist_ok=True)
    exe.write_text(FAKE.format(python=sys.executable, version=version))
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return exe


def make_series(root: Path, n: int = 3, missing: int | None = None) -> star.TiltSeriesStar:
    """A motion-corrected series of ``n`` small random micrographs (CTFFIND is faked, content is irrelevant)."""
    frames = root / "motioncor" / "TS_01" / "frames"
    frames.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        name = frames / f"TS_01_{i:03d}_{3.0 * i:.1f}".replace(".", "_")
        path = name.with_suffix(".mrc")
        if i != missing:
            with mrcfile.new(path, overwrite=True) as m:
                m.set_data(np.random.default_rng(i).random((256, 256)).astype(np.float32))
                m.voxel_size = 2.0
        rows.append({star.MOVIE: f"frames/TS_01_{i:03d}_{3.0 * i:.1f}.tif", star.NOMINAL_TILT: 3.0 * i,
                     star.NOMINAL_AXIS: 85.0, star.PRE_EXPOSURE: 3.0 * i, star.NOMINAL_DEFOCUS: -3.0,
                     star.MICROGRAPH: str(path.relative_to(root))})
    g = {star.VOLTAGE: 300.0, star.CS: 2.7, star.AMP_CONTRAST: 0.1, star.TS_PIXEL_SIZE: 2.0}
    return star.TiltSeriesStar("TS_01", g, pd.DataFrame(rows))


# --- real output files ---------------------------------------------------------------------------------


def test_reads_real_ctffind41_summary_with_phase_shift():
    s = read_summary(DATA / "ASPIRE-Python__diagnostic_output.txt")
    assert s.version == "4.1.14"
    (r,) = s.rows
    assert (r.defocus_1, r.defocus_2, r.azimuth) == pytest.approx((9982.502930, 9982.502930, 0.0))
    assert r.phase_shift == pytest.approx(0.035256)
    assert r.cross_correlation == pytest.approx(0.565683)
    assert r.fit_resolution == pytest.approx(1.980663)
    assert r.thickness is None  # 4.1 writes 7 columns


def test_reads_real_tilt_stack_summary_with_failed_fits():
    s = read_summary(DATA / "warp2relion-tomo__TS_001_ctffind4_output.txt")
    assert s.version == "4.1.13"
    assert len(s.rows) == 41 and [r.micrograph for r in s.rows] == list(range(1, 42))
    failed = [r for r in s.rows if r.fit_resolution > 700]
    assert failed and all(r.fit_resolution == pytest.approx(784.383972) for r in failed)
    assert s.rows[5].azimuth == pytest.approx(-42.925369)


def test_reads_aretomo_ctf_txt_as_ctffind_like():
    s = read_summary(DATA / "cryoet-alignment__test_CTF.txt")
    assert [r.defocus_1 for r in s.rows] == pytest.approx([25951.41, 24973.29, 20648.45])
    assert s.rows[0].cross_correlation == pytest.approx(-0.0105)


def test_reads_real_avrot():
    (p,) = read_avrot(DATA / "ctffind5_manuscript__mmm_CTF_0_avrot.txt")
    assert len(p.k) == 363
    assert all(len(a) == 363 for a in (p.average_plain, p.average, p.fit, p.cc, p.cc_2sigma))
    assert p.k[0] == 0.0 and np.all(np.diff(p.k) > 0)
    assert p.cc[0] == pytest.approx(1.0)


def test_rejects_malformed_outputs(tmp_path):
    bad = tmp_path / "x.txt"
    bad.write_text("# Output from CTFFind version 4.1.14\n1.0 2.0 3.0\n")
    with pytest.raises(TiltflowError, match="3 columns"):
        read_summary(bad)
    empty = tmp_path / "e.txt"
    empty.write_text("# header only\n")
    with pytest.raises(TiltflowError, match="no result"):
        read_summary(empty)
    av = tmp_path / "a_avrot.txt"
    av.write_text("# h\n1 2 3\n1 2 3\n")
    with pytest.raises(TiltflowError, match="multiple of 6"):
        read_avrot(av)


# --- prompts ---------------------------------------------------------------------------------------


def test_answers_follow_the_prompt_order():
    p = ctffind.CtffindParams(pixel_size=1.35, voltage=300, cs=2.7, amplitude_contrast=0.1, box=512, res_min=30,
                              res_max=5, defocus_min=20000, defocus_max=60000, defocus_step=100)
    a4 = ctffind.answers(p, "in.mrc", "out_PS.ctf", 4)
    assert a4 == ["in.mrc", "out_PS.ctf", "1.35", "300", "2.7", "0.1", "512", "30", "5", "20000", "60000", "100",
                  "no", "no", "no", "no", "no", "no"]
    a5 = ctffind.answers(p, "in.mrc", "out_PS.ctf", 5)
    assert a5 == a4[:-1] + ["no", "no"]  # + thickness question before the expert options
    r = ctffind.answers(ctffind.CtffindParams(pixel_size=1.0, astigmatism_restraint=150, phase_shift=True,
                                              phase_min=0, phase_max=180, phase_step=10), "i", "o", 5)
    i = r.index("no", 12)  # known astigmatism? no
    assert r[i:i + 4] == ["no", "no", "yes", "150"]  # slower search no, restraint yes + tolerance
    assert r[i + 4] == "yes" and float(r[i + 6]) == pytest.approx(math.pi, abs=1e-5)  # radians
    assert r[-2:] == ["no", "no"]  # no tilt question after a phase shift; thickness; expert


def test_version_detection_from_banner(tmp_path):
    assert ctffind.detect_version(make_fake(tmp_path, "4.1.14", "c4")) == "4.1.14"
    assert ctffind.detect_version(make_fake(tmp_path, "5.0.2", "c5")) == "5.0.2"
    assert ctffind.major_version("5.0.2", 4) == 5 and ctffind.major_version(None, 4) == 4
    with pytest.raises(ToolError, match="not supported"):
        ctffind.major_version("4.0.17", 4)


# --- the step with a fake CTFFIND ------------------------------------------------------------------------


@pytest.mark.parametrize("version,backend", [("4.1.14", "ctffind4"), ("5.0.2", "ctffind5")])
def test_step_with_fake_ctffind(tmp_path, monkeypatch, version, backend):
    monkeypatch.chdir(tmp_path)
    exe = make_fake(tmp_path, version)
    record = tmp_path / "answers.jsonl"
    monkeypatch.setenv("FAKE_CTFFIND_RECORD", str(record))
    ts = make_series(tmp_path, 2)
    in_star = star.write_tilt_series(ts, tmp_path / "motioncor" / "TS_01" / "TS_01.star")
    out_star = run_from_star(in_star, "ctf", CtfOptions(backend=backend, executable=str(exe), res_max=5,
                                                         defocus_range=1.0, png="1"))
    new = star.read_tilt_series(out_star)
    t = new.tilts
    # search centred on the nominal -3 um +- 1 um; the fake answers defocus = centre +- 250
    assert t[star.DEFOCUS_U].tolist() == pytest.approx([30250.0, 30250.0])
    assert t[star.DEFOCUS_V].tolist() == pytest.approx([29750.0, 29750.0])
    assert t[star.ASTIGMATISM].tolist() == pytest.approx([500.0, 500.0])
    assert t[star.DEFOCUS_ANGLE].tolist() == pytest.approx([33.5, 33.5])
    assert t[star.CTF_FOM].tolist() == pytest.approx([0.123, 0.123])
    assert t[star.CTF_MAX_RES].tolist() == pytest.approx([7.5, 7.5])
    assert t[star.CTF_IMAGE][0] == "ctf/TS_01/frames/TS_01_000_0_0_PS.ctf:mrc"
    frames = tmp_path / "ctf" / "TS_01" / "frames"
    for suffix in ("_PS.ctf", "_PS.txt", "_PS_avrot.txt", "_ctffind.log"):
        assert (frames / f"TS_01_001_3_0{suffix}").is_file()
    assert (frames / "TS_01_000_0_0_ctf.png").is_file() and not (frames / "TS_01_001_3_0_ctf.png").exists()
    assert "Summary of results" in (frames / "TS_01_000_0_0_ctffind.log").read_text()
    assert not list(frames.glob(".*part*"))  # temporary work folders removed
    runs = [json.loads(line) for line in record.read_text().splitlines()]
    assert len(runs) == 2
    prompts = [q for q, _ in runs[1]]
    assert ("Determine samnple thickness?" in prompts) == version.startswith("5")
    asked = dict(runs[1])
    assert float(asked["Minimum defocus"]) == 20000 and float(asked["Maximum defocus"]) == 40000
    # dose-dependent maximum resolution: second tilt has 3 e/A^2 pre-exposure
    assert float(asked["Maximum resolution"]) == pytest.approx(5 * math.exp(3 / 100), abs=1e-5)
    assert asked["Input image file name"] == str((tmp_path / ts.tilts[star.MICROGRAPH][1]).resolve())


def test_version_mismatch_answers_the_installed_programs_prompts(tmp_path, monkeypatch):
    """--backend ctffind4 but the program is 5.0: the thickness question must still be answered."""
    monkeypatch.chdir(tmp_path)
    exe = make_fake(tmp_path, "5.0.2")
    ts = make_series(tmp_path, 1)
    new = run(ts, tmp_path / "ctf" / "TS_01", CtfOptions(backend="ctffind4", executable=str(exe), png="none"))
    assert new.tilts[star.DEFOCUS_U][0] == pytest.approx(30250.0)


def test_phase_shift_column_from_ctffind(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exe = make_fake(tmp_path, "4.1.14")
    ts = make_series(tmp_path, 1)
    new = run(ts, tmp_path / "ctf" / "TS_01", CtfOptions(backend="ctffind4", executable=str(exe), phase_shift=True,
                                                        png="none"))
    assert new.tilts[star.PHASE_SHIFT][0] == pytest.approx(math.degrees(0.35), abs=1e-3)


@pytest.mark.parametrize("mode,match", [("fail", "exit status 1.*cannot allocate"), ("silent", "did not write")])
def test_tool_failure_names_the_tilt_and_writes_no_star(tmp_path, monkeypatch, mode, match):
    monkeypatch.chdir(tmp_path)
    exe = make_fake(tmp_path, "4.1.14")
    monkeypatch.setenv("FAKE_CTFFIND_MODE", mode)
    ts = make_series(tmp_path, 2)
    in_star = star.write_tilt_series(ts, tmp_path / "motioncor" / "TS_01" / "TS_01.star")
    with pytest.raises(ToolError, match=match) as err:
        run_from_star(in_star, "ctf", CtfOptions(backend="ctffind4", executable=str(exe)))
    assert "tilt 1 (TS_01_000_0_0.mrc" in str(err.value)
    assert not (tmp_path / "ctf" / "TS_01" / "TS_01.star").exists()
    frames = tmp_path / "ctf" / "TS_01" / "frames"
    assert not list(frames.glob("*_PS.ctf")) and not list(frames.glob(".*part*"))
    assert (frames / "TS_01_000_0_0_ctffind.log").is_file()  # the tool's log is kept for the user


def test_wrong_prompt_order_is_detected_by_the_fake(tmp_path):
    """The fake really checks: answering 4.1's prompts to 5.0 leaves the last question blank."""
    import subprocess

    exe = make_fake(tmp_path, "5.0.2")
    img = tmp_path / "a.mrc"
    with mrcfile.new(img) as m:
        m.set_data(np.zeros((64, 64), np.float32))
    p = ctffind.CtffindParams(pixel_size=1.0)
    stdin = "\n".join(ctffind.answers(p, str(img), "o.ctf", 4)) + "\n"
    proc = subprocess.run([str(exe)], input=stdin, capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 255 and "Blank answer in scripted mode" in proc.stdout


def test_missing_micrograph_and_missing_program(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ts = make_series(tmp_path, 3, missing=1)
    with pytest.raises(TiltflowError, match=r"micrograph of tilt 2 \(TS_01_001_3_0.mrc"):
        run(ts, tmp_path / "ctf" / "TS_01", CtfOptions(backend="ctffind4", executable=str(make_fake(tmp_path, "4.1.14"))))
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    for var in ctffind.ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    ts = make_series(tmp_path, 1)
    with pytest.raises(ToolError, match="CTFFIND not found"):
        run(ts, tmp_path / "ctf" / "TS_01", CtfOptions(backend="ctffind5"))


def test_executable_from_relion_environment_variable(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exe = make_fake(tmp_path, "4.1.14", "ctffind_somewhere")
    monkeypatch.delenv("TILTFLOW_CTFFIND", raising=False)
    monkeypatch.setenv("RELION_CTFFIND_EXECUTABLE", str(exe))
    assert ctffind.find(None, 4) == exe
    assert os.access(exe, os.X_OK)
