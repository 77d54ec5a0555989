"""AreTomo2/AreTomo3 alignment backend against fake executables that behave like the real programs."""

from __future__ import annotations

import shlex
import stat
import sys
from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd
import pytest

from tiltflow import star
from tiltflow.backends.aretomo import (
    AreTomoOptions,
    acquisition_order,
    align_with_aretomo,
    align_z_pixels,
    parse_axis_score,
    parse_version,
    per_tilt_dose,
)
from tiltflow.errors import TiltflowError, ToolError
from tiltflow.io.aln import DARK_REASON, read_aln

NAME = "TS_07"
ANGLES = np.array([-12.0, -9.0, -6.0, -3.0, 0.0, 3.0, 6.0, 9.0, 12.0])  # stack order
PRE = np.array([24.0, 15.0, 12.0, 3.0, 0.0, 6.0, 9.0, 18.0, 21.0])  # dose-symmetric
DARK = 0  # the -12 image is dark

# Shared by both fakes: argument parsing (case-insensitive flags, several values), the dark-image rule
# of AreTomo (|mean|/std <= DarkTol x that of the zero-tilt image), log lines as AreTomo prints them.
_COMMON = '''\
import os, sys
import numpy as np, mrcfile

def parse(argv):
    opts, key = {}, None
    for a in argv:
        if a.startswith("-") and not a.lstrip("-").replace(".", "").isdigit():
            key = a.lower(); opts[key] = []
        elif key is not None:
            opts[key].append(a)
    return opts

def need(opts, *flags):
    for f in flags:
        if f.lower() not in opts:
            print(f"Error: missing {f}", file=sys.stderr); sys.exit(3)

def dark_frames(stack, tilts, tol):
    r = np.array([abs(im.mean()) / (im.std() + 1e-6) for im in stack])
    zero = int(np.argmin(np.abs(tilts)))
    return [i for i in range(len(r)) if r[i] <= tol * r[zero]]

def log_lines(axis):
    print("Scores of potential tilt axes.")
    print("Best tilt axis:   57, Score:   0.07568")
    print("...... Score:   58    0.07000")
    print("Best tilt axis:   12, Score:   0.09125")
    print(f"New tilt axis: {axis:.2f}")
    print("Tilt offset 0.50, CC: 0.80")

def rows(kept, tilts, axis, base, offset=0.0):
    out = []
    for k, i in enumerate(kept):
        tx, ty = 1.5 * i - 3.0, -0.5 * i + 2.0
        out.append(f"{i + base:5d}  {axis + 0.5:9.4f}  {1.0:9.5f}  {tx:9.3f}  {ty:9.3f}  {1.0:7.2f}  "
                   f"{1.0:7.2f}  {1.0:7.2f}  {0.0:7.2f}  {tilts[i] + offset:8.2f}")
    return out
'''

FAKE_ARETOMO2 = '''\
#!{python}
"""Fake AreTomo2: the flags of AreTomo2 1.1.3, its log lines and its .aln (CSaveAlignFile)."""
{common}
if sys.argv[1:] in (["--version"], ["-v"]):
    print("AreTomo2 version 1.1.3\\nBuilt on Aug 19 2024"); sys.exit(0)
opts = parse(sys.argv[1:])
need(opts, "-InMrc", "-OutMrc", "-AngFile", "-AlignZ", "-VolZ", "-TiltAxis", "-DarkTol", "-OutImod", "-PixSize",
     "-Kv", "-OutBin", "-Gpu")
if os.environ.get("FAKE_ARETOMO_FAIL"):
    print("Error: unable to open MRC file", file=sys.stderr); sys.exit(1)
with mrcfile.open(opts["-inmrc"][0], permissive=True) as m:
    stack = np.asarray(m.data, np.float32)
lines = [l.split() for l in open(opts["-angfile"][0]) if l.strip() and not l.startswith("#")]
tilts = np.array([float(l[0]) for l in lines]); acq = sorted(int(l[1]) for l in lines)
if len(tilts) != len(stack) or acq != list(range(1, len(stack) + 1)):
    print("Error: AngFile does not match the stack", file=sys.stderr); sys.exit(4)
axis = float(opts["-tiltaxis"][0])
dark = dark_frames(stack, tilts, float(opts["-darktol"][0]))
for i in dark:
    print(f"Remove image at {{tilts[i]:.2f}} deg:")
log_lines(axis)
out = opts["-outmrc"][0]
kept = [i for i in range(len(stack)) if i not in dark]
if os.environ.get("FAKE_ARETOMO_BAD_ALN"):
    kept = kept[:-1]
if not os.environ.get("FAKE_ARETOMO_NO_ALN"):
    aln = os.path.join(os.path.dirname(out), os.path.basename(opts["-inmrc"][0]).replace(".mrc", ".aln"))
    nz, ny, nx = stack.shape
    text = ["# AreTomo Alignment / Priims bprmMn ", f"# RawSize = {{nx}} {{ny}} {{nz}}", "# NumPatches = 0"]
    text += [f"# DarkFrame =  {{i:4d}} {{i:4d}} {{tilts[i]:8.2f}}" for i in dark]
    text += ["# SEC     ROT         GMAG       TX          TY      SMEAN     SFIT    SCALE     BASE     TILT"]
    text += rows(kept, tilts, axis, 0)
    open(aln, "w").write("\\n".join(text) + "\\n")
with mrcfile.new(out, overwrite=True) as m:
    m.set_data(stack[kept])
os.makedirs(out[:-4] + "_Imod", exist_ok=True)
open(os.path.join(out[:-4] + "_Imod", "x.xf"), "w").write("1 0 0 1 0 0\\n")
print("Total time: 1.00 sec")
'''

