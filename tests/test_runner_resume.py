"""Per-step records: when a step may be skipped and when it must run again."""

from __future__ import annotations

import json

from tiltflow.runner import resume
from tiltflow.runner.plan import StepCall, forced_from


def _finished_step(root, options=None):
    """A fake finished step ``ctf/TS_01`` reading ``motioncor/TS_01/TS_01.star``."""
    (root / "motioncor" / "TS_01").mkdir(parents=True)
    (root / "motioncor" / "TS_01" / "TS_01.star").write_text("data_global\n")
    out = root / "ctf" / "TS_01"
    out.mkdir(parents=True)
    (out / "TS_01.star").write_text("result\n")
    (out / "spectrum.png").write_bytes(b"x" * 10)
    (out / "console.log").write_text("log\n")
    exp = resume.Expected(resume.inputs_of(root, ["motioncor/TS_01/TS_01.star"], ["motioncor/TS_01"]),
                          options or {"res_max": 5.0, "box": (512, 512)})
    resume.write_record(root, "ctf/TS_01", "ctf", "TS_01", exp)
    return exp


def test_record_lists_outputs_not_logs_and_matches(tmp_path):
    exp = _finished_step(tmp_path)
    rec = json.loads((tmp_path / "ctf/TS_01" / resume.RECORD).read_text())
    assert rec["outputs"] == {"ctf/TS_01/TS_01.star": 7, "ctf/TS_01/spectrum.png": 10}
    assert rec["inputs"]["motioncor/TS_01/.tiltflow-step.json"] == "missing"
    assert resume.up_to_date(tmp_path, "ctf", "ctf/TS_01", exp) == (True, "up to date")


def test_changed_option_input_or_output_means_run_again(tmp_path):
    exp = _finished_step(tmp_path)
    ok, why = resume.up_to_date(tmp_path, "ctf", "ctf/TS_01", resume.Expected(exp.inputs, {"res_max": 4.0,
                                                                                           "box": [512, 512]}))
    assert not ok and "res_max" in why
    (tmp_path / "motioncor/TS_01/TS_01.star").write_text("data_global\n# changed\n")
    new = resume.Expected(resume.inputs_of(tmp_path, ["motioncor/TS_01/TS_01.star"], ["motioncor/TS_01"]),
                          exp.options)
    assert resume.up_to_date(tmp_path, "ctf", "ctf/TS_01", new) == (False, "inputs changed (TS_01.star)")
    (tmp_path / "ctf/TS_01/spectrum.png").write_bytes(b"x" * 3)  # truncated by a crash of something else
    assert not resume.up_to_date(tmp_path, "ctf", "ctf/TS_01", exp)[0]
    assert not resume.up_to_date(tmp_path, "ctf", "ctf/TS_01", resume.Expected(exp.inputs, exp.options, "9.9"))[0]


def test_upstream_record_chains_into_downstream_inputs(tmp_path):
    _finished_step(tmp_path)
    before = resume.inputs_of(tmp_path, [], ["ctf/TS_01"])
    exp2 = resume.Expected({}, {"res_max": 3.0})
    resume.write_record(tmp_path, "ctf/TS_01", "ctf", "TS_01", exp2)
    assert resume.inputs_of(tmp_path, [], ["ctf/TS_01"]) != before


def test_force_reruns_the_step_and_everything_after_it():
    assert forced_from("align") == {"align", "reconstruct", "export", "report"}
    assert forced_from(None) == set()


def test_stepcall_calls_the_named_function(tmp_path):
    call = StepCall("x", None, "x", "tiltflow.steps.common:at_root", ("a",))
    assert call(tmp_path) == tmp_path / "a"
