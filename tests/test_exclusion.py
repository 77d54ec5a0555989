"""Tilt exclusion: rules with reasons, user overrides, the exclude step and its effect on stack."""

from __future__ import annotations

from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd
import pytest

from tiltflow import star
from tiltflow.errors import TiltflowError
from tiltflow.qc.exclusion import (
    Thresholds,
    TiltMeasures,
    decide,
    parse_tilt_list,
    residual_exclusions,
    validate_overrides,
)

NAME = "TS_01"
ANGLES = [0.0, 10.0, -10.0, -20.0, 20.0, 30.0, -30.0, -40.0, 40.0]  # acquisition order
PS = 4.0


def _micrograph(i: int, shape=(96, 96), dark: bool = False, blank: bool = False) -> np.ndarray:
    """Smooth 'specimen' times a beam of ~200 counts with Poisson noise; dark = 2% of the counts."""
    rng = np.random.default_rng(i)
    f = np.fft.rfft2(rng.normal(size=shape))
    ky, kx = np.meshgrid(np.fft.fftfreq(shape[0]), np.fft.rfftfreq(shape[1]), indexing="ij")
    spec = np.fft.irfft2(f * np.exp(-(kx**2 + ky**2) / (2 * 0.03**2)), s=shape)
    spec = spec / spec.std()
    beam = 200.0 * (0.02 if dark else 1.0)
    expected = beam * (1.0 + (0.0 if blank else 0.3) * spec)
    return rng.poisson(np.clip(expected, 0, None)).astype(np.float32)


def make_ctf_star(root: Path, dark=(), blank=(), motion=None, ctf_res=None, fom=None) -> Path:
    """A ctf-step STAR (acquisition order) with micrographs under root/motioncor/TS_01/."""
    mc = root / "motioncor" / NAME
    mc.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, a in enumerate(ANGLES):
        stem = f"{NAME}_{i:03d}_{a:.1f}"
        with mrcfile.new(mc / f"{stem}.mrc", overwrite=True) as m:
            m.set_data(_micrograph(i, dark=i in dark, blank=i in blank))
            m.voxel_size = PS
        rows.append({
            star.NOMINAL_TILT: a, star.NOMINAL_AXIS: 85.0, star.PRE_EXPOSURE: 3.0 * i,
            star.MICROGRAPH: f"motioncor/{NAME}/{stem}.mrc",
            star.MOTION_TOTAL: (motion or {}).get(i, 8.0), star.MOTION_EARLY: 3.0, star.MOTION_LATE: 5.0,
            star.DEFOCUS_U: 30000.0, star.DEFOCUS_V: 29500.0,
            star.CTF_MAX_RES: (ctf_res or {}).get(i, 9.0), star.CTF_FOM: (fom or {}).get(i, 0.2),
            "tfAcquisitionIndex": i, "tfZValue": i, "tfDose": 3.0,
        })
    g = {star.TS_PIXEL_SIZE: PS, star.VOLTAGE: 300.0, star.CS: 2.7, star.AMP_CONTRAST: 0.1, star.HAND: -1}
    path = root / "ctf" / NAME / f"{NAME}.star"
    return star.write_tilt_series(star.TiltSeriesStar(NAME, g, pd.DataFrame(rows)), path)


@pytest.fixture
def project(tmp_path):
    return tmp_path


