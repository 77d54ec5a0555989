"""Tilt schemes (acquisition order), settings and presets of the simulator."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tiltflow.errors import TiltflowError
from tiltflow.simulate.config import PRESETS, make_config, parse_size
from tiltflow.simulate.schemes import acquisition_order


def test_dose_symmetric_groups_of_two_match_empiar_10164():
    order = acquisition_order("dose-symmetric", -60, 60, 3, group_size=2)
    assert order[:9] == [0.0, 3.0, -3.0, -6.0, 6.0, 9.0, -9.0, -12.0, 12.0]
    assert len(order) == 41 and sorted(order) == [float(a) for a in range(-60, 61, 3)]


def test_dose_symmetric_group_one_is_the_classic_hagen_scheme():
    assert acquisition_order("dose-symmetric", -9, 9, 3, group_size=1) == [0.0, 3.0, -3.0, 6.0, -6.0, 9.0, -9.0]


def test_dose_symmetric_finishes_the_longer_branch():
    order = acquisition_order("dose-symmetric", -6, 12, 3, group_size=2)
    assert order == [0.0, 3.0, -3.0, -6.0, 6.0, 9.0, 12.0]


def test_dose_symmetric_groups_of_three():
    assert acquisition_order("dose-symmetric", -12, 12, 3, group_size=3)[:7] == [0.0, 3.0, 6.0, -3.0, -6.0, -9.0, 9.0]


def test_bidirectional_goes_up_then_down_from_the_start_angle():
    assert acquisition_order("bidirectional", -9, 9, 3, start=-3) == [-3.0, 0.0, 3.0, 6.0, 9.0, -6.0, -9.0]


def test_unidirectional_goes_from_min_to_max():
    assert acquisition_order("unidirectional", -50, 50, 10) == [float(a) for a in range(-50, 51, 10)]


def test_bad_schemes_are_user_errors():
    with pytest.raises(TiltflowError):
        acquisition_order("spiral", -60, 60, 3)
    with pytest.raises(TiltflowError):
        acquisition_order("bidirectional", -60, 60, 3, start=70)


def test_presets_have_the_documented_sizes():
    tiny, test, demo = make_config("tiny"), make_config("test"), make_config("demo")
    assert (tiny.n_tilts, tiny.size, tiny.frames) == (11, (128, 128), 4)
    assert (test.n_tilts, test.size, test.frames) == (21, (256, 256), 6)
    assert (demo.n_tilts, demo.size, demo.frames, demo.dose_per_tilt) == (41, (1024, 1024), 8, 3.0)
    assert demo.scheme == "dose-symmetric" and demo.group_size == 2
    assert set(PRESETS) == {"tiny", "test", "demo", "demo-ctf"}
    ctf = make_config("demo-ctf")  # the demo, only further from focus (make demo-ctf)
    assert (ctf.defocus_min, ctf.defocus_max) == (6.0, 8.0) and (demo.defocus_min, demo.defocus_max) == (3.0, 5.0)
    assert ctf == replace(demo, defocus_min=6.0, defocus_max=8.0)


def test_explicit_values_override_the_preset():
    cfg = make_config("tiny", frames=7, size="160x96", pixel_size=None, hand=-1)
    assert cfg.frames == 7 and cfg.size == (160, 96) and cfg.pixel_size == PRESETS["tiny"]["pixel_size"]
    assert cfg.width == 160 and cfg.height == 96 and cfg.hand == -1


@pytest.mark.parametrize("bad", [
    dict(tilt_min=10, tilt_max=-10), dict(scheme="zigzag"), dict(gain_rotate=4), dict(gain_flip=3), dict(hand=0),
    dict(defocus_min=5, defocus_max=3), dict(frames=0), dict(size="16"), dict(movie_format="eer"),
    dict(dark_tilts=11), dict(pixel_size=-1), dict(tilt_max=85), dict(frames_subdir="../x"),
])
def test_invalid_settings_are_one_line_user_errors(bad):
    with pytest.raises(TiltflowError) as exc:
        make_config("tiny", **bad)
    assert "\n" not in str(exc.value)


def test_unknown_preset_and_size_text():
    with pytest.raises(TiltflowError):
        make_config("huge")
    with pytest.raises(TiltflowError):
        parse_size("12ax4")
    assert parse_size("1440x1024") == (1440, 1024) and parse_size(512) == (512, 512)
