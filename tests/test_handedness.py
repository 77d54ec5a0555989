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


def simulated_ctf_star(root: Path, hand: int, dark_tilts: int = 0, imported_hand: int = 1, **config) -> Path:
    """Simulate a small series of ``hand``; sum its frames x gain into micrographs; write a ctf-like STAR.

    The CTF columns hold the true defocus at the image centre, as a good CTF fit would. ``config``
    overrides the simulation (for weak series: less dose or contrast); rlnTomoHand is ``imported_hand``.
    """
    from tiltflow.io.movies import open_movie
    from tiltflow.io.mrc import read_mrc, write_mrc
    from tiltflow.simulate import make_config, simulate_session

    sess = root / "session"
    settings = dict(size=(512, 512), pixel_size=4.0, tilt_min=-60, tilt_max=60, tilt_step=30, frames=1,
                    contrast=3.0, crowding=0.05, hand=hand, seed=3, thickness=60, drift=0.0, dose_per_tilt=40,
                    defocus_min=2, defocus_max=3, damage=False, dark_tilts=dark_tilts)
    cfg = make_config("test", **{**settings, **config})
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
         star.AMP_CONTRAST: truth.amplitude_contrast, star.HAND: imported_hand}  # whatever the truth
    out = root / "ctf" / s.name / f"{s.name}.star"
    return star.write_tilt_series(star.TiltSeriesStar(s.name, g, pd.DataFrame(rows)), out)


@pytest.mark.parametrize("hand", [1, -1])
def test_exclude_step_finds_the_simulated_hand(tmp_path, monkeypatch, hand):
    from tiltflow.steps.common import run_star_step
    from tiltflow.steps.exclude import Options

    in_star = simulated_ctf_star(tmp_path, hand, dark_tilts=1 if hand == -1 else 0)
    # dark_tol 0.5: at 40 e/A^2 and 3x contrast the std is specimen-dominated and grows with the path length
    # at 60 deg (real tilts at ~3 e/A^2 are shot-noise dominated, where AreTomo's 0.7 is right)
    out = run_star_step("exclude", in_star, "exclude", Options(dark_tol=0.5, device="cpu"), tmp_path)
    ts = star.read_tilt_series(out)
    assert int(ts.globals[star.HAND]) == hand and ts.globals["tfHandSource"] == "measured"
    assert int(ts.globals["tfHandMeasured"]) == hand
    assert float(ts.globals["tfHandZ"]) >= 6.0  # confident (qc/handedness.py's limits)
    assert 0.6 < abs(float(ts.globals["tfHandScale"])) < 1.5  # the gradient has the size geometry predicts
    assert float(ts.globals["tfHandAgreement"]) == 1.0
    side = json.loads((tmp_path / "exclude" / ts.name / f"{ts.name}_hand.json").read_text())
    assert side["hand"] == side["measured"] == side["rlnTomoHand"] == hand and len(side["tilts"]) >= 3
    assert side["confident"] and side["source"] == "measured" and side["imported"] == 1
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
        log = (tmp_path / "exclude" / ts.name / "error.log").read_text()
        assert "replaces the imported rlnTomoHand 1" in log


def test_weak_evidence_keeps_the_imported_hand_and_warns(tmp_path, monkeypatch):
    """A noise-dominated series (0.5 e/A^2, 0.3x contrast) of hand +1, imported as +1 (the user's value).

    With this seed the measurement even points the wrong way (h -3.6, z 3.7, 87% of tilts agree): the
    former limits (z 3, 70%) wrote -1. Now the imported value stays, with a warning and the numbers.
    """
    from tiltflow.qc.report.render import hand_text
    from tiltflow.steps.common import run_star_step
    from tiltflow.steps.exclude import Options

    in_star = simulated_ctf_star(tmp_path, 1, imported_hand=1, seed=3, dose_per_tilt=0.5, contrast=0.3)
    # only the handedness is under test: no tilt is excluded
    out = run_star_step("exclude", in_star, "exclude", Options(dark_tol=0.0, min_ctf_resolution=0, device="cpu"), tmp_path)
    ts = star.read_tilt_series(out)
    g = ts.globals
    assert int(g[star.HAND]) == 1 and g["tfHandSource"] == "imported" and int(g["tfHandMeasured"]) == 0
    side = json.loads((tmp_path / "exclude" / ts.name / f"{ts.name}_hand.json").read_text())
    assert not side["confident"] and side["rlnTomoHand"] == 1 and side["source"] == "imported"
    assert side["z"] < side["limits"]["min_z"] or side["agreement"] < side["limits"]["min_agreement"]
    assert side["measured"] == int(np.sign(side["scale"])) != 0
    log = (tmp_path / "exclude" / ts.name / "error.log").read_text()
    assert f"measured hand {side['measured']:+d}, not confident" in log and "rlnTomoHand stays 1 (imported" in log
    text = hand_text(g)
    assert text.startswith(f"+1 (imported; measured {side['measured']:+d}, not confident: z {side['z']:.1f}")


