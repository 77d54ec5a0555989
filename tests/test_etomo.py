"""The etomo dataset beside each tomogram: real IMOD files read, written files checked against them.

Expected values come from real etomo/IMOD files (tests/data, PROVENANCE.md) and from two small
numpy models written here from the programs' sources, not from tiltflow:

- IMOD: ``tilt`` back-projects voxel column j, row I of slice l (1-based) to aligned-stack x
  ``xcenIn + X cos(t) - Z sin(t)`` with ``X = j - xcenOut``, ``Z = I - ycenOut``,
  ``xcenIn = nxfull/2 + 0.5``, ``xcenOut = int(w/2) + 0.5 + SHIFTx``, ``ycenOut = int(thick/2) +
  0.5 + SHIFTz`` (flib/tilt/tilt.f90); newstack maps raw to aligned about the centres in pixel-edge
  coordinates, ``(a - w/2) * shrink = A (r - n/2) + d - offset`` (libcfshr/cubinterp.c,
  newstack.f90: offsets subtracted after the transform, in unbinned pixels).
- RELION 5: ``p = Rz(ZRot) Ry(YTilt) (B * voxel - int(S/2)) + shift / px + int(N/2)``
  (``Tomogram::setProjectionMatrix``), and ``readIMODResults`` (align_tiltseries_runner.cpp):
  shift = -(A^-1 d) px, ZRot = acos(A11) signed as the nominal axis, YTilt = .tlt - AngleOffset.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import mrcfile
import numpy as np
import pytest

import builders
from tiltflow import star
from tiltflow.cli import main as cli
from tiltflow.errors import TiltflowError
from tiltflow.io.etomo import read_com, read_edf, write_com, write_edf
from tiltflow.io.imodfiles import read_tilt_angles, read_xf

DATA = Path(__file__).parent / "data"
REAL_EDF = DATA / "etomofiles__TS_001.edf"  # etomo 4.12.17
REAL_NEWST = DATA / "warp2relion-tomo__newst.com"  # etomo 4.10.49
REAL_TILT = DATA / "warp2relion-tomo__tilt.com"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --- the reader on real files -------------------------------------------------------------------
def test_reads_real_edf_files():
    modern = read_edf(REAL_EDF)
    assert len(modern) == 109
    assert modern["Setup.DatasetName"] == "TS_001"
    assert modern["Setup.PixelSize"] == "0.6192"
    assert modern["Setup.ImageRotationA"] == "83.9"
    assert modern["batchruntomo.a.align.AngleOffset"] == "2.85"
    assert modern["Setup"] == "-Infinity,-Infinity"
    assert modern["Setup.A.SizeToOutputInXandY"] == "/"
    old = read_edf(DATA / "IMOD__setup_revision_1_5.edf")
    assert old["Setup.RevisionNumber"] == "1.5" and old["Setup.AxisType"] == "Dual Axis"
    assert read_edf(DATA / "IMOD__setup_revision_1_2.edf")["Setup.RevisionNumber"] == "1.2"


def test_reads_real_com_files():
    tilt = read_com(REAL_TILT).command("tilt")
    assert tilt.numbers("IMAGEBINNED") == [8] and tilt.numbers("THICKNESS") == [2700]
    assert tilt.numbers("FULLIMAGE") == [4092, 5760] and tilt.numbers("SUBSETSTART") == [-2, 0]
    assert tilt.get("RADIAL") == "0.35 0.035" and tilt.get("FakeSIRTiterations") == "10"
    assert tilt.get("PERPENDICULAR") == "" and tilt.get("LOG") is None
    newst = read_com(REAL_NEWST).command("newstack")
    assert newst.get("TransformFile") == "TS_05.mrc.xf" and newst.numbers("BinByFactor") == [8]
    assert newst.numbers("SizeToOutputInXandY") == [512, 720] and newst.separator == "\t"
    assert newst.get("DistortionField") is None  # '#DistortionField .idf' is a comment
    assert read_com(DATA / "cryoCAT__TS_017_tilt.com").command("tilt").get("MODE") == "2"  # 'Mode 2'
    colour = read_com(DATA / "IMOD__newst.com").command("colornewst")
    assert colour.args.startswith("-cnverbose -xform M154_03-03-11.xg") and colour.options == []
    assert read_com(DATA / "IMOD__tilta.com").command("tilt").numbers("XAXISTILT") == [1.94]
    jensen = read_com(DATA / "cryoet-alignment__imod_1_tilt.com").command("tilt")
    assert jensen.numbers("IMAGEBINNED") == [4] and jensen.get("XTILTFILE") == "mka2018-10-01-1.xtilt"
    assert read_com(DATA / "cryoet-alignment__imod_1_newst.com").command("newstack").numbers(
        "SizeToOutputInXandY") == [928, 958]
    xtilt = read_tilt_angles(DATA / "etomofiles__TS_001.xtilt")  # tiltalign's: -0.01 and -0.00
    assert len(xtilt) == 40 and set(np.round(xtilt, 2)) == {-0.01, 0.0}


def test_com_and_edf_round_trip(tmp_path):
    for real in (REAL_NEWST, REAL_TILT, DATA / "IMOD__tilta.com"):
        again = read_com(write_com(tmp_path / real.name, read_com(real)))
        assert [(c.program, c.args, c.options) for c in again.commands] == \
               [(c.program, c.args, c.options) for c in read_com(real).commands]
    props = {"Setup.DatasetName": "TS 1", "Setup.BackupDirectory": r"C:\data=x#1", "Setup.Binning": 1}
    assert read_edf(write_edf(tmp_path / "a.edf", props, comment="x")) == {k: str(v) for k, v in props.items()}


def test_com_errors_name_the_file(tmp_path):
    p = tmp_path / "x.com"
    p.write_text("just text\n")
    with pytest.raises(TiltflowError, match=r"x\.com: \.com file has no \$program line"):
        read_com(p)
    with pytest.raises(TiltflowError, match="not found"):
        read_com(tmp_path / "missing.com")


def test_edf_errors_name_the_file(tmp_path):
    p = tmp_path / "bad.edf"
    p.write_text("#date\nSetup.DatasetName=TS\nno separator here\n")
    with pytest.raises(TiltflowError, match="line 3 of .edf is not key=value") as e:
        read_edf(p)
    assert "bad.edf" in str(e.value)
    with pytest.raises(TiltflowError, match="not found"):
        read_edf(tmp_path / "missing.edf")


# --- the written dataset ------------------------------------------------------------------------
def _reconstruct(root, monkeypatch, b, px, *extra):
    in_star = builders.aligned_series(root, b=b)
    assert builders.reconstruct_cli(root, monkeypatch, in_star, "--outdir", "reconstruct", "--pixel-size", px,
                    "--thickness", 25, *extra) == 0
    return star.read_tilt_series(root / "reconstruct/TS_01/TS_01.star")


def _option_keys(path, program):
    return {k.lower() for k, _ in read_com(path).command(program).options}


def test_dataset_has_every_key_of_a_real_etomo_dataset(tmp_path, monkeypatch):
    monkeypatch.setattr(builders, "N1", (128, 120))  # 128 x 120 at 5 A, stack bin 2, 20 A: binning 4 = 2 x 2
    ts = _reconstruct(tmp_path, monkeypatch, 2, 20, "--method", "sirtlike", "--iterations", 7)
    ds = tmp_path / "reconstruct/TS_01"
    assert ts.globals[star.ETOMO_DIRECTIVE] == "reconstruct/TS_01/TS_01.edf"
    edf = read_edf(tmp_path / ts.globals[star.ETOMO_DIRECTIVE])
    assert set(read_edf(REAL_EDF)) <= set(edf)
    assert edf["Setup.DatasetName"] == "TS_01" and edf["Setup.AxisType"] == "Single Axis"
    assert float(edf["Setup.PixelSize"]) == pytest.approx(builders.TS_PX * 2 / 10)  # nm, of the raw stack
    assert float(edf["Setup.ImageRotationA"]) == pytest.approx(builders.ZROT)
    assert edf["Setup.FiducialessAlignmentA"] == "false"  # else etomo rebuilds .xf from .prexg
    assert edf["Setup.FinalStackBinningA"] == "2"
    n = len(builders.TILTS)
    for suffix in (".xf", "_fid.xf", ".tltxf", ".prexg"):
        assert read_xf(ds / f"TS_01{suffix}").shape == (n, 6)
    np.testing.assert_allclose(read_xf(ds / "TS_01.prexg"), np.tile([1, 0, 0, 1, 0, 0], (n, 1)))
    np.testing.assert_allclose(read_xf(ds / "TS_01_fid.xf"), read_xf(ds / "TS_01.xf"))
    np.testing.assert_allclose(read_tilt_angles(ds / "TS_01.rawtlt"), builders.TILTS)
    np.testing.assert_allclose(read_tilt_angles(ds / "TS_01_fid.tlt"), read_tilt_angles(ds / "TS_01.tlt"))
    np.testing.assert_allclose(read_tilt_angles(ds / "TS_01.xtilt"), 0.0)
    # every option of etomo's newst.com/tilt.com (LOCALFILE only comes with local alignments)
    assert _option_keys(REAL_NEWST, "newstack") <= _option_keys(ds / "newst.com", "newstack")
    assert _option_keys(REAL_TILT, "tilt") - {"localfile"} <= _option_keys(ds / "tilt.com", "tilt")
    newst, tilt = read_com(ds / "newst.com").command("newstack"), read_com(ds / "tilt.com").command("tilt")
    vol = mrcfile.open(tmp_path / ts.globals[star.TOMOGRAM]).data
    assert newst.numbers("BinByFactor") == [2] and newst.numbers("SizeToOutputInXandY") == [vol.shape[2], vol.shape[1]]
    assert newst.get("InputFile") == "../../stack/TS_01/TS_01.mrc" and newst.get("TransformFile") == "TS_01.xf"
    assert (ds / newst.get("InputFile")).is_file()
    assert tilt.numbers("IMAGEBINNED") == [2] and tilt.numbers("THICKNESS") == [vol.shape[0] * 2]
    assert tilt.numbers("FakeSIRTiterations") == [7] and tilt.get("XTILTFILE") == "TS_01.xtilt"
    assert tilt.numbers("XAXISTILT") == [0.0] and tilt.numbers("OFFSET") == [0.0]
    cutoff, sigma = tilt.numbers("RADIAL")
    assert 0 <= cutoff < 0.5 and 0 < sigma <= 0.3


def test_non_integer_binning_shrinks_by_the_exact_factor(tmp_path, monkeypatch):
    ts = _reconstruct(tmp_path, monkeypatch, 3, 20)
    ds = tmp_path / "reconstruct/TS_01"
    newst, tilt = read_com(ds / "newst.com").command("newstack"), read_com(ds / "tilt.com").command("tilt")
    b = ts.globals[star.TOMO_BINNING]
    assert newst.numbers("ShrinkByFactor")[0] == pytest.approx(b / 3, abs=1e-6) and not newst.has("BinByFactor")
    assert tilt.numbers("IMAGEBINNED") == [1] and not tilt.has("FakeSIRTiterations")


def _relion_project(ts, voxel, n1):
    """RELION 5: bin-1 image position (n, 2) of tomogram voxel (x, y, z)."""
    g = ts.globals
    size = (g[star.TOMO_SIZE_X], g[star.TOMO_SIZE_Y], g[star.TOMO_SIZE_Z])
    p = np.array([g[star.TOMO_BINNING] * voxel[k] - size[k] // 2 for k in range(3)], float)
    t = np.deg2rad(ts.tilts[star.Y_TILT].to_numpy(float))
    z = np.deg2rad(ts.tilts[star.Z_ROT].to_numpy(float))
    xa, ya = np.cos(t) * p[0] + np.sin(t) * p[2], np.full(len(t), p[1])
    u = np.stack([np.cos(z) * xa - np.sin(z) * ya, np.sin(z) * xa + np.cos(z) * ya], -1)
    shifts = ts.tilts[[star.X_SHIFT, star.Y_SHIFT]].to_numpy(float) / g[star.TS_PIXEL_SIZE]
    return u + shifts + np.array([n1[0] // 2, n1[1] // 2])


def _ftrunc(a: int, b: int) -> int:
    """Fortran integer division (towards zero)."""
    return int(a / b)


def _imod_project(ds, voxel, thick_vox):
    """IMOD: raw-stack pixel index (n, 2) that tilt + newstack read for voxel (x, y, z) of the rotx'd tomogram."""
    tilt = read_com(ds / "tilt.com").command("tilt")
    newst = read_com(ds / "newst.com").command("newstack")
    xf, angles = read_xf(ds / tilt.get("TILTFILE").replace(".tlt", ".xf")), read_tilt_angles(ds / tilt.get("TILTFILE"))
    n = int(tilt.numbers("IMAGEBINNED")[0])
    thick = _ftrunc(int(tilt.numbers("THICKNESS")[0]), n)
    assert thick == thick_vox
    nfx = (int(tilt.numbers("FULLIMAGE")[0]) + n - 1) // n
    subx = _ftrunc(int(tilt.numbers("SUBSETSTART")[0]), n)
    off = tilt.numbers("OFFSET") + [0.0]
    shift = [v / n for v in tilt.numbers("SHIFT")] + [0.0]
    w, h = (int(v) for v in newst.numbers("SizeToOutputInXandY"))
    xcen_in = nfx / 2.0 + 0.5 - subx
    xcen_out = w // 2 + 0.5 + off[1] / n + shift[0] - (w // 2 + subx - nfx // 2)
    ycen_out = thick // 2 + 0.5 + shift[1]
    j, row, sl = voxel[0] + 1, thick - voxel[2], voxel[1] + 1  # rotx: tilt's row I runs against z
    th = np.deg2rad(angles + off[0])
    x1 = xcen_in + off[1] / n + (j - xcen_out) * np.cos(th) - (row - ycen_out) * np.sin(th)
    edge = np.stack([x1 - 0.5, np.full(len(th), sl - 0.5)], -1)  # 1-based index -> pixel-edge coordinates
    f = newst.numbers("ShrinkByFactor")[0] if newst.has("ShrinkByFactor") else newst.numbers("BinByFactor")[0]
    with mrcfile.open(ds / newst.get("InputFile"), header_only=True) as m:
        ns = np.array([int(m.header.nx), int(m.header.ny)], float)
    a_inv = np.linalg.inv(xf[:, :4].reshape(-1, 2, 2))
    rhs = (edge - np.array([w, h]) / 2.0) * f - xf[:, 4:] + np.array(newst.numbers("OffsetsInXandY"))
    return ns / 2.0 + np.einsum("nij,nj->ni", a_inv, rhs) - 0.5


