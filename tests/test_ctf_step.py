"""``tiltflow ctf`` with the built-in backend: STAR columns, files, CLI, series pass, bad input."""

from __future__ import annotations

import math
from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd
import pytest

from tiltflow import star
from tiltflow.cli import main as cli_main
from tiltflow.ctffit.ctffind_files import read_avrot, read_summary
from tiltflow.errors import TiltflowError
from tiltflow.steps.common import run_star_step
from tiltflow.steps.ctf import Options, run_series, tilt_res_max
from tiltflow.testing.ctf_micrograph import synthetic_micrograph

PX = 3.0


def write_series(root: Path, defoci: list[float], tilts: list[float], *, astig: float = 400.0, angle: float = 30.0,
                 snr: float = 0.2, noise_only: int | None = None, missing: int | None = None) -> Path:
    """Motion-corrected micrographs with known CTFs and the STAR file motioncor would write."""
    frames = root / "motioncor" / "TS_01" / "frames"
    frames.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (d, tilt) in enumerate(zip(defoci, tilts, strict=True)):
        rel = Path("motioncor/TS_01/frames") / f"TS_01_{i:03d}_{tilt:.1f}".replace(".", "_").replace("-", "m")
        rel = rel.with_suffix(".mrc")
        if i != missing:
            img = synthetic_micrograph((384, 384), PX, d + astig / 2, d - astig / 2, angle, amplitude_contrast=0.1,
                                       snr=1e-5 if i == noise_only else snr, seed=i, tilt_angle=tilt, tilt_axis=85.0,
                                       gradient_sign=-1)
            with mrcfile.new(root / rel, overwrite=True) as m:
                m.set_data(img)
                m.voxel_size = PX
        rows.append({star.MOVIE: f"frames/TS_01_{i:03d}_{tilt:.1f}.tif", star.NOMINAL_TILT: tilt,
                     star.NOMINAL_AXIS: 85.0, star.PRE_EXPOSURE: 3.0 * i, star.NOMINAL_DEFOCUS: -3.0,
                     star.MICROGRAPH: str(rel)})
    g = {star.VOLTAGE: 300.0, star.CS: 2.7, star.AMP_CONTRAST: 0.1, star.TS_PIXEL_SIZE: PX,
         star.ORIGINAL_PIXEL_SIZE: PX, star.HAND: 1}
    return star.write_tilt_series(star.TiltSeriesStar("TS_01", g, pd.DataFrame(rows)),
                                  root / "motioncor" / "TS_01" / "TS_01.star")


def test_cli_builtin_writes_relion_columns_and_files(tmp_path):
    defoci = [30000.0, 31000.0, 29500.0]
    in_star = write_series(tmp_path, defoci, [0.0, 20.0, -20.0])
    rc = cli_main(["ctf", "--root", str(tmp_path), str(in_star.relative_to(tmp_path)), "--outdir", "ctf", "--res-max", "7",
                   "--png", "1,3", "--astigmatism", "series", "--defocus-range", "1"])
    assert rc == 0
    out = star.read_tilt_series(tmp_path / "ctf/TS_01/TS_01.star")
    t = out.tilts
    for col in (star.CTF_IMAGE, star.DEFOCUS_U, star.DEFOCUS_V, star.ASTIGMATISM, star.DEFOCUS_ANGLE, star.CTF_FOM,
                star.CTF_MAX_RES):
        assert col in t, col
    assert star.PHASE_SHIFT not in t  # only with --phase-shift
    assert star.ICE_RING not in t  # a 3 A pixel does not reach the ice ring at 3.7 A
    mean = (t[star.DEFOCUS_U] + t[star.DEFOCUS_V]) / 2
    assert np.allclose(mean, defoci, atol=250)
    assert (t[star.DEFOCUS_U] >= t[star.DEFOCUS_V]).all()
    assert np.allclose(t[star.ASTIGMATISM], t[star.DEFOCUS_U] - t[star.DEFOCUS_V], atol=0.02)
    assert t[star.ASTIGMATISM].nunique() == 1  # one astigmatism for the series
    assert t[star.CTF_MAX_RES].between(5, 25).all()
    assert t[star.MOVIE].tolist() == star.read_tilt_series(in_star).tilts[star.MOVIE].tolist()  # rows kept
    assert set(t["tfCtfGradientSign"]) <= {-1, 0, 1}  # too small an image here to tell the sign
    for i, img in enumerate(t[star.CTF_IMAGE]):
        assert img.endswith("_PS.ctf:mrc") and img.startswith("ctf/TS_01/frames/")
        path = tmp_path / img[:-4]
        with mrcfile.open(path) as m:
            assert m.data.ndim == 2 and m.data.shape[0] == m.data.shape[1]
            assert 0.0 <= float(m.data.min()) and float(m.data.max()) <= 1.0
        root = path.name[: -len("_PS.ctf")]
        png = path.with_name(f"{root}_ctf.png")
        if i == 1:
            assert not png.exists()  # --png 1,3: tilts 1 and 3 only
        else:
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        (row,) = read_summary(path.with_name(f"{root}_PS.txt")).rows
        assert row.defocus_1 == pytest.approx(t[star.DEFOCUS_U][i], abs=0.01)
        (prof,) = read_avrot(path.with_name(f"{root}_PS_avrot.txt"))
        assert len(prof.k) > 20 and np.all(np.diff(prof.k) > 0)
    log = (tmp_path / "ctf" / "TS_01" / "console.log").read_text()
    assert "built-in estimator" in log and "series astigmatism" in log


