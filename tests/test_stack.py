"""``tiltflow stack``: built-in and (fake) IMOD newstack backends on small synthetic micrographs."""

from __future__ import annotations

import os
from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd
import pytest

from builders import MIC_ANGLES as ANGLES
from builders import MIC_NAME as NAME
from builders import MIC_PS as PS
from builders import MIC_SHAPE as SHAPE
from builders import _mic_image as _image
from builders import micrograph_series as make_series
from fakes import install
from tiltflow import star
from tiltflow.errors import TiltflowError, ToolError
from tiltflow.io.imodfiles import read_file_of_inputs, read_tilt_angles
from tiltflow.steps.common import run_star_step
from tiltflow.steps.stack import Options, bin_image


@pytest.fixture
def project(tmp_path):
    return tmp_path


def run(in_star: Path, outdir: str, options: Options | None = None) -> Path:
    """The stack step on ``in_star`` with the project root explicit (the STAR's folder's grandparent)."""
    return run_star_step("stack", in_star, outdir, options or Options(), in_star.parents[2])


def _stack(path: Path) -> tuple[np.ndarray, float]:
    with mrcfile.open(path, permissive=True) as m:
        return np.array(m.data), float(m.voxel_size.x)


def test_builtin_orders_by_angle_drops_excluded_and_writes_all_outputs(project):
    in_star = make_series(project, excluded={4: "dark image"})
    out = run(in_star, "stack")
    assert out == project / "stack" / NAME / f"{NAME}.star"
    ts = star.read_tilt_series(out)
    kept = [a for i, a in enumerate(ANGLES) if i != 4]
    assert ts.tilts[star.NOMINAL_TILT].tolist() == sorted(kept)
    assert len(ts.tilts) == 6
    assert ts.globals["tfStack"] == f"stack/{NAME}/{NAME}.mrc"
    assert ts.globals["tfStackEven"] == f"stack/{NAME}/{NAME}_EVN.mrc"
    assert ts.globals["tfStackOdd"] == f"stack/{NAME}/{NAME}_ODD.mrc"
    assert ts.globals["tfStackBinning"] == 1
    assert ts.globals["tfStackPixelSize"] == pytest.approx(PS)
    assert ts.globals[star.TS_PIXEL_SIZE] == pytest.approx(PS)

    data, ps = _stack(project / ts.globals["tfStack"])
    assert data.shape == (6, *SHAPE) and ps == pytest.approx(PS)
    order = [i for i in np.argsort(ANGLES, kind="stable") if i != 4]
    for k, i in enumerate(order):
        np.testing.assert_array_equal(data[k], _image(i))
    even, _ = _stack(project / ts.globals["tfStackEven"])
    np.testing.assert_allclose(even[0], _image(order[0]) + 0.5)

    d = project / "stack" / NAME
    np.testing.assert_allclose(read_tilt_angles(d / f"{NAME}.rawtlt"), sorted(kept))
    np.testing.assert_allclose(read_tilt_angles(d / f"{NAME}.tlt"), sorted(kept))
    entries = read_file_of_inputs(d / f"{NAME}.filelist")
    assert [Path(d, e.path).resolve() for e in entries] == [
        (project / p).resolve() for p in ts.tilts[star.MICROGRAPH]]
    assert {e.sections for e in entries} == {"0"}
    log = (d / "console.log").read_text()
    assert "dark image" in log and "left out" in log
    assert not list(d.glob(".*.part*"))


def test_mdoc_describes_each_section(project):
    from tiltflow.metadata.mdoc import read_mdoc

    run(make_series(project), "stack")
    md = read_mdoc(project / "stack" / NAME / f"{NAME}.mdoc")
    zs = [s for s in md.sections if s.kind == "ZValue"]
    assert [s.index for s in zs] == [str(i) for i in range(len(ANGLES))]
    assert [float(s.keys["TiltAngle"]) for s in zs] == sorted(ANGLES)
    first = zs[0]  # -9 deg = acquisition index 6
    assert float(first.keys["PriorRecordDose"]) == pytest.approx(18.0)
    assert float(first.keys["ExposureDose"]) == pytest.approx(3.0)
    assert first.keys["MicrographName"].endswith("_006_-9.0.mrc")
    assert first.keys["SubFramePath"] == "frames/TS_01_006_-9.0.tif"
    assert float(md.header["PixelSpacing"]) == pytest.approx(PS)
    assert any("Tilt axis angle = 85.00" in t for t in md.titles)


