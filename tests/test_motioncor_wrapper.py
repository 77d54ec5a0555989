"""``tiltflow motioncor --backend motioncor2/3`` against a fake MotionCor that behaves like the real one.

The fake takes MotionCor's flags, prints the parameter dump and a 'Full-frame alignment' table as
MotionCor2 1.5 or 1.6 does, writes the sum (+ _DW with -FmDose, _ODD/_EVN with -SplitSum 1) with the pixel
size x FtBin in the header, answers --version, and fails or writes nothing on demand.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import mrcfile
import numpy as np
import pytest

from test_motion_synth import make_series
from tiltflow import star
from tiltflow.errors import TiltflowError, ToolError
from tiltflow.motion.metadata import read_motion_star
from tiltflow.steps.motioncor import MotionCorOptions, run_from_star

FAKE = r'''#!{python}
import json, os, sys
import numpy as np
import mrcfile

args = sys.argv[1:]
if args == ["--version"]:
    print(os.environ.get("FAKE_MC_VERSION", "MotionCor2 version 1.6.4"))
    sys.exit(0)
opts, key = {}, None
for a in args:
    if a.startswith("-") and a[1:2].isalpha():
        key = a.lower()
        opts[key] = []
    else:
        opts[key].append(a)
record = os.environ.get("FAKE_MC_RECORD")
if record:
    extra = {}
    if "-fmintfile" in opts:
        extra["fmint"] = open(opts["-fmintfile"][0]).read()
    with open(record, "a") as fh:
        fh.write(json.dumps({"argv": args, **extra}) + "\n")
for tag in ("-InMrc", "-InTiff", "-InEer", "-OutMrc", "-Gain", "-FmIntFile", "-Patch", "-FtBin", "-FmDose",
            "-InitDose", "-PixSize", "-kV", "-Throw", "-Trunc", "-SplitSum", "-Gpu"):
    print(f"{tag:<17}{' '.join(opts.get(tag.lower(), []))}")
print()
print("GPU 0 memory: 8107 MB")
if os.environ.get("FAKE_MC_FAIL"):
    print("Error: All GPUs are in use, quit.", file=sys.stderr)
    sys.exit(int(os.environ["FAKE_MC_FAIL"]))
gi = lambda k, d: int(float(opts[k][0])) if k in opts else d
throw, trunc = gi("-throw", 0), gi("-trunc", 0)
ftbin = float(opts["-ftbin"][0]) if "-ftbin" in opts else 1.0
pix = float(opts["-pixsize"][0])
if "-inmrc" in opts:
    with mrcfile.open(opts["-inmrc"][0], permissive=True) as m:
        frames = np.asarray(m.data, dtype=np.float32)
else:  # EER: as many rendered frames as the FmIntFile asks for
    import tifffile
    n_raw, per, _ = open(opts["-fmintfile"][0]).read().split()
    with tifffile.TiffFile(opts["-ineer"][0]) as t:
        h, w = t.pages[0].shape
    s = int(opts.get("-eersampling", ["1"])[0])
    frames = np.ones((int(n_raw) // int(per), h * s, w * s), np.float32)
    print("EER stack: %d  %d  %s" % (w, h, n_raw))
    print("Rendered stack: %d  %d  %d" % (w * s, h * s, len(frames)))
if "-gain" in opts:
    with mrcfile.open(opts["-gain"][0]) as g:
        frames = frames * g.data
used = frames[throw:len(frames) - trunc]
print("Full-frame alignment has been started.")
if os.environ.get("FAKE_MC_LAYOUT") == "1.5":
    print("Full-frame alignment shift")
    for i in range(len(used)):
        print("...... Frame (%3d) shift: %9.3f %9.3f" % (i + 1, 0.5 * i, -0.25 * i))
else:
    print("Full-frame alignment")
    print("  Frame   x Shift   y Shift")
    for i in range(len(used)):
        print("%5d %10.3f %10.3f" % (i + 1, 0.5 * i, -0.25 * i))
print()
print("Global shifts are corrected: 0.08 sec")
if os.environ.get("FAKE_MC_NOOUTPUT"):
    sys.exit(0)
def save(img, path):
    b = int(round(ftbin))
    if b > 1:
        h, w = img.shape[0] // b * b, img.shape[1] // b * b
        img = img[:h, :w].reshape(h // b, b, w // b, b).mean(axis=(1, 3))
    with mrcfile.new(path, overwrite=True) as m:
        m.set_data(img.astype(np.float32))
        m.voxel_size = pix * ftbin
    print("Corrected sum has been saved in:")
    print("   " + path)
    print()
out = opts["-outmrc"][0]
stem = out  # MotionCor3 sGenOutputName: cut the whole path at the first ".mrc", then at the first ".st"
for cut in (".mrc", ".st"):
    i = stem.lower().find(cut)
    stem = stem[:i] if i >= 0 else stem
save(used.sum(axis=0), stem + ".mrc")
if "-fmdose" in opts:
    save(0.9 * used.sum(axis=0), stem + "_DW.mrc")
if opts.get("-splitsum", ["0"])[0] == "1":
    save(used[0::2].sum(axis=0), stem + "_ODD.mrc")
    save(used[1::2].sum(axis=0), stem + "_EVN.mrc")
if "-logdir" in opts:
    open(os.path.join(opts["-logdir"][0], os.path.basename(stem) + "-Patch-Full.log"), "w").write("# full\n")
print("Total time: 1.0 sec")
'''


@pytest.fixture()
def project(tmp_path, monkeypatch):
    """A 2-tilt series under tmp_path (the project root, also the cwd) and a fake MotionCor2 on PATH."""
    monkeypatch.chdir(tmp_path)
    series = make_series(tmp_path, n_tilts=2, n_frames=6, shape=(32, 48))
    exe = tmp_path / "bin" / "MotionCor2"
    exe.parent.mkdir()
    exe.write_text(FAKE.replace("{python}", sys.executable))
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", f"{exe.parent}{os.pathsep}{os.environ['PATH']}")
    record = tmp_path / "calls.jsonl"
    monkeypatch.setenv("FAKE_MC_RECORD", str(record))
    for var in ("FAKE_MC_FAIL", "FAKE_MC_NOOUTPUT", "FAKE_MC_LAYOUT", "TILTFLOW_MOTIONCOR2",
                "RELION_MOTIONCOR2_EXECUTABLE"):
        monkeypatch.delenv(var, raising=False)
    series["record"] = record
    series["exe"] = exe
    return series


def calls(record: Path) -> list[dict]:
    return [json.loads(line) for line in record.read_text().splitlines()]


def test_motioncor2_backend_writes_relion_outputs(project):
    with mrcfile.new("gain/defects.mrc") as m:  # the gain step's dead-pixel map goes to -DefectMap
        m.set_data(np.zeros((32, 48), np.int8))
    opts = MotionCorOptions(backend="motioncor2", gain=Path("gain/gain.mrc"), bin_factor=2, patches=(5, 5))
    out = run_from_star(project["star"], "motioncor", opts)
    assert out == Path("motioncor/TS_01/TS_01.star")
    ts = star.read_tilt_series(out)
    assert ts.globals[star.TS_PIXEL_SIZE] == pytest.approx(4.0)
    row = ts.tilts.iloc[1]
    root = "motioncor/TS_01/frames/TS_01_001_3_0"
    assert row[star.MICROGRAPH] == f"{root}.mrc"
    assert row[star.MICROGRAPH_EVEN] == f"{root}_EVN.mrc" and row[star.MICROGRAPH_ODD] == f"{root}_ODD.mrc"
    assert row[star.POWER_SPECTRUM] == f"{root}_PS.mrc" and row[star.MICROGRAPH_METADATA] == f"{root}.star"
    for sfx in (".mrc", "_EVN.mrc", "_ODD.mrc", "_PS.mrc", ".star", ".log", "-Patch-Full.log"):
        assert Path(root + sfx).is_file(), sfx
    with mrcfile.open(f"{root}.mrc") as m:
        assert m.data.shape == (16, 24) and m.voxel_size.x == pytest.approx(4.0)
        total = np.array(m.data)
    with mrcfile.open(f"{root}_EVN.mrc") as e, mrcfile.open(f"{root}_ODD.mrc") as o:
        np.testing.assert_allclose(e.data + o.data, total, rtol=1e-5)  # the fake's halves, moved unchanged
    # the tool's own log is kept, and the trajectory is MotionCor's table
    assert "Full-frame alignment" in Path(f"{root}.log").read_text()
    traj, general = read_motion_star(f"{root}.star")
    np.testing.assert_allclose(traj.shifts, [[0.5 * i, -0.25 * i] for i in range(6)])
    assert general["rlnMicrographBinning"] == 2.0 and general["rlnMicrographOriginalPixelSize"] == 2.0
    # accumulated motion: 5 steps of |(0.5, -0.25)| px x 2 A/px; tilt 2 starts at 3 e/A^2, 0.5 e/A^2 per frame
    step = np.hypot(0.5, 0.25) * 2.0
    assert row[star.MOTION_TOTAL] == pytest.approx(5 * step, rel=1e-5)
    # RELION's rule: the step into frame f is early if f <= (4 - 3) / 0.5 = 2, so only the first one
    assert row[star.MOTION_EARLY] == pytest.approx(step, rel=1e-5)
    assert row[star.MOTION_LATE] == pytest.approx(4 * step, rel=1e-5)
    argv = calls(project["record"])[1]["argv"]
    joined = " ".join(argv)
    assert argv[:2] == ["-InMrc", str(project["movies"][1].resolve())]
    assert f"-Gain {Path('gain/gain.mrc').resolve()}" in joined
    assert f"-DefectMap {Path('gain/defects.mrc').resolve()}" in joined
    for part in ("-PixSize 2", "-kV 300", "-Patch 5 5", "-FtBin 2", "-SplitSum 1", "-FmRef 0", "-Gpu 0"):
        assert part in joined
    assert "-FmDose" not in joined and "-RotGain" not in joined
    assert "MotionCor2 1.6.4" in Path("motioncor/TS_01/console.log").read_text()
    assert not list(Path("motioncor/TS_01/frames").glob("*part*"))  # MotionCor's work folder is gone


def test_dose_weighting_throw_and_old_log_layout(project, monkeypatch):
    monkeypatch.setenv("FAKE_MC_LAYOUT", "1.5")
    opts = MotionCorOptions(backend="motioncor2", throw=1, dose_weighting=True, even_odd=False)
    ts = star.read_tilt_series(run_from_star(project["star"], "mc", opts))
    assert star.MICROGRAPH_EVEN not in ts.tilts.columns
    argv = " ".join(calls(project["record"])[1]["argv"])
    # 3 e/A^2 over 6 frames; MotionCor restarts its dose count after -Throw, so InitDose includes frame 1
    assert "-FmDose 0.5" in argv and "-InitDose 3.5" in argv and "-Throw 1" in argv
    root = "mc/TS_01/frames/TS_01_001_3_0"
    with mrcfile.open(f"{root}.mrc") as m:
        dw = np.array(m.data)
    raw = mrcfile.read(project["movies"][1])[1:].sum(axis=0)  # no gain in this run
    np.testing.assert_allclose(dw, 0.9 * raw, rtol=1e-4)  # the _DW sum became rlnMicrographName
    traj, _ = read_motion_star(f"{root}.star")
    assert np.isnan(traj.shifts[0]).all() and traj.first_frame == 2
    np.testing.assert_allclose(traj.shifts[1:], [[0.5 * i, -0.25 * i] for i in range(5)])


def test_tool_failure_names_the_tilt_and_writes_no_star(project, monkeypatch):
    before = project["star"].read_bytes()
    monkeypatch.setenv("FAKE_MC_FAIL", "1")
    with pytest.raises(ToolError, match=r"MotionCor2 failed on tilt 1 \(TS_01_000_0\.0\.mrc\).*All GPUs are in use"):
        run_from_star(project["star"], "mc", MotionCorOptions(backend="motioncor2"))
    assert not Path("mc/TS_01/TS_01.star").exists()
    assert project["star"].read_bytes() == before
    frames = Path("mc/TS_01/frames")
    assert not list(frames.glob("*.mrc")) and not list(frames.glob("*part*"))
    assert "All GPUs are in use" in (frames / "TS_01_000_0_0.log").read_text()  # the log is kept
    assert "MotionCor2 failed on tilt 1" in Path("mc/TS_01/error.log").read_text()


def test_tool_that_writes_nothing(project, monkeypatch):
    monkeypatch.setenv("FAKE_MC_NOOUTPUT", "1")
    with pytest.raises(ToolError, match=r"exited normally on tilt 1 .* did not write TS_01_000_0_0\.mrc"):
        run_from_star(project["star"], "mc", MotionCorOptions(backend="motioncor2"))
    assert not Path("mc/TS_01/TS_01.star").exists()


def test_missing_motioncor_and_explicit_executable(project, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(TiltflowError, match=r"MotionCor3 not found .*--executable"):
        run_from_star(project["star"], "mc", MotionCorOptions(backend="motioncor3"))
    # an explicit path works without PATH, and MotionCor3's version line is recognised
    monkeypatch.setenv("FAKE_MC_VERSION", "MotionCor3 version 1.1.2")
    run_from_star(project["star"], "mc", MotionCorOptions(backend="motioncor3", executable=str(project["exe"]),
                                                          extra_args=("-Iter", "10")))
    assert "MotionCor3 version" not in Path("mc/TS_01/error.log").read_text()
    assert "MotionCor3 1.1.2" in Path("mc/TS_01/console.log").read_text()
    assert calls(project["record"])[-1]["argv"][-2:] == ["-Iter", "10"]


def test_eer_movie_gets_an_fmint_file(tmp_path, monkeypatch, project):
    from tiltflow.io.eer import write_eer

    rng = np.random.default_rng(1)
    events = (rng.random((40, 16, 16)) < 0.05).astype(np.uint8)
    write_eer(tmp_path / "frames" / "TS_01_000_0.0.eer", events, pixel_size=2.0)
    ts = star.read_tilt_series(project["star"])
    ts.tilts = ts.tilts.iloc[:1].copy()
    ts.tilts[star.MOVIE] = "frames/TS_01_000_0.0.eer"
    ts.tilts[star.FRAME_COUNT] = 40
    eer_star = star.write_tilt_series(ts, tmp_path / "eer.star")
    opts = MotionCorOptions(backend="motioncor2", eer_grouping=10, eer_sampling=2, dose_weighting=True)
    out = star.read_tilt_series(run_from_star(eer_star, "mc", opts))
    call = calls(project["record"])[-1]
    joined = " ".join(call["argv"])
    assert call["fmint"] == f"40 10 {3.0 / 40:.6g}\n"  # N_raw N_per_frame dose_per_raw_frame
    assert "-InEer" in joined and "-EerSampling 2" in joined
    assert "-FmDose 0.75" in joined and "-InitDose 0" in joined  # 10 fractions x 0.075 e/A^2
    traj, general = read_motion_star(out.tilts.iloc[0][star.MICROGRAPH_METADATA])
    assert traj.n_frames == 4 and general["rlnImageSizeX"] == 32  # 8k rendering of a 16-pixel sensor


def test_a_dotted_folder_does_not_redirect_the_outputs(tmp_path, monkeypatch, project):
    """MotionCor cuts -OutMrc at the first '.st'/'.mrc' anywhere in the path: run it in its own folder."""
    root = tmp_path / "run.stage2"
    root.mkdir()
    monkeypatch.chdir(root)
    series = make_series(root, n_tilts=1, n_frames=4, shape=(32, 32))
    out = star.read_tilt_series(run_from_star(series["star"], "mc", MotionCorOptions(backend="motioncor2")))
    assert Path(out.tilts.iloc[0][star.MICROGRAPH]).is_file()
    assert not list(tmp_path.glob("run*_EVN.mrc")) and not list(tmp_path.glob("run*.mrc"))

