"""CTFFIND 4.1 / 5.0 backend against a fake CTFFIND that replays a real CTFFIND 5.0.2 run.

The fake (tests/fakes/ctffind.py) prints the real console transcript (prompts, wording, order, the answers
echoed, the results) and writes the real ``_PS.txt`` / ``_PS_avrot.txt``, with only file names substituted.
The wrapper is run on the same inputs as the real run (tilt 0 of the demo session: 1024^2 at 3 A/px,
300 kV, Cs 2.7, Q0 0.1, box 512, 30-5 A, defocus 20000-60000 A step 100) and must send the same answers;
its parsed results must be the values in the real files.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd
import pytest

from fakes import NO_TRANSCRIPT, install
from fakes import ctffind as fake
from tiltflow import star
from tiltflow.backends import ctffind, toolrun
from tiltflow.backends.tools import TOOLS
from tiltflow.ctffit.ctffind_files import read_avrot, read_summary
from tiltflow.errors import TiltflowError, ToolError
from tiltflow.steps.common import run_star_step
from tiltflow.steps.ctf import Options, run_series

DATA = Path(__file__).parent / "data"
REAL = fake.read_transcript()
ROOT = "TS_01_000_0_0"


def make_fake(tmp_path: Path, version: str = "5.0.2", name: str = "ctffind") -> Path:
    return install(tmp_path / "bin", name, "ctffind", version=version)


def write_micrograph(path: Path, shape=(1024, 1024)) -> Path:
    """An image of the real run's size (the fake checks it; CTFFIND is faked, so content is irrelevant)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with mrcfile.new(path, overwrite=True) as m:
        m.set_data(np.zeros(shape, np.float32))
        m.voxel_size = 3.0
    return path


def make_series(root: Path, n: int = 1, missing: int | None = None, amp: float = 0.1) -> star.TiltSeriesStar:
    """The demo's first tilts as the ctf step gets them: 3 A/px, 300 kV, Cs 2.7, Q0 0.1, nominal -4 um."""
    frames = root / "motioncor" / "TS_01" / "frames"
    rows = []
    for i in range(n):
        name = f"TS_01_{i:03d}_{3.0 * i:.1f}"
        path = frames / (name.replace(".", "_") + ".mrc")
        if i != missing:
            write_micrograph(path)
        rows.append({star.MOVIE: f"frames/{name}.tif", star.NOMINAL_TILT: 3.0 * i, star.NOMINAL_AXIS: 85.0,
                     star.PRE_EXPOSURE: 3.0 * i, star.NOMINAL_DEFOCUS: -4.0,
                     star.MICROGRAPH: str(path.relative_to(root))})
    g = {star.VOLTAGE: 300.0, star.CS: 2.7, star.AMP_CONTRAST: amp, star.TS_PIXEL_SIZE: 3.0}
    return star.TiltSeriesStar("TS_01", g, pd.DataFrame(rows))


def demo_options(exe: Path, backend: str = "ctffind5", **kw) -> Options:
    """The real run's settings (box 512, 30-5 A, +-2 um around -4 um, step 100)."""
    return Options(backend=backend, executable=str(exe), box=512, res_min=30, res_max=5, defocus_range=2.0,
                   defocus_step=100, **kw)


def tool_output(log: Path) -> str:
    """What the program printed, from the log tiltflow keeps (its own ``# tiltflow`` lines left out)."""
    text = log.read_text()
    body = "".join(ln for ln in text.splitlines(keepends=True) if not ln.startswith("# tiltflow: "))
    return body.removesuffix("\n")  # run_tool adds one newline before its footer


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


def test_reads_the_real_ctffind5_run():
    """The 5.0.2 run's own files: 10 columns (tilt axis, tilt angle, thickness 0 when not searched)."""
    s = read_summary(DATA / f"{fake.RUN}_PS.txt")
    assert s.version == "5.0.2"
    (r,) = s.rows
    assert (r.defocus_1, r.defocus_2, r.azimuth) == pytest.approx((43061.894531, 42602.4375, -21.282082))
    assert (r.cross_correlation, r.fit_resolution) == pytest.approx((0.125531, 5.688889))
    assert (r.tilt_axis, r.tilt_angle, r.thickness) == (0.0, 0.0, 0.0)
    (p,) = read_avrot(DATA / f"{fake.RUN}_PS_avrot.txt")
    table = np.loadtxt(DATA / f"{fake.RUN}_PS_avrot.txt", comments="#")  # numpy's own reading: 6 x 363
    assert table.shape == (6, 363)
    for got, want in zip((p.k, p.average_plain, p.average, p.fit, p.cc, p.cc_2sigma), table, strict=True):
        np.testing.assert_array_equal(got, want)