# --- rules -----------------------------------------------------------------------------------------
def test_each_rule_gives_a_reason_with_the_numbers():
    th = Thresholds(max_motion=50, max_early_motion=20, min_ctf_resolution=15, min_ctf_score=0.05)
    ms = [
        TiltMeasures(0, 0.0, 10, 5, 8, 0.2, dark_ratio=10.0, contrast=0.8),
        TiltMeasures(1, 3.0, 10, 5, 24.0, 0.2, dark_ratio=10.0, contrast=0.8),
        TiltMeasures(2, -3.0, 75.5, 5, 8, 0.2, dark_ratio=10.0, contrast=0.8),
        TiltMeasures(3, -6.0, 10, 25, 8, 0.01, dark_ratio=10.0, contrast=0.8),
        TiltMeasures(4, 6.0, 10, 5, 8, 0.2, dark_ratio=3.0, contrast=0.8),
        TiltMeasures(5, 9.0, 10, 5, 8, 0.2, dark_ratio=10.0, contrast=0.02),
        TiltMeasures(6, -9.0, 10, 5, float("inf"), 0.2, dark_ratio=10.0, contrast=0.8),
    ]
    d = decide(ms, th)
    assert [x.excluded for x in d] == [False, True, True, True, True, True, True]
    assert d[1].reason == "excluded: CTF fit resolution 24.0 A, limit 15 A"
    assert d[2].reason == "excluded: total motion 75.5 A, limit 50 A"
    assert "early motion 25.0 A, limit 20 A" in d[3].reason and "CTF fit score 0.010, limit 0.05" in d[3].reason
    assert d[4].reason.startswith("excluded: dark image, |mean|/std 3 <= 0.7 x 10")
    assert d[5].reason.startswith("excluded: blank image, specimen contrast 0.020")
    assert "none (no rings fitted)" in d[6].reason
    # switching rules off keeps everything
    off = Thresholds(None, None, None, None, dark_tol=0, blank_tol=0)
    assert not any(x.excluded for x in decide(ms, off))


def test_warp_intensity_rule_scales_with_cos_tilt():
    ms = [TiltMeasures(0, 0.0, mean_intensity=100.0), TiltMeasures(1, 60.0, mean_intensity=15.0),
          TiltMeasures(2, 60.0, mean_intensity=5.0)]
    d = decide(ms, Thresholds())
    assert [x.excluded for x in d] == [False, False, True]  # limit 0.2 x 0.5 x 100 = 10
    assert d[2].reason == "excluded: dark image, mean intensity 5 < 0.2 x cos(tilt) x 100 (lowest tilt)"


def test_dark_reference_is_the_lowest_tilt_and_survives_a_dark_zero_tilt():
    ms = [TiltMeasures(i, a, dark_ratio=r) for i, (a, r) in enumerate([(0, 0.0), (5, 9.0), (-5, 10.0), (10, 2.0)])]
    d = decide(ms, Thresholds())
    assert [x.excluded for x in d] == [True, False, False, True]
    assert "dark or empty" in d[0].reason


def test_user_overrides_win_and_contradictions_are_errors():
    ms = [TiltMeasures(i, 3.0 * i, motion_total=100.0 if i == 2 else 5.0) for i in range(4)]
    d = decide(ms, Thresholds(max_motion=50), exclude={1}, keep={2})
    assert [x.excluded for x in d] == [False, True, False, False]
    assert d[1].source == "user-exclude" and "--exclude-tilts" in d[1].reason
    assert d[2].source == "user-keep" and "overrides excluded: total motion 100.0 A" in d[2].reason
    with pytest.raises(TiltflowError, match="both --exclude-tilts and --keep-tilts"):
        decide(ms, Thresholds(), exclude={1}, keep={1})


def test_parse_tilt_list_syntax_and_errors():
    assert parse_tilt_list("TS_01:3,4;TS_02:7-9") == {"TS_01": {3, 4}, "TS_02": {7, 8, 9}}
    assert parse_tilt_list("TS_01:3 TS_01:5") == {"TS_01": {3, 5}}
    assert parse_tilt_list("Position_1:2:0") == {"Position_1:2": {0}}  # the last colon separates
    assert parse_tilt_list("") == {} and parse_tilt_list(None) == {}
    for bad in ("TS_01", "TS_01:a", "TS_01:5-3", ":3", "TS_01:"):
        with pytest.raises(TiltflowError):
            parse_tilt_list(bad)
    with pytest.raises(TiltflowError, match="no tilt series named TS_09"):
        validate_overrides({"TS_09": {1}}, ["TS_01", "TS_02"], "--exclude-tilts")


