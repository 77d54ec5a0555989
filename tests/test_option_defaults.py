"""One source for every default: each step's ``Options`` fields against the CLI (typer), the runner's
``RunParams``, nextflow.config and nextflow_schema.json, for every key that feeds a step option.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest
import typer

from tiltflow.runner.options import PARAM_OPTIONS, param_values, step_options
from tiltflow.runner.params import RunParams
from tiltflow.steps import registry
from tiltflow.steps.common import cli_flag, default_of, option_fields

REPO = Path(__file__).resolve().parents[1]
OPTION_STEPS = [s.name for s in registry.STEPS if s.name != "report"]


def _commands() -> dict:
    from tiltflow.cli import app

    return typer.main.get_command(app).commands


def _nextflow_config() -> dict:
    text = (REPO / "nextflow.config").read_text()
    block = re.search(r"^params \{(.*?)^\}", text, flags=re.S | re.M).group(1)
    raw = dict(re.findall(r"^\s*(\w+)\s*=\s*(.+?)\s*$", block, flags=re.M))
    return {k: None if v == "null" else json.loads(v.replace("'", '"')) for k, v in raw.items()}


def _schema() -> dict:
    schema = json.loads((REPO / "nextflow_schema.json").read_text())
    return {k: v for group in schema["$defs"].values() for k, v in group["properties"].items()}


def _same(a, b) -> bool:
    """Equal defaults, whatever container or number type each side keeps them in."""
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
        return a is not None and b is not None and list(a) == list(b)
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    return a == b


@pytest.mark.parametrize("step", OPTION_STEPS)
def test_every_step_has_the_protocol(step):
    module = registry.module(step)
    cls = module.Options
    assert cls.__dataclass_params__.frozen, f"{step}.Options is not frozen"
    cls().validate()  # the defaults are valid
    if registry.get(step).per_series:
        assert callable(module.run_series)
    else:
        assert callable(module.run_session)
    for old in ("run", "run_from_star", "make_stack", "align_series", "exclude_series", "reconstruct_series",
                "prepare_gain", "import_session", "export"):
        assert not hasattr(module, old), f"steps/{step}: old entry point {old} is still there"


@pytest.mark.parametrize("step", OPTION_STEPS)
def test_cli_options_are_the_options_fields_with_their_defaults(step):
    """``tiltflow <step>`` has exactly one option per Options field, named after it, with its default."""
    command = _commands()[step]
    params = {p.name: p for p in command.params if p.name not in ("help", "outdir", "root") and p.opts[0][0] == "-"}
    declared = option_fields(registry.options_class(step))
    assert set(params) == set(declared), f"tiltflow {step}: CLI vs Options fields differ"
    for name, f in declared.items():
        p = params[name]
        assert p.opts[0] == cli_flag(name), f"{step}.{name}: CLI option {p.opts[0]}"
        assert _same(p.default, default_of(f)) or (p.default is None and default_of(f) is None), (
            f"tiltflow {step} {cli_flag(name)}: CLI default {p.default!r} vs Options {default_of(f)!r}")
        assert p.help == f.metadata["help"]


def test_every_run_param_that_feeds_an_option_has_that_options_default():
    """RunParams, nextflow.config and the schema give each key the default of the option it feeds; a key
    whose default is null leaves the option out (the step's default applies, as the Nextflow module does).
    """
    config, schema = _nextflow_config(), _schema()
    params = RunParams().to_dict()
    checked = 0
    for key, targets in PARAM_OPTIONS.items():
        assert key in params and key in config and key in schema, key
        for step, name in targets:
            default = default_of(option_fields(registry.options_class(step))[name])
            for where, value in (("RunParams", params[key]), ("nextflow.config", config[key]),
                                 ("nextflow_schema.json", schema[key].get("default"))):
                if value is None:
                    continue  # not set: the step's own default
                if key == "mc_patches":
                    value = tuple(int(v) for v in str(value).split())
                assert _same(value, default), f"{where} {key}={value!r} but {step} --{name}: {default!r}"
                checked += 1
    assert checked > 60


@pytest.mark.parametrize("step", OPTION_STEPS[:-1])  # export has no options
def test_runner_with_default_params_builds_the_default_options(step):
    """``tiltflow run`` with no settings gives each step exactly what ``tiltflow <step>`` gives by default
    (bar the files the runner names: the gain, the movie folder).
    """
    built = step_options(step, RunParams(), has_gain=False, series="TS_01")
    assert built == registry.options_class(step)()
    assert set(param_values(step, RunParams())) <= {f.name for f in fields(built)}


def test_cli_and_registry_do_not_import_torch():
    code = ("import sys, tiltflow.cli\n"
            "from tiltflow.steps import registry\n"
            "[registry.options_class(s) for s in registry.ORDER if s != 'report']\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
    r = subprocess.run([sys.executable, "-c", "import sys; from tiltflow.cli import main; rc = main(['ctf', '--help']);"
                        "print('torch' in sys.modules)"], capture_output=True, text=True, cwd=REPO)
    assert r.stdout.strip().endswith("False"), r.stdout[-300:] + r.stderr[-300:]


def test_validate_names_the_option_as_typed():
    from tiltflow.errors import TiltflowError
    from tiltflow.steps import align, exclude, reconstruct, stack

    for options, flag in ((stack.Options(bin=0), "--bin"), (align.Options(thickness=0), "--thickness"),
                          (reconstruct.Options(ctf_correction="4d"), "--ctf-correction"),
                          (exclude.Options(hand="up"), "--hand"), (exclude.Options(hand_tilts=1), "--hand-tilts")):
        with pytest.raises(TiltflowError, match=flag):
            options.validate()