FAKE_ARETOMO3 = '''\
#!{python}
"""Fake AreTomo3: -InPrefix/-InSuffix/-OutDir/-Cmd 1 with <name>_TLT.txt; 1-based SEC in the .aln."""
{common}
if sys.argv[1:] in (["--version"], ["-v"]):
    print("version 2.1.3, built on Jan 10 2026"); sys.exit(0)
opts = parse(sys.argv[1:])
need(opts, "-InPrefix", "-InSuffix", "-OutDir", "-Cmd", "-AlignZ", "-VolZ", "-TiltAxis", "-DarkTol", "-kV", "-Gpu")
if "-inmrc" in opts or "-angfile" in opts or opts["-cmd"] != ["1"]:
    print("Error: not an AreTomo3 stack invocation", file=sys.stderr); sys.exit(5)
src = opts["-inprefix"][0]
main = os.path.basename(src)[:-len(opts["-insuffix"][0])]
tlt = os.path.join(os.path.dirname(src), main + "_TLT.txt")
lines = [l.split() for l in open(tlt) if l.strip()]
if any(len(l) != 3 for l in lines):
    print("Error: _TLT.txt needs tilt, acquisition index, dose", file=sys.stderr); sys.exit(6)
with mrcfile.open(src, permissive=True) as m:
    stack = np.asarray(m.data, np.float32)
tilts = np.array([float(l[0]) for l in lines])
axis = float(opts["-tiltaxis"][0])
dark = dark_frames(stack, tilts, float(opts["-darktol"][0]))
log_lines(axis)
kept = [i for i in range(len(stack)) if i not in dark]
npatch = int(opts["-atpatch"][0]) * int(opts["-atpatch"][1]) if "-atpatch" in opts else 0
nz, ny, nx = stack.shape
text = ["# AreTomo Alignment / Priims bprmMn", f"# RawSize = {{nx}} {{ny}} {{nz}}", f"# NumPatches = {{npatch}}"]
text += [f"# DarkFrame =  {{i:4d}} {{i + 1:4d}} {{tilts[i] + 0.5:8.2f}}" for i in dark]
text += ["# AlphaOffset =     0.50", "# BetaOffset =     0.00", "# Thickness = 612"]
text += ["# SEC     ROT         GMAG       TX          TY      SMEAN     SFIT    SCALE     BASE     TILT"]
text += rows(kept, tilts, axis, 1, offset=0.5)
if npatch:
    text += ["# Local Alignment"]
    text += [f"{{t:4d}} {{p:3d}} {{10.0 * p:8.2f}}  {{-5.0 * p:8.2f}}  {{0.1:8.2f}}  {{0.2:8.2f}}   1.0"
             for t in range(len(kept)) for p in range(npatch)]
out_dir = opts["-outdir"][0]
open(os.path.join(out_dir, main + ".aln"), "w").write("\\n".join(text) + "\\n")
open(os.path.join(out_dir, "TiltSeries_Metrics.csv"), "w").write("Tilt_Series,Thickness(Pix)\\n" + main + ",612\\n")
print("Total time: 2.000000 sec")
'''