def test_binning_halves_shape_and_doubles_pixel_size(project):
    out = run(make_series(project, halves=False), "stack", Options(bin=2))
    ts = star.read_tilt_series(out)
    data, ps = _stack(project / ts.globals["tfStack"])
    assert data.shape == (len(ANGLES), SHAPE[0] // 2, SHAPE[1] // 2)
    assert ps == pytest.approx(2 * PS)
    assert ts.globals["tfStackPixelSize"] == pytest.approx(2 * PS)
    assert "tfStackEven" not in ts.globals
    i = int(np.argmin(ANGLES))
    np.testing.assert_allclose(data[0], _image(i).reshape(12, 2, 15, 2).mean(axis=(1, 3)), rtol=1e-6)


def test_bin_image_uses_the_central_region():
    img = np.arange(7 * 9, dtype=np.float32).reshape(7, 9)
    out = bin_image(img, 2)
    assert out.shape == (3, 4)
    assert out[0, 0] == pytest.approx(img[0:2, 0:2].mean())  # remainder 1 -> offset 0
    out3 = bin_image(img, 3)
    assert out3[0, 0] == pytest.approx(img[0:3, 0:3].mean())
    img8 = np.arange(8 * 8, dtype=np.float32).reshape(8, 8)
    assert bin_image(img8, 3)[0, 0] == pytest.approx(img8[1:4, 1:4].mean())


def test_too_few_tilts_after_exclusion(project):
    in_star = make_series(project, excluded={0: "x", 1: "x", 2: "x"})
    with pytest.raises(TiltflowError, match=r"TS_01 has 4 usable tilts of 7"):
        run(in_star, "stack")
    assert not (project / "stack" / NAME / f"{NAME}.star").exists()
    assert not (project / "stack" / NAME / f"{NAME}.mrc").exists()


def test_missing_micrograph_and_shape_mismatch(project):
    in_star = make_series(project, shapes={3: (24, 32)})
    with pytest.raises(TiltflowError, match=r"TS_01: image is 32x24"):
        run(in_star, "stack")
    os.remove(project / f"motioncor/{NAME}/{NAME}_003_-6.0.mrc")
    with pytest.raises(TiltflowError, match="micrograph not found") as err:
        run(in_star, "stack")
    assert "_003_-6.0.mrc" in str(err.value)


@pytest.fixture
def fake_newstack(tmp_path):
    return install(tmp_path / "bin", "newstack", "newstack")


def test_imod_backend_gives_the_same_outputs(project, fake_newstack):
    in_star = make_series(project, excluded={2: "bad CTF"})
    builtin = star.read_tilt_series(run(in_star, "stack_builtin", Options(bin=2)))
    imod = star.read_tilt_series(run(in_star, "stack", Options(backend="imod", executable=str(fake_newstack),
                                                                  bin=2)))
    pd.testing.assert_frame_equal(builtin.tilts, imod.tilts)
    for key in ("tfStack", "tfStackEven", "tfStackOdd"):
        a, pa = _stack(project / builtin.globals[key])
        b, pb = _stack(project / imod.globals[key])
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-5)
        assert pa == pytest.approx(pb) == pytest.approx(2 * PS)
    d = project / "stack" / NAME
    log = (d / f"{NAME}_newstack.log").read_text()
    assert "-fileinlist" in log and "-bin 2" in log
    assert (d / f"{NAME}_EVN.filelist").is_file()


def test_imod_backend_leaves_no_backup_files(project, fake_newstack):
    """The newstack program renames an existing output to name~ (as IMOD 4.8's did with tiltflow's pre-created
    temporary file): the step must give it a path that does not exist, also when re-run over a stack.
    """
    in_star = make_series(project)
    opts = Options(backend="imod", executable=str(fake_newstack))
    d = project / "stack" / NAME
    first = run(in_star, "stack", opts)
    again = run(in_star, "stack", opts)
    assert first == again and (d / f"{NAME}.mrc").is_file()
    left = sorted(p.name for p in d.iterdir() if p.name.endswith("~") or ".part" in p.name)
    assert left == []


