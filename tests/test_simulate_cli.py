"""``tiltflow simulate OUT``: options reach the session, user errors exit 2, --overwrite replaces a session."""

from __future__ import annotations

import json

from tiltflow.cli import main


def test_cli_writes_a_session_with_the_given_options(tmp_path, capsys):
    out = tmp_path / "sess"
    rc = main(["simulate", str(out), "--preset", "tiny", "--tilt-step", "25", "--scheme", "bidirectional",
               "--start-angle", "-25", "--size", "96x64", "--frames", "3", "--gain-rotate", "3", "--gain-flip", "1",
               "--tilt-axis", "-95.5", "--hand", "-1", "--dark-tilts", "1", "--no-damage", "--seed", "9",
               "--threads", "1"])
    assert rc == 0
    assert "simulated 1 tilt series" in capsys.readouterr().out
    truth = json.loads((out / "ground_truth.json").read_text())
    s = truth["series"][0]
    assert [round(t["nominal_tilt_angle"]) for t in s["tilts"]] == [-25, 0, 25, 50, -50]
    assert s["tilt_axis"] == -95.5 and s["hand"] == -1 and s["scheme"] == "bidirectional"
    assert truth["gain"] == {"file": "gain.mrc", "rotate": 3, "flip": 1} and truth["frames"] == 3
    assert truth["image_size"] == [96, 64] and s["tilts"][-1]["dark"] is True
    assert "Tilt axis angle = -95.5" in (out / "TS_01.mrc.mdoc").read_text()


def test_cli_user_errors_exit_2(tmp_path, capsys):
    assert main(["simulate", str(tmp_path / "x"), "--preset", "tiny", "--scheme", "spiral"]) == 2
    assert "--scheme must be one of" in capsys.readouterr().err
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    assert main(["simulate", str(tmp_path / "busy"), "--preset", "tiny"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"


def test_overwrite_replaces_only_the_previous_session(tmp_path):
    out = tmp_path / "sess"
    args = ["simulate", str(out), "--preset", "tiny", "--tilt-step", "25", "--size", "64", "--threads", "1"]
    assert main(args) == 0
    assert main(args + ["--movie-format", "mrc"]) == 2  # refuses without --overwrite
    assert main(args + ["--movie-format", "mrc", "--overwrite"]) == 0
    assert not list(out.glob("*.tif")) and len(list(out.glob("TS_01_0*.mrc"))) == 5