def _exe(tmp_path: Path, name: str, template: str) -> Path:
    p = tmp_path / "bin" / name
    p.parent.mkdir(exist_ok=True)
    p.write_text(template.format(python=sys.executable, common=_COMMON))
    p.chmod(p.stat().st_mode | stat.S_IEXEC)
    return p


@pytest.fixture
def aretomo2(tmp_path):
    return _exe(tmp_path, "AreTomo2", FAKE_ARETOMO2)


@pytest.fixture
def aretomo3(tmp_path):
    return _exe(tmp_path, "AreTomo3", FAKE_ARETOMO3)


@pytest.fixture
def series(tmp_path):
    """A 9-image stack at 2 A/px (first image dark) and its per-tilt table in stack order."""
    rng = np.random.default_rng(1)
    stack = rng.normal(100.0, 10.0, size=(len(ANGLES), 32, 40)).astype(np.float32)
    stack[DARK] = rng.normal(1.0, 10.0, size=(32, 40))
    path = tmp_path / "stack" / NAME / f"{NAME}.mrc"
    path.parent.mkdir(parents=True)
    with mrcfile.new(path) as m:
        m.set_data(stack)
        m.voxel_size = 2.0
    df = pd.DataFrame({star.NOMINAL_TILT: ANGLES, star.PRE_EXPOSURE: PRE, "tfDose": 3.0,
                       star.NOMINAL_AXIS: 85.0})
    return path, df


def _cmd(log: Path) -> list[str]:
    line = next(ln for ln in log.read_text().splitlines() if ln.startswith("# tiltflow: command: "))
    return shlex.split(line[len("# tiltflow: command: "):])


def _after(cmd: list[str], flag: str, n: int = 1) -> list[str]:
    i = cmd.index(flag)
    return cmd[i + 1:i + 1 + n]


def test_aretomo2_end_to_end(tmp_path, aretomo2, series):
    stack, df = series
    out = tmp_path / "align" / NAME  # absolute, as the align step passes them (the root made explicit)
    al = align_with_aretomo(stack, df, out, AreTomoOptions(flavour="aretomo2", executable=str(aretomo2),
                                                          thickness_nm=150, gpu="0,1"))
    cmd = _cmd(out / f"{NAME}_aretomo.log")
    assert _after(cmd, "-InMrc") == [str(stack)]
    assert _after(cmd, "-AlignZ") == ["750"]  # 150 nm at 2 A/px
    assert _after(cmd, "-VolZ") == ["0"]
    assert _after(cmd, "-TiltAxis", 2) == ["85.00", "1"]
    assert _after(cmd, "-ImgDose") == ["3.0000"]
    assert _after(cmd, "-OutImod") == ["1"] and _after(cmd, "-OutBin") == ["1"]
    assert _after(cmd, "-PixSize") == ["2.0000"] and _after(cmd, "-Kv") == ["300"]
    assert _after(cmd, "-Gpu", 2) == ["0", "1"]
    # the angle file: tilt + 1-based acquisition order, stack order
    ang = np.loadtxt(out / f"{NAME}_aretomo.tlt")
    np.testing.assert_allclose(ang[:, 0], ANGLES)
    assert ang[:, 1].astype(int).tolist() == [9, 6, 5, 2, 1, 3, 4, 7, 8]
    # RELION's reading of the .aln
    assert al.excluded == {DARK: DARK_REASON}
    assert len(al.y_tilt) == len(ANGLES) - 1
    np.testing.assert_allclose(al.y_tilt, ANGLES[1:])
    np.testing.assert_allclose(al.z_rot, 85.5)
    kept = np.arange(1, len(ANGLES))
    np.testing.assert_allclose(al.shifts_px, np.stack([1.5 * kept - 3.0, -0.5 * kept + 2.0], 1))
    np.testing.assert_allclose(al.shifts_angst, 2.0 * al.shifts_px)
    assert al.pixel_size == 2.0 and al.axis_score == pytest.approx(0.09125)
    assert read_aln(out / f"{NAME}.aln", n_stack=len(ANGLES)).sec_base == 0
    assert (out / f"{NAME}_aretomo_Imod" / "x.xf").is_file()
    assert not list(out.glob(".*part*"))