def test_hand_text_says_what_was_written_and_why():
    from tiltflow.qc.report.render import hand_text

    measured = {star.HAND: -1, "tfHandSource": "measured", "tfHandMeasured": -1, "tfHandScale": -1.01,
                "tfHandZ": 20.7, "tfHandAgreement": 1.0}
    assert hand_text(measured) == "-1 (measured; measured -1, confident: z 20.7, 100% of tilts agree)"
    assert hand_text({star.HAND: 1, "tfHandSource": "--hand", "tfHandMeasured": 0}) == "+1 (--hand)"
    assert hand_text({star.HAND: -1}) == "-1"


def _grad(angle: float, slope: float, i: int = 0) -> TiltGradient:
    return TiltGradient(i, angle, [-100.0, 100.0], [0.0, 200 * slope], [0.5, 0.5], slope)


def test_combine_is_least_squares_on_tan_with_confidence():
    angles = [-60, -40, -20, 20, 40, 60]
    clean = combine([_grad(a, -1.0 * math.tan(math.radians(a)), i) for i, a in enumerate(angles)])
    assert clean.hand == 1 and clean.scale == pytest.approx(1.0) and clean.agreement == 1.0
    flipped = combine([_grad(a, math.tan(math.radians(a)) + (0.05 if a > 0 else -0.05)) for a in angles])
    assert flipped.hand == -1 and flipped.z > 6
    # every tilt agrees but the slopes scatter: z between the former limit 3 and 6 is not confident
    scatter = [1.0, 0.35, 1.5, 0.3, 1.6, 0.4]
    weak = combine([_grad(a, -k * math.tan(math.radians(a))) for a, k in zip(angles, scatter, strict=True)])
    assert weak.agreement == 1.0 and 3 < weak.z < 6 and weak.hand == 0 and weak.measured == 1
    assert "z " in weak.note and "< 6" in weak.note
    # one 60-degree tilt of six against: 70% agree (weights |tan|), below 90%
    against = combine([_grad(a, (1 if a == 60 else -1) * math.tan(math.radians(a))) for a in angles])
    w = np.abs(np.tan(np.radians(angles)))
    assert against.agreement == pytest.approx(1 - w[-1] / w.sum()) and against.hand == 0
    assert combine([_grad(a, -math.tan(math.radians(a))) for a in (-40, 40)]).hand == 0  # 2 tilts: too few
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


def test_the_measured_hand_does_not_depend_on_the_thread_count(tmp_path, monkeypatch):
    """Nextflow runs exclude with task.cpus threads, `tiltflow run` with its share of the cores: same STAR values."""
    from tiltflow.steps.common import run_star_step
    from tiltflow.steps.exclude import Options

    in_star = simulated_ctf_star(tmp_path, 1)
    found = {}
    for n in ("1", "2"):
        monkeypatch.setenv("TILTFLOW_THREADS", n)
        out = run_star_step("exclude", in_star, f"exclude{n}", Options(dark_tol=0.5, device="cpu"), tmp_path)
        g = star.read_tilt_series(out).globals
        found[n] = [g[k] for k in ("tfHandScale", "tfHandZ", "tfHandAgreement")]
    assert found["1"] == found["2"]