# --- the fake against the real transcript ---------------------------------------------------------------


def test_real_transcript_prompts():
    """What the real 5.0.2 run asked, in order: the wrapper's prompt list must be this one."""
    assert [p.question for p in REAL.prompts] == [
        "Input image file name", "Output diagnostic image file name", "Pixel size", "Acceleration voltage",
        "Spherical aberration", "Amplitude contrast", "Size of amplitude spectrum to compute",
        "Minimum resolution", "Maximum resolution", "Minimum defocus", "Maximum defocus", "Defocus search step",
        "Do you know what astigmatism is present?", "Slower, more exhaustive search?",
        "Use a restraint on astigmatism?", "Find additional phase shift?", "Determine sample tilt?",
        "Determine samnple thickness?", "Do you want to set expert options?"]
    assert REAL.answer("Pixel size") == "3.0" and REAL.answer("Amplitude contrast") == "0.1"
    assert "Version : 5.0.2" in REAL.banner and "Mode : Scripted" in REAL.banner


def test_fake_prints_exactly_the_real_transcript(tmp_path):
    """Given the real run's answers and file names, the fake prints the transcript byte for byte and writes
    the real summary and profiles unchanged.
    """
    exe = make_fake(tmp_path)
    write_micrograph(tmp_path / "motioncor" / "TS_01" / "frames" / f"{ROOT}.mrc")
    (tmp_path / "ctf" / "TS_01").mkdir(parents=True)
    stdin = "".join(p.answer + "\n" for p in REAL.prompts)
    proc = subprocess.run([str(exe)], input=stdin, capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == fake.TRANSCRIPT.read_text()
    out = tmp_path / "ctf" / "TS_01"
    assert (out / f"{ROOT}_PS.txt").read_text() == fake.SUMMARY.read_text()
    assert (out / f"{ROOT}_PS_avrot.txt").read_text() == fake.AVROT.read_text()
    with mrcfile.open(out / f"{ROOT}_PS.ctf") as m:
        assert m.data.shape == (1, 512, 512)


def test_wrapper_sends_the_real_runs_answers_and_reads_its_results(tmp_path, monkeypatch):
    exe = make_fake(tmp_path)
    record = tmp_path / "answers.jsonl"
    monkeypatch.setenv("FAKE_CTFFIND_RECORD", str(record))
    ts = make_series(tmp_path)
    in_star = star.write_tilt_series(ts, tmp_path / "motioncor" / "TS_01" / "TS_01.star")
    out_star = run_star_step("ctf", in_star, "ctf", demo_options(exe, png="1"), tmp_path)
    (sent,) = [json.loads(line) for line in record.read_text().splitlines()]
    assert list(sent) == [p.question for p in REAL.prompts]  # every prompt answered, none left over
    differ = {q for q in sent if sent[q] != REAL.answer(q)}
    # Where our answers differ, and why:
    # - the micrograph is given as an absolute path (CTFFIND runs in a temporary folder, so that a failure
    #   leaves no half-written outputs); the real run's path was relative to the project: same file;
    # - the diagnostic is a bare name in that folder (moved into ctf/TS_01/frames/ afterwards);
    # - "3" for the pixel size where the real run was given "3.0": CTFFIND reads numbers with atof
    #   (userinput.cpp GetFloatFromUser), so both are 3.0 (RELION's ctffind_runner also writes "3").
    assert differ == {"Input image file name", "Output diagnostic image file name", "Pixel size"}
    assert Path(sent["Input image file name"]) == (tmp_path / REAL.answer("Input image file name")).resolve()
    assert sent["Output diagnostic image file name"] == Path(REAL.answer("Output diagnostic image file name")).name
    assert float(sent["Pixel size"]) == float(REAL.answer("Pixel size"))
    # the parsed results are the real files' values
    t = star.read_tilt_series(out_star).tilts.iloc[0]
    near = {"abs": 0.006}  # the STAR file keeps 2 decimals (defocus, angle) or 3 (score, resolution)
    assert t[star.DEFOCUS_U] == pytest.approx(43061.894531, **near)
    assert t[star.DEFOCUS_V] == pytest.approx(42602.4375, **near)
    assert t[star.ASTIGMATISM] == pytest.approx(43061.894531 - 42602.4375, **near)
    assert t[star.DEFOCUS_ANGLE] == pytest.approx(-21.282082, **near)  # RELION keeps CTFFIND's azimuth
    assert t[star.CTF_FOM] == pytest.approx(0.125531, abs=6e-4) and t[star.CTF_MAX_RES] == pytest.approx(5.688889, abs=6e-4)
    frames = tmp_path / "ctf" / "TS_01" / "frames"
    assert t[star.CTF_IMAGE] == f"ctf/TS_01/frames/{ROOT}_PS.ctf:mrc"
    assert (frames / f"{ROOT}_PS_avrot.txt").read_text().splitlines()[5:] == \
        fake.AVROT.read_text().splitlines()[5:]  # the profiles, moved unchanged
    assert (frames / f"{ROOT}_ctf.png").is_file() and not list(frames.glob(".*part*"))
    # the kept log is the program's real output: the transcript with our file names and answers
    printed = fake.substitute(fake.TRANSCRIPT.read_text(), {
        REAL.answer("Input image file name"): sent["Input image file name"],
        f"{ROOT}.mrc": f"{ROOT}.mrc",
        "ctf/TS_01/" + ROOT + "_PS": ROOT + "_PS"}).replace(
        "Pixel size                                         : 3.0\n",
        "Pixel size                                         : 3\n")
    assert tool_output(frames / f"{ROOT}_ctffind.log") == printed


def test_ctffind4_and_5_prompts():
    """4.1.14 asks the 5.0.2 run's questions minus the thickness one (ctffind.cpp): the wrapper's answers
    for each major version are one per question, and each yes/no answer falls on a yes/no question.
    """
    p = ctffind.CtffindParams(pixel_size=3.0, amplitude_contrast=0.1, defocus_min=20000, defocus_max=60000)
    for version, major in (("5.0.2", 5), ("4.1.14", 4)):
        qs = fake.questions(version)
        a = ctffind.answers(p, "in.mrc", "out_PS.ctf", major)
        assert len(a) == len(qs)
        yes_no = [q for q in qs if q not in fake.RANGES and q not in fake.FILES]
        assert [x for q, x in zip(qs, a, strict=True) if q in yes_no] == ["no"] * len(yes_no)
    assert len(fake.questions("5.0.2")) == len(fake.questions("4.1.14")) + 1


def test_answers_for_other_branches_follow_ctffind_cpp():
    """Branches the real run did not take (no transcript): the order of ctffind.cpp's questions."""
    r = ctffind.answers(ctffind.CtffindParams(pixel_size=1.0, astigmatism_restraint=150, phase_shift=True,
                                              phase_min=0, phase_max=180, phase_step=10), "i", "o", 5)
    i = r.index("no", 12)  # known astigmatism? no
    assert r[i:i + 4] == ["no", "no", "yes", "150"]  # slower search no, restraint yes + tolerance
    assert r[i + 4] == "yes" and float(r[i + 6]) == pytest.approx(math.pi, abs=1e-5)  # radians
    assert r[-2:] == ["no", "no"]  # no tilt question after a phase shift; thickness; expert


def test_version_detection_from_banner(tmp_path):
    assert toolrun.detect_version(make_fake(tmp_path, "4.1.14", "c4"), TOOLS["ctffind4"]) == "4.1.14"
    assert toolrun.detect_version(make_fake(tmp_path, "5.0.2", "c5"), TOOLS["ctffind5"]) == "5.0.2"
    assert ctffind.major_version("5.0.2", 4) == 5 and ctffind.major_version(None, 4) == 4
    with pytest.raises(ToolError, match="not supported"):
        ctffind.major_version("4.0.17", 4)


# --- the step with the fake CTFFIND ----------------------------------------------------------------------


@pytest.mark.parametrize("version,backend", [("4.1.14", "ctffind4"), ("5.0.2", "ctffind5"),
                                             ("5.0.2", "ctffind4")])
def test_step_answers_the_installed_programs_prompts(tmp_path, monkeypatch, version, backend):
    """--backend ctffind4 with a 5.0 program: the thickness question must still be answered."""
    exe = make_fake(tmp_path, version)
    record = tmp_path / "answers.jsonl"
    monkeypatch.setenv("FAKE_CTFFIND_RECORD", str(record))
    new = run_series(make_series(tmp_path), tmp_path / "ctf" / "TS_01", demo_options(exe, backend, png="none"), tmp_path)
    assert new.tilts[star.DEFOCUS_U][0] == pytest.approx(43061.894531)
    (sent,) = [json.loads(line) for line in record.read_text().splitlines()]
    assert list(sent) == fake.questions(version)


def test_dose_dependent_maximum_resolution_is_answered(tmp_path, monkeypatch):
    """Second tilt (3 e/A^2 before it): max resolution 5 * exp(3/100) A. The fake replays the run on tilt 0,
    so its results are that tilt's; what is checked here is the answer sent.
    """
    record = tmp_path / "answers.jsonl"
    monkeypatch.setenv("FAKE_CTFFIND_RECORD", str(record))
    run_series(make_series(tmp_path, 2), tmp_path / "ctf" / "TS_01", demo_options(make_fake(tmp_path), png="none"), tmp_path)
    runs = [json.loads(line) for line in record.read_text().splitlines()]
    assert float(runs[0]["Maximum resolution"]) == 5.0
    assert float(runs[1]["Maximum resolution"]) == pytest.approx(5 * math.exp(3 / 100), abs=1e-5)


@pytest.mark.parametrize("amp,silent,match", [
    (1.5, False, r"exit status 255.*Number outside of acceptable range.*answer is not recognized"),
    (0.1, True, "did not write")])
def test_tool_failure_names_the_tilt_and_writes_no_star(tmp_path, monkeypatch, amp, silent, match):
    """CTFFIND's own refusal (amplitude contrast above 1, ctffind.cpp's range) and a silent exit 0, on every
    tilt: each tilt is flagged (steps.common.each_tilt) and the series fails, naming the first tilt's problem.
    """
    exe = make_fake(tmp_path)
    if silent:
        monkeypatch.setenv("FAKE_CTFFIND_SILENT", "1")
    in_star = star.write_tilt_series(make_series(tmp_path, 2, amp=amp),
                                     tmp_path / "motioncor" / "TS_01" / "TS_01.star")
    with pytest.raises(TiltflowError, match="no tilt could be processed.*" + match) as err:
        run_star_step("ctf", in_star, "ctf", demo_options(exe), tmp_path)
    assert "tilt 1 (TS_01_000_0_0.mrc" in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "ctf" / "TS_01" / "TS_01.star").exists()
    frames = tmp_path / "ctf" / "TS_01" / "frames"
    assert not list(frames.glob("*_PS.ctf")) and not list(frames.glob(".*part*"))
    assert (frames / "TS_01_000_0_0_ctffind.log").is_file()  # the tool's log is kept for the user


