"""``tiltflow run`` settings: Nextflow's parameter names, params files, precedence, bad keys and tools."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tiltflow.cli import main as cli
from tiltflow.errors import TiltflowError
from tiltflow.runner.params import RunParams, load_params

REPO = Path(__file__).resolve().parents[1]


def _nextflow_params() -> dict[str, str]:
    """The ``params { }`` block of nextflow.config: name -> default as written."""
    text = (REPO / "nextflow.config").read_text()
    block = re.search(r"^params \{(.*?)^\}", text, flags=re.S | re.M).group(1)
    return dict(re.findall(r"^\s*(\w+)\s*=\s*(.+?)\s*$", block, flags=re.M))


def test_params_are_nextflows_params_with_the_same_defaults():
    nf = _nextflow_params()
    ours = RunParams().to_dict()
    assert set(ours) == set(nf)
    for key, text in nf.items():
        value = ours[key]
        if text == "null":
            assert value is None, key
        elif text in ("true", "false"):
            assert value == (text == "true"), key
        elif text.startswith("'"):
            assert value == text.strip("'"), key
        else:
            assert float(value) == float(text), key


def test_params_file_gives_the_same_settings_as_options(tmp_path):
    values = {"mc_throw": 1, "ctf_backend": "builtin", "rec_pixel_size": 12, "exclude_tilts": "TS_01:3",
              "even_odd": False, "thickness": 90, "gain_rotate": 2, "mc_patches": "3 3", "device": "cpu",
              "rec_ctf_correction": "wiener", "rec_dose_weighting": False}
    yml = tmp_path / "params.yaml"
    yml.write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in values.items()))
    js = tmp_path / "params.json"
    js.write_text(json.dumps(values))
    from_yaml = load_params(yml, {})
    assert from_yaml == load_params(js, {}) == load_params(None, values)
    assert from_yaml.mc_throw == 1 and from_yaml.even_odd is False and from_yaml.thickness == 90.0
    # and each step gets the same options object from both
    from tiltflow.runner.options import step_options

    for step in ("stack", "reconstruct"):
        assert step_options(step, from_yaml, False) == step_options(step, load_params(None, values), False)
    rec = step_options("reconstruct", from_yaml, False)
    assert (rec.pixel_size, rec.thickness, rec.halves, rec.device) == (12.0, 90.0, False, "cpu")
    assert (rec.ctf_correction, rec.dose_weighting) == ("wiener", False)
    assert step_options("reconstruct", load_params(None, {}), False).ctf_correction == "phaseflip"


def test_command_line_overrides_the_params_file(tmp_path):
    yml = tmp_path / "p.yml"
    yml.write_text("thickness: 90\nrec_pixel_size: 12\n")
    p = load_params(yml, {"thickness": 150.0, "rec_pixel_size": None})
    assert p.thickness == 150.0 and p.rec_pixel_size == 12.0


def test_unknown_key_names_the_key_and_the_file(tmp_path):
    yml = tmp_path / "params.yaml"
    yml.write_text("mc_throw: 1\nctf_bakend: ctffind5\n")
    with pytest.raises(TiltflowError, match=r"params.yaml.*unknown parameter 'ctf_bakend'"):
        load_params(yml, {})


def test_cli_bad_params_file_is_one_line_and_exit_2(tmp_path, capsys):
    session = tmp_path / "session"
    session.mkdir()
    (session / "TS_01.mrc.mdoc").write_text("PixelSpacing = 1\n")
    yml = tmp_path / "params.yaml"
    yml.write_text("rec_pixelsize: 12\n")
    rc = cli(["run", str(session), "--outdir", str(tmp_path / "out"), "--params-file", str(yml)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and "rec_pixelsize" in err[0] and "params.yaml" in err[0]
    assert not (tmp_path / "out").exists()


def test_bad_values_and_missing_tools_stop_before_any_work(tmp_path, monkeypatch):
    with pytest.raises(TiltflowError, match="gain_rotate"):
        load_params(None, {"gain_rotate": 5})
    with pytest.raises(TiltflowError, match="'mc_throw'"):
        load_params(None, {"mc_throw": "one"})
    with pytest.raises(TiltflowError, match="choose one of builtin"):
        load_params(None, {"ctf_backend": "gctf"})
    with pytest.raises(TiltflowError, match="rec_ctf_correction must be one of none, phaseflip"):
        load_params(None, {"rec_ctf_correction": "novactf"})
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("RELION_MOTIONCOR2_EXECUTABLE", raising=False)
    with pytest.raises(TiltflowError, match="motioncor2: MotionCor2 not found"):
        load_params(None, {"motioncor_backend": "motioncor2"})
    tool = tmp_path / "MotionCor2"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    assert load_params(None, {"motioncor_backend": "motioncor2"}).motioncor_backend == "motioncor2"


def test_cli_input_errors_exit_2(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli(["run", str(empty), "--outdir", str(tmp_path / "o")]) == 2
    assert "no .mdoc file" in capsys.readouterr().err
    (empty / "TS_01.mrc.mdoc").write_text("PixelSpacing = 1\n")
    assert cli(["run", str(empty), "--outdir", str(tmp_path / "o"), "--gain", str(tmp_path / "nogain.mrc")]) == 2
    assert "gain reference not found" in capsys.readouterr().err