@pytest.mark.parametrize("b, px, n1", [(3, 20, (134, 128)), (2, 20, (128, 120)), (1, 5, (134, 128))])
def test_imod_model_of_the_com_files_reproduces_tiltflow_geometry(tmp_path, monkeypatch, b, px, n1):
    monkeypatch.setattr(builders, "N1", n1)
    ts = _reconstruct(tmp_path, monkeypatch, b, px)
    with mrcfile.open(tmp_path / ts.globals[star.TOMOGRAM], header_only=True) as m:
        ww, hh, d = int(m.header.nx), int(m.header.ny), int(m.header.nz)
    rng = np.random.default_rng(1)
    voxels = [(0, 0, 0), (ww - 1, hh - 1, d - 1)] + [tuple(rng.integers(0, s) for s in (ww, hh, d)) for _ in range(5)]
    for v in voxels:
        raw = _imod_project(tmp_path / "reconstruct/TS_01", v, d)
        bin1 = np.array([(n1[0] % b) // 2, (n1[1] % b) // 2]) + b * raw + (b - 1) / 2  # the fixture's block binning
        np.testing.assert_allclose(bin1, _relion_project(ts, v, n1), atol=0.01)


def test_per_tilt_axis_angles_keep_the_geometry(tmp_path, monkeypatch):
    """A refined axis per tilt: the stack's half-pixel centre is folded in about the median axis."""
    in_star = builders.aligned_series(tmp_path, b=3)
    ts = star.read_tilt_series(tmp_path / in_star)
    ts.tilts[star.Z_ROT] = builders.ZROT + np.linspace(-1.0, 1.0, len(ts.tilts))  # deg
    star.write_tilt_series(ts, tmp_path / in_star)
    assert builders.reconstruct_cli(tmp_path, monkeypatch, in_star, "--outdir", "reconstruct", "--pixel-size", 20,
                    "--thickness", 25) == 0
    out = star.read_tilt_series(tmp_path / "reconstruct/TS_01/TS_01.star")
    for v in [(0, 0, 0), (33, 31, 11), (10, 20, 5)]:
        raw = _imod_project(tmp_path / "reconstruct/TS_01", v, 12)
        bin1 = np.array([(134 % 3) // 2, (128 % 3) // 2]) + 3 * raw + 1.0
        # residual <= |dZRot| x half a stack pixel (3 bin-1 px / 2) x sqrt(2) = 0.04 px at 1 deg
        np.testing.assert_allclose(bin1, _relion_project(out, v, (134, 128)), atol=0.05)


def test_relion_reads_the_xf_back_as_the_star_alignment(tmp_path, monkeypatch):
    ts = _reconstruct(tmp_path, monkeypatch, 1, 10)
    ds = tmp_path / "reconstruct/TS_01"
    xf, tlt = read_xf(ds / "TS_01.xf"), read_tilt_angles(ds / "TS_01.tlt")
    offset = float(read_edf(ds / "TS_01.edf")["batchruntomo.a.align.AngleOffset"])
    a = xf[:, :4].reshape(-1, 2, 2)
    shift = -np.einsum("nij,nj->ni", np.linalg.inv(a), xf[:, 4:]) * builders.TS_PX
    zrot = np.rad2deg(np.arccos(a[:, 0, 0]))
    zrot = np.where(np.abs(-builders.ZROT - zrot) < np.abs(builders.ZROT - zrot), -zrot, zrot)
    np.testing.assert_allclose(shift, ts.tilts[[star.X_SHIFT, star.Y_SHIFT]].to_numpy(float), atol=5e-3 * builders.TS_PX)
    np.testing.assert_allclose(zrot, ts.tilts[star.Z_ROT], atol=1e-4)
    np.testing.assert_allclose(tlt - offset, ts.tilts[star.Y_TILT], atol=5e-3)


def test_export_points_tomograms_star_at_the_edf(tmp_path, monkeypatch):
    _reconstruct(tmp_path, monkeypatch, 1, 10)
    assert cli(["export", "--root", str(tmp_path), "reconstruct/TS_01/TS_01.star", "--outdir", "relion"]) == 0
    glob = star.read_tomograms(tmp_path / "relion/tomograms.star")
    assert glob[star.ETOMO_DIRECTIVE].tolist() == ["reconstruct/TS_01/TS_01.edf"]
    cols = list(glob.columns)  # RELION 5 (Tomograms job006): after the pixel size, before the binning
    assert cols.index(star.TS_PIXEL_SIZE) < cols.index(star.ETOMO_DIRECTIVE) < cols.index(star.TOMO_BINNING)
    assert (tmp_path / glob[star.ETOMO_DIRECTIVE][0]).is_file()


def test_x_tilt_gives_no_dataset_rather_than_a_wrong_one(tmp_path, monkeypatch):
    in_star = builders.aligned_series(tmp_path, b=1)
    ts = star.read_tilt_series(tmp_path / in_star)
    ts.tilts[star.X_TILT] = 2.0
    ts.globals[star.ETOMO_DIRECTIVE] = "stale/TS_01.edf"
    star.write_tilt_series(ts, tmp_path / in_star)
    assert builders.reconstruct_cli(tmp_path, monkeypatch, in_star, "--outdir", "reconstruct", "--pixel-size", 10,
                    "--thickness", 25) == 0
    out = star.read_tilt_series(tmp_path / "reconstruct/TS_01/TS_01.star")
    assert star.ETOMO_DIRECTIVE not in out.globals
    assert not (tmp_path / "reconstruct/TS_01/TS_01.edf").exists()


# --- IMOD itself, where it is installed -------------------------------------------------------------
def _run_com(ds: Path, name: str) -> None:
    """Run a .com file as IMOD's vmstopy does: each $program with its option lines on stdin."""
    env = dict(os.environ, IMOD_OUTPUT_FORMAT="MRC")
    for cmd in read_com(ds / name).commands:
        lines = "\n".join(f"{k} {v}".strip() for k, v in cmd.options) + "\n"
        subprocess.run([cmd.program, *cmd.args.split()], input=lines, text=True, cwd=ds, env=env, check=True,
                       capture_output=True)


@pytest.mark.skipif(not (shutil.which("newstack") and shutil.which("tilt")),
                    reason="IMOD (newstack, tilt) is not installed: it is not installable from the registries here")
def test_imod_newstack_and_tilt_reproduce_the_tomogram(tmp_path, monkeypatch):
    ts = _reconstruct(tmp_path, monkeypatch, 3, 20)
    ds = tmp_path / "reconstruct/TS_01"
    _run_com(ds, "newst.com")
    _run_com(ds, "tilt.com")
    imod = mrcfile.read(ds / read_com(ds / "tilt.com").command("tilt").get("OutputFile"))
    rotx = np.asarray(imod).transpose(1, 0, 2)[::-1]  # PERPENDICULAR (y, z, x) -> clip rotx -> (z, y, x)
    ours = mrcfile.read(tmp_path / ts.globals[star.TOMOGRAM])
    assert rotx.shape == ours.shape
    assert builders.corr(rotx, ours) > 0.9