def test_aretomo2_reads_a_real_aln(tmp_path):
    """A real AreTomo .aln (lil-aretomo TS_121, 31 sections) written by a fake AreTomo2 for a stack at its
    tilts: RELION's reading of it is the file's columns (ROT, TX/TY in px, TILT), nothing excluded.
    """
    from fakes import DATA, install
    from fakes import aretomo as fake

    real = np.array([ln.split() for ln in (DATA / "lil-aretomo__TS_121.aln").read_text().splitlines()
                     if ln.strip() and not ln.startswith("#")], dtype=float)  # numpy's reading of the rows
    angles = real[:, 9]
    stack = tmp_path / "stack" / "TS_121" / "TS_121.mrc"
    stack.parent.mkdir(parents=True)
    with mrcfile.new(stack) as m:
        m.set_data(np.random.default_rng(0).normal(100, 10, (len(angles), 16, 16)).astype(np.float32))
        m.voxel_size = 2.0
    order = np.argsort(np.abs(angles), kind="stable")
    pre = np.empty(len(angles))
    pre[order] = 3.0 * np.arange(len(angles))  # dose-symmetric: lowest tilt first
    df = pd.DataFrame({star.NOMINAL_TILT: angles, star.PRE_EXPOSURE: pre, "tfDose": 3.0, star.NOMINAL_AXIS: 84.0})
    exe = install(tmp_path / "bin", "AreTomo2", "aretomo")
    out = tmp_path / "align" / "TS_121"
    al = align_with_aretomo(stack, df, out, AreTomoOptions(flavour="aretomo2", executable=str(exe)))
    assert fake.real_tilts() == angles.tolist()
    assert al.excluded == {}
    np.testing.assert_allclose(al.y_tilt, real[:, 9])
    np.testing.assert_allclose(al.z_rot, real[:, 1])
    np.testing.assert_allclose(al.shifts_px, real[:, 3:5])
    np.testing.assert_allclose(al.shifts_angst, 2.0 * real[:, 3:5])
    assert al.axis_score is None  # no log lines: no real AreTomo console log to replay
    assert (out / "TS_121.aln").read_text() == (DATA / "lil-aretomo__TS_121.aln").read_text()
    assert not list(out.glob(".*part*"))


def test_aretomo3_end_to_end_detected_from_version(tmp_path, aretomo3, series):
    stack, df = series
    out = tmp_path / "align" / NAME
    opts = AreTomoOptions(executable=str(aretomo3), thickness_nm=200, refine_axis=False, patches=(2, 2),
                          extra_args="-Wbp 1 -FlipVol 1")
    al = align_with_aretomo(stack, df, out, opts)
    cmd = _cmd(out / f"{NAME}_aretomo.log")
    assert "-InMrc" not in cmd and "-AngFile" not in cmd
    assert _after(cmd, "-Cmd") == ["1"] and _after(cmd, "-InSuffix") == [".mrc"]
    assert _after(cmd, "-AlignZ") == ["1000"]
    assert _after(cmd, "-TiltAxis", 2) == ["85.00", "-1"]
    assert _after(cmd, "-AtPatch", 2) == ["2", "2"] and _after(cmd, "-kV") == ["300"]
    assert cmd[-4:] == ["-Wbp", "1", "-FlipVol", "1"]  # extra args last, verbatim
    # 1-based SEC and DarkFrame sections are mapped back to stack index 0
    aln = read_aln(out / f"{NAME}.aln", n_stack=len(ANGLES))
    assert aln.sec_base == 1 and aln.thickness == 612 and aln.alpha_offset == 0.5
    assert aln.local.shape == (8 * 4, 7)
    assert al.excluded == {DARK: DARK_REASON}
    np.testing.assert_allclose(al.y_tilt, ANGLES[1:] + 0.5)  # TILT = nominal + AlphaOffset
    assert al.tilt_offset == 0.5 and al.axis_score == pytest.approx(0.09125)
    assert (out / "TiltSeries_Metrics.csv").is_file()
    assert not (out / "input").exists() and not list(out.glob(".*part*"))


def test_aretomo3_tlt_file_has_dose_column(tmp_path, aretomo3, series, monkeypatch):
    stack, df = series
    df = df.drop(columns=["tfDose"])  # dose from the pre-exposure steps (3 e/A^2)
    import tiltflow.backends.aretomo as at

    seen = {}
    real = at._link

    def spy(src, dst):
        real(src, dst)
        seen["dir"] = dst.parent

    monkeypatch.setattr(at, "_link", spy)

    def keep_copy(work, out_dir):
        seen["tlt"] = (seen["dir"] / f"{NAME}_TLT.txt").read_text()

    monkeypatch.setattr(at, "_publish", keep_copy)
    align_with_aretomo(stack, df, tmp_path / "a", AreTomoOptions(executable=str(aretomo3)))
    rows = [ln.split() for ln in seen["tlt"].splitlines()]
    assert [float(r[0]) for r in rows] == ANGLES.tolist()
    assert [int(r[1]) for r in rows] == [9, 6, 5, 2, 1, 3, 4, 7, 8]
    assert {float(r[2]) for r in rows} == {3.0}