def test_fake_newstack_backs_up_an_existing_output(tmp_path, fake_newstack):
    """The fake does what IMOD does, so the test above would fail with a pre-created output."""
    import subprocess

    img = tmp_path / "a.mrc"
    with mrcfile.new(img) as m:
        m.set_data(np.ones((4, 6), np.float32))
    (tmp_path / "in.txt").write_text("1\na.mrc\n0\n")
    (tmp_path / "out.mrc").write_bytes(b"old")
    subprocess.run([str(fake_newstack), "-fileinlist", "in.txt", "-output", "out.mrc"], cwd=tmp_path, check=True)
    assert (tmp_path / "out.mrc~").read_bytes() == b"old"
    assert mrcfile.read(tmp_path / "out.mrc").shape == (1, 4, 6)


def test_clean_partials_removes_temporary_folders(tmp_path):
    from tiltflow.atomic import clean_partials

    (tmp_path / ".TS_01.abc.part").mkdir()
    (tmp_path / ".TS_01.abc.part" / "TS_01.mrc").write_bytes(b"x")
    (tmp_path / ".TS_01.def.part.mrc").write_bytes(b"x")
    (tmp_path / "TS_01.mrc").write_bytes(b"kept")
    assert clean_partials(tmp_path) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["TS_01.mrc"]


def test_imod_backend_failures_leave_nothing_half_written(project, fake_newstack, monkeypatch):
    in_star = make_series(project, halves=False)
    opts = Options(backend="imod", executable=str(fake_newstack))
    monkeypatch.setenv("FAKE_NEWSTACK_FAIL", "1")
    with pytest.raises(ToolError, match=r"newstack failed on tilt series TS_01 \(exit status 1\); .*ERROR: "
                                        r"NEWSTACK - Opening"):
        run(in_star, "stack", opts)
    d = project / "stack" / NAME
    assert not (d / f"{NAME}.mrc").exists() and not (d / f"{NAME}.star").exists()
    assert not list(d.glob(".*.part*"))
    monkeypatch.delenv("FAKE_NEWSTACK_FAIL")
    monkeypatch.setenv("FAKE_NEWSTACK_NO_OUTPUT", "1")
    with pytest.raises(ToolError, match="exited normally on tilt series TS_01 but did not write"):
        run(in_star, "stack", opts)
    with pytest.raises(ToolError, match="does not exist"):
        run(in_star, "stack", Options(backend="imod", executable=str(Path("nowhere") / "newstack")))


def test_cli_stack(project):
    from tiltflow.cli import main

    in_star = make_series(project, halves=False)
    assert main(["stack", str(in_star), "--root", str(project), "--outdir", "stk", "--bin", "2"]) == 0
    ts = star.read_tilt_series(project / "stk" / NAME / f"{NAME}.star")
    assert ts.globals["tfStackBinning"] == 2
    assert main(["stack", str(in_star), "--root", str(project), "--backend", "nonsense"]) == 2


def test_header_statistics_written_section_by_section_match_the_whole_stack(project):
    """dmin/dmax/dmean/rms (MRC 2014: rms = standard deviation) from numpy over the whole stack, for the
    stack and for EVN/ODD; the voxels are the input micrographs in tilt order (the stack is streamed).
    """
    out = run(make_series(project), "stack")
    ts = star.read_tilt_series(out)
    order = np.argsort(ANGLES, kind="stable")
    for key, offset in (("tfStack", 0.0), ("tfStackEven", 0.5), ("tfStackOdd", -0.5)):
        expected = np.stack([_image(i) + np.float32(offset) for i in order])
        with mrcfile.open(project / ts.globals[key], permissive=True) as m:
            np.testing.assert_array_equal(m.data, expected)
            h = m.header
            assert float(h.dmin) == pytest.approx(float(expected.min()))
            assert float(h.dmax) == pytest.approx(float(expected.max()))
            assert float(h.dmean) == pytest.approx(float(expected.astype(np.float64).mean()), rel=1e-6)
            assert float(h.rms) == pytest.approx(float(expected.astype(np.float64).std()), rel=1e-6)


def test_section_stats_pairwise_update_equals_one_pass_over_all():
    from tiltflow.io.mrc import SectionStats

    rng = np.random.default_rng(3)
    sections = [rng.normal(1e3 * k, 1 + k, size=(5, 7)).astype(np.float32) for k in range(4)]
    s = SectionStats()
    for x in sections:
        s.add(x)
    allx = np.concatenate([x.ravel() for x in sections]).astype(np.float64)
    assert s.n == allx.size and s.dmin == allx.min() and s.dmax == allx.max()
    assert s.mean == pytest.approx(allx.mean(), rel=1e-12)
    assert np.sqrt(s.m2 / s.n) == pytest.approx(allx.std(), rel=1e-10)
