"""``tiltflow report``: the one-page session report from a results folder (complete or partial)."""

from __future__ import annotations

import re
from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd
import pytest

from tiltflow import star

ANGLES = [0.0, 10.0, -10.0, -20.0, 20.0, 30.0, -30.0, -40.0, 40.0]


def _mic(i: int, dark: bool = False) -> np.ndarray:
    rng = np.random.default_rng(i)
    f = np.fft.rfft2(rng.normal(size=(96, 96)))
    ky, kx = np.meshgrid(np.fft.fftfreq(96), np.fft.rfftfreq(96), indexing="ij")
    s = np.fft.irfft2(f * np.exp(-(kx**2 + ky**2) / (2 * 0.04**2)), s=(96, 96))
    return rng.poisson(200.0 * (0.02 if dark else 1.0) * (1 + 0.3 * s / s.std()).clip(0)).astype(np.float32)


def _write(path: Path, data: np.ndarray, ps: float = 4.0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with mrcfile.new(path, overwrite=True) as m:
        m.set_data(data.astype(np.float32))
        m.voxel_size = ps


def build_session(out: Path, names=("TS_01", "TS_02"), through: str = "reconstruct") -> Path:
    """A results folder as `tiltflow run` writes it: motioncor/ctf (synthesised), then the real exclude and
    stack steps, then align/reconstruct STARs with a small tomogram; ``out`` is the project root."""
    from tiltflow.steps import exclude, stack
    from tiltflow.steps.common import run_star_step

    out.mkdir(parents=True, exist_ok=True)
    for k, name in enumerate(names):
        rows = []
        for i, a in enumerate(ANGLES):
            mic = Path("motioncor") / name / f"{name}_{i:03d}_{a:.1f}.mrc"
            _write(out / mic, _mic(10 * k + i, dark=(i == 8)))
            row = {star.NOMINAL_TILT: a, star.NOMINAL_AXIS: 85.0, star.PRE_EXPOSURE: 3.0 * i, "tfDose": 3.0,
                   star.MICROGRAPH: str(mic), star.MOTION_TOTAL: 90.0 if i == 3 else 6.0 + i,
                   star.MOTION_EARLY: 2.0, star.MOTION_LATE: 4.0 + i,
                   star.DEFOCUS_U: 30000.0 + 300 * i, star.DEFOCUS_V: 29000.0 + 300 * i,
                   star.DEFOCUS_ANGLE: 30.0, star.CTF_MAX_RES: 24.0 if i == 5 else 8.0 + 0.5 * i,
                   star.CTF_FOM: 0.2, "tfAcquisitionIndex": i}
            if k == 0:  # a saved diagnostic spectrum for the first series
                ps = Path("ctf") / name / f"{name}_{i:03d}_PS.mrc"
                _write(out / ps, np.fft.fftshift(np.abs(np.fft.fft2(_mic(i))) ** 2))
                row[star.CTF_IMAGE] = f"{ps}:mrc"
            rows.append(row)
        g = {star.TS_PIXEL_SIZE: 4.0, star.VOLTAGE: 300.0, star.CS: 2.7, star.AMP_CONTRAST: 0.1, star.HAND: 1}
        ctf = star.write_tilt_series(star.TiltSeriesStar(name, g, pd.DataFrame(rows)),
                                     out / "ctf" / name / f"{name}.star")
        (out / "ctf" / name / "console.log").write_text(f"x INFO start ctf {name}\nx INFO done ctf {name} in 12.5 s\n")
        if through == "ctf":
            continue
        ex = run_star_step("exclude", ctf, "exclude", exclude.Options(min_ctf_resolution=15.0, hand="keep",
                                                                      exclude_tilts=f"{name}:2"), out)
        st = star.read_tilt_series(run_star_step("stack", ex, "stack", stack.Options(), out))
        al = st.copy()
        n = len(al.tilts)
        al.tilts[star.X_TILT] = 0.0
        al.tilts[star.Y_TILT] = al.tilts[star.NOMINAL_TILT]
        al.tilts[star.Z_ROT] = 84.2
        al.tilts[star.X_SHIFT] = np.linspace(-20, 20, n)
        al.tilts[star.Y_SHIFT] = np.linspace(5, -5, n)
        al.tilts[star.TF_ALIGN_RESIDUAL] = np.linspace(1.0, 3.0, n)
        al.globals["tfHandMeasured"] = 1 if k == 0 else -1
        al.globals["tfHandZ"] = 5.0
        al.globals[star.TS_STAR_FILE] = f"align/{name}/{name}.star"
        star.write_tilt_series(al, out / "align" / name / f"{name}.star")
        rec = al.copy()
        tomo = Path("reconstruct") / name / f"rec_{name}.mrc"
        vol = np.random.default_rng(k).normal(size=(16, 48, 48)).astype(np.float32)
        vol[6:10, 20:28, 20:28] += 5.0
        _write(out / tomo, vol, 10.0)
        rec.globals[star.TOMOGRAM] = str(tomo)
        if k == 0:  # TS_01: CTF-corrected, with the uncorrected central slices reconstruct writes
            rec.globals.update({"tfCtfCorrection": "phaseflip", "tfDoseWeighting": 1})
            rec.tilts["tfDoseHalfWeightAngst"] = rec.tilts[star.PRE_EXPOSURE].astype(float) * 0.5
            for key, img, sfx in (("tfTomogramUncorrectedXY", vol[7], "xy"), ("tfTomogramUncorrectedXZ",
                                                                             vol[:, 24], "xz")):
                p = Path("reconstruct") / name / f"rec_{name}_uncorrected_{sfx}.mrc"
                _write(out / p, -img, 10.0)
                rec.globals[key] = str(p)
        star.write_tilt_series(rec, out / "reconstruct" / name / f"{name}.star")
    return out


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    return build_session(tmp_path_factory.mktemp("report") / "OUT")


def test_the_report_table_and_the_run_summary_agree(session):
    """One reading of a series' results (qc/report/collect.SeriesResults) behind both tables."""
    from tiltflow.qc.report.collect import collect
    from tiltflow.qc.report.render import series_summary as report_row
    from tiltflow.runner.summary import HEADER, rows, series_summary

    data = collect(session)
    assert [sd.name for sd in data.series] == ["TS_01", "TS_02"]
    for sd in data.series:
        report = report_row(data, sd)
        run = dict(zip(HEADER, rows([series_summary(session, sd.name)])[0], strict=True))
        # built independently: 9 tilts; tilt 2 by the user, 3 (motion 90 A), 5 (CTF 24 A) and 8 (dark)
        # excluded; kept tilts 0, 1, 4, 6, 7 have mean defocus 2.95 + 0.03 i um; residuals 1..3 px
        assert report["tilts used"] == "5 / 9" and run["tilts used"] == "5/9"
        assert report["excluded"] == run["excluded"] == "4"
        assert report["defocus (um)"] == "2.95 - 3.16" and run["defocus (um)"] == "2.95-3.16"
        assert report["align residual"] == run["residual (px)"] == "2.00"
        assert report["tilt axis (deg)"] == "84.2 (aligned)" and run["tilt axis"] == "84.20"
        assert report["tomogram"] == run["tomogram"] == f"reconstruct/{sd.name}/rec_{sd.name}.mrc"


def test_report_shows_the_whole_session(session, monkeypatch, tmp_path):
    from tiltflow.cli import main

    monkeypatch.chdir(tmp_path)  # paths in the STAR files resolve against OUT, not the cwd
    assert main(["report", str(session)]) == 0
    page = (session / "report" / "report.html").read_text()
    # summary: both series, tilts used / total (3 by rules, 1 by the user, of 9), handedness disagreement
    summary = re.search(r"<table id='summary'>.*?</table>", page, re.S).group(0)
    assert "TS_01" in summary and "TS_02" in summary and "5 / 9" in summary
    assert "84.2 (aligned)" in summary and "rec_TS_01.mrc" in summary and "2.00" in summary
    assert "id='hand-warning'" in page and "TS_02 (-1)" in page
    # every exclusion with its reason
    assert "excluded: total motion 90.0 A, limit 60 A" in page
    assert "excluded: CTF fit resolution 24.0 A, limit 15 A" in page
    assert "excluded by user (--exclude-tilts)" in page and "dark image" in page
    # self-contained: images are data URIs, no network references, PNGs beside the page
    srcs = re.findall(r"<img src='([^']*)'", page)
    assert len(srcs) >= 2 * 9 and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert not re.search(r"(src|href)=['\"]?(https?:)?//", page)
    for f in ("ctf_vs_tilt.png", "motion.png", "dose.png", "alignment.png", "tilts.png", "tomogram.png"):
        assert (session / "report" / "TS_01" / f).stat().st_size > 1000
    assert len(list((session / "report" / "TS_01").glob("ctf_*.png"))) >= 3
    assert "Time per step: ctf 12.5 s, exclude" in page
    # the tomogram with and without CTF correction, its power spectrum, what was corrected
    assert "CTF correction: phaseflip; exposure weighting: on" in page and "21 e/A^2: weight 0.5 at 10.5 A" in page
    assert (session / "report" / "TS_01" / "tomogram_spectrum.png").stat().st_size > 1000
    assert (session / "report" / "TS_02" / "tomogram_spectrum.png").is_file()
    assert page.count("CTF correction: ") == 1  # TS_02's STAR says nothing about a correction


def test_text_is_escaped_and_partial_sessions_do_not_crash(tmp_path):
    from tiltflow.qc.report import write_report

    out = build_session(tmp_path / "OUT", names=("TS_<b>",), through="ctf")
    page = write_report(out).read_text()
    assert "TS_&lt;b&gt;" in page and "<b>" not in page.split("<body>")[1].split("<script>")[0]
    assert "Not run (yet): import, motioncor, exclude, stack, align, reconstruct" in page
    assert "No tomogram yet" in page
    empty = tmp_path / "EMPTY"
    empty.mkdir()
    assert "no tilt-series results found" in write_report(empty).read_text()