def test_failures_give_one_line_errors_and_leave_no_aln(tmp_path, aretomo2, series, monkeypatch):
    stack, df = series
    out = tmp_path / "align" / NAME
    opts = AreTomoOptions(flavour="aretomo2", executable=str(aretomo2))
    monkeypatch.setenv("FAKE_ARETOMO_FAIL", "1")
    with pytest.raises(ToolError, match=rf"aretomo2 failed on tilt series {NAME} \(exit status 1\); last lines "
                                        r"of its log: .*Error: unable to open MRC file") as e:
        align_with_aretomo(stack, df, out, opts)
    assert "\n" not in str(e.value)
    assert (out / f"{NAME}_aretomo.log").is_file() and not (out / f"{NAME}.aln").exists()
    assert not list(out.glob(".*part*"))
    monkeypatch.delenv("FAKE_ARETOMO_FAIL")
    monkeypatch.setenv("FAKE_ARETOMO_NO_ALN", "1")
    with pytest.raises(ToolError, match=rf"exited normally on tilt series {NAME} but did not write {NAME}.aln"):
        align_with_aretomo(stack, df, out, opts)
    monkeypatch.delenv("FAKE_ARETOMO_NO_ALN")
    monkeypatch.setenv("FAKE_ARETOMO_BAD_ALN", "1")
    with pytest.raises(TiltflowError, match=rf"tilt series {NAME}: .aln has 7 rows and 1 dark frames but the "
                                            r"stack has 9 images"):
        align_with_aretomo(stack, df, out, opts)
    assert not (out / f"{NAME}.aln").exists() and not list(out.glob(".*part*"))


def test_bad_inputs(tmp_path, aretomo2, series):
    stack, df = series
    opts = AreTomoOptions(flavour="aretomo2", executable=str(aretomo2))
    with pytest.raises(TiltflowError, match="stack has 9 images but the table has 8 rows"):
        align_with_aretomo(stack, df.iloc[:8], tmp_path / "o", opts)
    with pytest.raises(TiltflowError, match="stack not found"):
        align_with_aretomo(tmp_path / "none.mrc", df, tmp_path / "o", opts)
    with pytest.raises(TiltflowError, match="no nominal tilt axis"):
        align_with_aretomo(stack, df.drop(columns=[star.NOMINAL_AXIS]), tmp_path / "o", opts)
    with pytest.raises(ToolError, match="does not exist"):
        align_with_aretomo(stack, df, tmp_path / "o", AreTomoOptions(executable=str(tmp_path / "no" / "AreTomo2")))


def test_version_parsing():
    assert parse_version("AreTomo2 version 1.1.3\nBuilt on Aug 19 2024").flavour == "aretomo2"
    v = parse_version("version 1.0.16, built on Jul 11 2024")  # AreTomo3 1.x prints no name
    assert (v.flavour, v.version) == ("aretomo3", "1.0.16")
    assert parse_version("AreTomo3 version 2.3.1").flavour == "aretomo3"
    assert parse_version("Usage: something else") is None


def test_helpers():
    assert acquisition_order([6.0, 0.0, 3.0, 3.0]).tolist() == [4, 1, 2, 3]
    assert align_z_pixels(300, 1.35) == 2222
    with pytest.raises(TiltflowError):
        align_z_pixels(0, 1.0)
    df = pd.DataFrame({star.PRE_EXPOSURE: [0.0, 2.5, 5.0]})
    np.testing.assert_allclose(per_tilt_dose(df), [2.5, 2.5, 2.5])
    assert per_tilt_dose(pd.DataFrame({star.PRE_EXPOSURE: [0.0, 0.0]})) is None
    log = "Best tilt axis:   57, Score:   0.07568\nBest tilt axis:    3, Score:   0.01000\n"
    assert parse_axis_score(log) == pytest.approx(0.07568) and parse_axis_score("nothing") is None