def test_wrong_prompt_order_is_detected_by_the_fake(tmp_path):
    """The fake really checks: answering 4.1's prompts to 5.0 leaves the last question blank."""
    exe = make_fake(tmp_path, "5.0.2")
    img = write_micrograph(tmp_path / "a.mrc")
    p = ctffind.CtffindParams(pixel_size=1.0)
    stdin = "\n".join(ctffind.answers(p, str(img), "o.ctf", 4)) + "\n"
    proc = subprocess.run([str(exe)], input=stdin, capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 255 and "Blank answer in scripted mode" in proc.stdout


def test_fake_refuses_what_the_real_run_does_not_show(tmp_path):
    """A yes (here: phase shift) or another image size has no transcript: the fake says so, invents nothing."""
    exe = make_fake(tmp_path)
    img = write_micrograph(tmp_path / "a.mrc")
    a = ctffind.answers(ctffind.CtffindParams(pixel_size=3.0, phase_shift=True), str(img), "o.ctf", 5)
    proc = subprocess.run([str(exe)], input="\n".join(a) + "\n", capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == NO_TRANSCRIPT and "Find additional phase shift" in proc.stderr
    small = write_micrograph(tmp_path / "b.mrc", (256, 256))
    a = ctffind.answers(ctffind.CtffindParams(pixel_size=3.0), str(small), "o.ctf", 5)
    proc = subprocess.run([str(exe)], input="\n".join(a) + "\n", capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == NO_TRANSCRIPT and not (tmp_path / "o.txt").exists()


def test_missing_micrograph_and_missing_program(tmp_path, monkeypatch):
    ts = make_series(tmp_path, 3, missing=1)
    with pytest.raises(TiltflowError, match=r"micrograph of tilt 2 \(TS_01_001_3_0.mrc"):
        run_series(ts, tmp_path / "ctf" / "TS_01", demo_options(make_fake(tmp_path), "ctffind4"), tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    for var in TOOLS["ctffind5"].env_vars:
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ToolError, match="CTFFIND not found"):
        run_series(make_series(tmp_path, 1), tmp_path / "ctf" / "TS_01", Options(backend="ctffind5"), tmp_path)


def test_executable_from_relion_environment_variable(tmp_path, monkeypatch):
    exe = make_fake(tmp_path, "4.1.14", "ctffind_somewhere")
    monkeypatch.delenv("TILTFLOW_CTFFIND", raising=False)
    monkeypatch.setenv("RELION_CTFFIND_EXECUTABLE", str(exe))
    assert toolrun.find_executable(TOOLS["ctffind4"]) == exe
    assert os.access(exe, os.X_OK)
