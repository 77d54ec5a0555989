"""Defocus handedness: measured on simulated series of both hands (the simulator's ``hand``)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tiltflow import star
from tiltflow.qc.handedness import TiltGradient, choose_tilts, combine, session_hand, strip_positions


def _simulated_ctf_star(root: Path, hand: int, dark_tilts: int = 0) -> Path:
    """Simulate a small series of ``hand``; sum its frames x gain into micrographs; write a ctf-like STAR.

    The CTF columns hold the true defocus at the image centre, as a good CTF fit would.
    """
    from tiltflow.io.movies import open_movie
    from tiltflow.io.mrc import read_mrc, write_mrc
    from tiltflow.simulate import make_config, simulate_session

    sess = root / "session"
    cfg = make_config("test", size=(512, 512), pixel_size=4.0, tilt_min=-60, tilt_max=60, tilt_step=30, frames=1,
                      contrast=3.0, crowding=0.05, hand=hand, seed=3, thickness=60, drift=0.0, dose_per_tilt=40,
                      defocus_min=2, defocus_max=3, damage=False, dark_tilts=dark_tilts)
    truth = simulate_session(cfg, sess)
    s = truth.series[0]
    gain, _ = read_mrc(sess / "gain.mrc")
    rows = []
    for t in s.tilts:
        with open_movie(sess / t.movie) as m:
            img = m.read().sum(0) * gain
        mic = Path("motioncor") / s.name / (Path(t.movie).stem + ".mrc")
        write_mrc(root / mic, img, truth.pixel_size)
        rows.append({star.NOMINAL_TILT: t.nominal_tilt_angle, star.NOMINAL_AXIS: s.tilt_axis,
                     star.PRE_EXPOSURE: t.pre_exposure, star.MICROGRAPH: str(mic),
                     star.DEFOCUS_U: t.defocus_u, star.DEFOCUS_V: t.defocus_v, star.CTF_MAX_RES: 9.0,
                     star.CTF_FOM: 0.3, "tfAcquisitionIndex": t.acquisition_index})
    g = {star.TS_PIXEL_SIZE: truth.pixel_size, star.VOLTAGE: truth.voltage, star.CS: truth.cs,
         star.AMP_CONTRAST: truth.amplitude_contrast, star.HAND: 1}  # import's default, whatever the truth
    out = root / "ctf" / s.name / f"{s.name}.star"
    return star.write_tilt_series(star.TiltSeriesStar(s.name, g, pd.DataFrame(rows)), out)


@pytest.mark.parametrize("hand", [1, -1])
def test_exclude_step_finds_the_simulated_hand(tmp_path, monkeypatch, hand):
    from tiltflow.qc.exclusion import Thresholds
    from tiltflow.steps.exclude import ExcludeOptions, run

    monkeypatch.chdir(tmp_path)
    in_star = _simulated_ctf_star(Path("."), hand, dark_tilts=1 if hand == -1 else 0)
    # dark_tol 0.5: at 40 e/A^2 and 3x contrast the std is specimen-dominated and grows with the path length
    # at 60 deg (real tilts at ~3 e/A^2 are shot-noise dominated, where AreTomo's 0.7 is right)
    out = run(in_star.relative_to(Path(".")), "exclude", ExcludeOptions(Thresholds(dark_tol=0.5), device="cpu"))
    ts = star.read_tilt_series(out)
    assert int(ts.globals[star.HAND]) == hand
    assert int(ts.globals["tfHandMeasured"]) == hand
    assert 0.6 < abs(float(ts.globals["tfHandScale"])) < 1.5  # the gradient has the size geometry predicts
    assert float(ts.globals["tfHandAgreement"]) == 1.0
    side = json.loads((Path("exclude") / ts.name / f"{ts.name}_hand.json").read_text())
    assert side["hand"] == hand and len(side["tilts"]) >= 2
    for t in side["tilts"]:  # slope follows -hand * tan(tilt) tilt by tilt
        assert np.sign(t["slope"]) == -hand * np.sign(t["tilt_angle"])
    excluded = ts.tilts[ts.tilts["tfExcluded"] == 1]
    if hand == -1:  # the simulator's dark tilt (the last acquired) is caught with its numbers
        assert list(excluded["tfAcquisitionIndex"]) == [len(ts.tilts) - 1]
        assert excluded["tfExcludeReason"].iloc[0].startswith("excluded: dark image, mean intensity")
        assert len(side["tilts"]) == 3  # the dark tilt is not used for the hand
    else:
        assert excluded.empty
    if hand == -1:
        log = (Path("exclude") / ts.name / "error.log").read_text()
        assert "replaces the imported rlnTomoHand 1" in log


def _grad(angle: float, slope: float, i: int = 0) -> TiltGradient:
    return TiltGradient(i, angle, [-100.0, 100.0], [0.0, 200 * slope], [0.5, 0.5], slope)


def test_combine_is_least_squares_on_tan_with_confidence():
    angles = [-60, -40, -20, 20, 40, 60]
    clean = combine([_grad(a, -1.0 * math.tan(math.radians(a)), i) for i, a in enumerate(angles)])
    assert clean.hand == 1 and clean.scale == pytest.approx(1.0) and clean.agreement == 1.0
    flipped = combine([_grad(a, math.tan(math.radians(a)) + (0.05 if a > 0 else -0.05)) for a in angles])
    assert flipped.hand == -1 and flipped.z > 3
    rng = np.random.default_rng(0)
    noise = combine([_grad(a, rng.normal(0, 1.0)) for a in angles])
    assert noise.hand == 0 and "too weak" in noise.note
    assert combine([_grad(30, -0.5)]).hand == 0  # one tilt is not enough


def test_strip_positions_and_tilt_choice():
    # axis along y (90 deg): distance from the axis is -x ... q_x = x cos a + y sin a = y for a = 90
    q = strip_positions(np.array([[10.0, 0.0], [0.0, 10.0]]), 90.0)
    assert q == pytest.approx([0.0, 10.0])
    q0 = strip_positions(np.array([[10.0, 5.0]]), 0.0)
    assert q0 == pytest.approx([10.0])
    angles = [0, 3, -3, 20, -20, 40, -40, 60, -60]
    usable = [True] * 8 + [False]
    from tiltflow.qc.handedness import HandOptions

    rows = choose_tilts(angles, usable, HandOptions(max_tilts=3))
    assert sorted(angles[r] for r in rows) == [-40, 40, 60]


def test_session_disagreement_is_reported():
    ok = session_hand({"TS_01": 1, "TS_02": 1, "TS_03": 0})
    assert ok.consistent and ok.consensus == 1 and ok.warning() is None
    bad = session_hand({"TS_01": -1, "TS_02": -1, "TS_03": 1})
    assert bad.consensus == -1 and bad.disagree == ["TS_03"]
    assert "TS_03 (+1)" in bad.warning()
    tie = session_hand({"A": 1, "B": -1})
    assert not tie.consistent