def test_residual_rule_for_the_align_step():
    assert residual_exclusions([2.0, 30.0, float("nan"), 9.9], 10.0) == {1: "excluded: alignment residual 30.0 A, "
                                                                         "limit 10 A"}
    assert residual_exclusions({5: 50.0}, None) == {}


# --- the step ----------------------------------------------------------------------------------------
def test_exclude_step_marks_rows_writes_reasons_and_stack_drops_them(project):
    from tiltflow.cli import main
    from tiltflow.steps.common import run_star_step
    from tiltflow.steps.stack import Options as StackOptions

    in_star = make_ctf_star(project, dark=(8,), blank=(5,), motion={3: 120.0}, ctf_res={7: 24.0})
    rc = main(["exclude", "--root", str(project), str(in_star), "--outdir", "exclude", "--min-ctf-resolution", "15", "--hand", "keep",
               "--exclude-tilts", "TS_01:1;TS_02:4", "--keep-tilts", "TS_01:3"])
    assert rc == 0
    out = project / "exclude" / NAME / f"{NAME}.star"
    ts = star.read_tilt_series(out)
    assert len(ts.tilts) == len(ANGLES)  # rows stay; the flag marks them
    assert list(ts.tilts["tfAcquisitionIndex"]) == list(range(len(ANGLES)))
    excluded = dict(zip(ts.tilts["tfAcquisitionIndex"], ts.tilts["tfExcluded"], strict=True))
    assert {i for i, e in excluded.items() if e} == {1, 5, 7, 8}
    reasons = dict(zip(ts.tilts["tfAcquisitionIndex"], ts.tilts["tfExcludeReason"].fillna(""), strict=True))
    assert "dark image, mean intensity" in reasons[8]
    assert "blank image" in reasons[5]
    assert reasons[7] == "excluded: CTF fit resolution 24.0 A, limit 15 A"
    assert "excluded by user" in reasons[1]
    assert "kept by user" in reasons[3] and "total motion 120.0 A" in reasons[3]
    assert int(ts.globals[star.HAND]) == -1  # --hand keep
    tsv = (project / "exclude" / NAME / "exclusions.tsv").read_text().splitlines()
    assert tsv[0].startswith("acquisition_index\ttilt_angle\texcluded") and len(tsv) == len(ANGLES) + 1
    assert "8\t40.00\t1\tauto\texcluded: dark image" in tsv[9]
    log = (project / "exclude" / NAME / "console.log").read_text()
    assert "4 of 9 tilts excluded" in log and "CTF fit resolution 24.0 A" in log

    stacked = star.read_tilt_series(run_star_step("stack", out, "stack", StackOptions(), project))
    assert sorted(stacked.tilts["tfAcquisitionIndex"]) == [0, 2, 3, 4, 6]  # excluded rows dropped, as RELION
    assert list(stacked.tilts[star.NOMINAL_TILT]) == sorted(stacked.tilts[star.NOMINAL_TILT])
    with mrcfile.open(project / "stack" / NAME / f"{NAME}.mrc") as m:
        assert m.data.shape[0] == 5


def test_unknown_index_and_forced_hand(project, capsys):
    from tiltflow.cli import main

    in_star = make_ctf_star(project)
    assert main(["exclude", "--root", str(project), str(in_star), "--exclude-tilts", "TS_01:3,42", "--hand", "keep"]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("tiltflow: error")]
    assert len(err) == 1 and "no tilt with acquisition index 42 (valid: 0-8)" in err[0]
    assert main(["exclude", "--root", str(project), str(in_star), "--hand", "1"]) == 0
    ts = star.read_tilt_series(project / "exclude" / NAME / f"{NAME}.star")
    assert int(ts.globals[star.HAND]) == 1 and not ts.tilts["tfExcluded"].any()


def test_missing_micrograph_is_a_one_line_error(project, capsys):
    from tiltflow.cli import main

    in_star = make_ctf_star(project)
    (project / "motioncor" / NAME / f"{NAME}_004_20.0.mrc").unlink()
    assert main(["exclude", "--root", str(project), str(in_star), "--hand", "keep"]) == 2
    assert "micrograph not found" in capsys.readouterr().err