def test_series_prior_rescues_a_tilt_without_rings(tmp_path):
    defoci = [30000.0, 30300.0, 30600.0, 30900.0]
    in_star = write_series(tmp_path, defoci, [0.0, 3.0, -3.0, 6.0], noise_only=2, snr=0.3)
    ts = star.read_tilt_series(in_star)
    new = run_series(ts, tmp_path / "ctf" / "TS_01", Options(res_max=8, png="none"), tmp_path)
    mean = ((new.tilts[star.DEFOCUS_U] + new.tilts[star.DEFOCUS_V]) / 2).to_numpy()
    assert np.allclose(mean[[0, 1, 3]], np.array(defoci)[[0, 1, 3]], atol=250)
    assert abs(mean[2] - 30450) < 600  # no rings: between its neighbours, not at a noise peak
    assert new.tilts[star.CTF_MAX_RES][2] == 25.0  # and flagged: no fit


def test_missing_micrograph_names_the_tilt_and_writes_nothing(tmp_path):
    in_star = write_series(tmp_path, [30000.0, 30000.0], [0.0, 3.0], missing=1)
    with pytest.raises(TiltflowError, match=r"micrograph of tilt 2 \(TS_01_001_3_0.mrc, \+3.0 deg\) not found"):
        run_star_step("ctf", in_star, "ctf", Options(), tmp_path)
    assert not (tmp_path / "ctf" / "TS_01" / "TS_01.star").exists()
    assert not list((tmp_path / "ctf").rglob("*_PS.ctf"))
    assert cli_main(["ctf", "--root", str(tmp_path), str(in_star), "--outdir", "ctf"]) == 2  # one-line user error from the CLI


def test_blank_micrograph_is_an_error(tmp_path):
    in_star = write_series(tmp_path, [30000.0], [0.0])
    ts = star.read_tilt_series(in_star)
    with mrcfile.open(tmp_path / ts.tilts[star.MICROGRAPH][0], "r+") as m:
        m.data[:] = 7.0
    with pytest.raises(TiltflowError, match="tilt 1 .*blank"):
        run_series(ts, tmp_path / "ctf" / "TS_01", Options(), tmp_path)


def test_dose_dependent_maximum_resolution():
    assert tilt_res_max(5.0, 30.0, 0.0, 100.0) == 5.0
    assert tilt_res_max(5.0, 30.0, 60.0, 100.0) == pytest.approx(5.0 * math.exp(0.6))
    assert tilt_res_max(5.0, 30.0, 300.0, 100.0) == pytest.approx(27.0)  # capped at 0.9 x res-min
    assert tilt_res_max(5.0, 30.0, 300.0, 0.0) == 5.0  # switched off


@pytest.mark.parametrize("kw,match", [
    ({"backend": "gctf"}, "--backend"), ({"res_max": 40.0}, "res-max"), ({"box": 63}, "box"),
    ({"png": "a,b"}, "--png"), ({"astigmatism": "global"}, "--astigmatism"), ({"defocus_range": 0.0}, "range"),
])
def test_options_are_checked(kw, match):
    with pytest.raises(TiltflowError, match=match):
        Options(**kw).validate()


def test_no_micrograph_column(tmp_path):
    ts = star.TiltSeriesStar("TS_01", {star.TS_PIXEL_SIZE: 2.0}, pd.DataFrame({star.NOMINAL_TILT: [0.0]}))
    with pytest.raises(TiltflowError, match="run motioncor before ctf"):
        run_series(ts, tmp_path, Options(), tmp_path)
