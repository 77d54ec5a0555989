"""Bad input to `tiltflow align`: one clear error naming the series, and nothing half-written."""

from __future__ import annotations

import stat

import numpy as np
import pytest

from tiltflow.align.pipeline import align_stack
from tiltflow.errors import TiltflowError
from tiltflow.io.mrc import write_mrc
from tiltflow.steps.align import Options
from tiltflow.steps.common import run_star_step
from tiltflow.testing import align_series


def make_project(root, s):
    return align_series.write_stack_project(root, s, "TS_01", 10.0, 83.5)


@pytest.fixture()
def project(tmp_path):
    return tmp_path


def _no_outputs(root, name="TS_01"):
    d = root / "align" / name
    return not (d / f"{name}.star").exists() and not (d / f"{name}.aln").exists()


def test_too_few_tilts(project):
    s = align_series.make_series(size=32, tilt_step=30, n_dark=0)  # 5 tilts -> 4 after dropping one
    s.images = s.images[:4]
    s.nominal_tilts = s.nominal_tilts[:4]
    in_star = make_project(project, s)
    with pytest.raises(TiltflowError, match="TS_01.*only 4 tilts"):
        run_star_step("align", in_star.relative_to(project), "align", root=project, options=Options(device="cpu"))
    assert _no_outputs(project)


def test_all_tilts_dark():
    s = align_series.make_series(size=32, tilt_step=10, n_dark=0)
    noise = np.random.default_rng(0).normal(5.0, 1.0, s.images.shape)  # counts, no specimen anywhere
    with pytest.raises(TiltflowError, match="TS_09: all 13 tilts are dark or blank"):
        align_stack(noise, s.nominal_tilts, 85.0, 1.0, name="TS_09")
    with pytest.raises(TiltflowError, match="TS_09: all 13 tilts are dark or blank"):
        align_stack(np.zeros_like(s.images), s.nominal_tilts, 85.0, 1.0, name="TS_09")


def test_mostly_dark_leaves_too_few(project):
    s = align_series.make_series(size=32, tilt_step=10, n_dark=9)
    with pytest.raises(TiltflowError, match="only 4 usable tilts"):
        align_stack(s.images, s.nominal_tilts, 85.0, 1.0, name="TS_01")


def test_stack_does_not_match_table(project):
    s = align_series.make_series(size=32, tilt_step=10, n_dark=0)
    in_star = make_project(project, s)
    write_mrc(project / "stack" / "TS_01" / "TS_01.mrc", s.images[:-2], 10.0)
    with pytest.raises(TiltflowError, match="TS_01: the stack has 11 sections but the STAR table has 13"):
        run_star_step("align", in_star.relative_to(project), "align", root=project, options=Options(device="cpu"))
    assert _no_outputs(project)


def test_missing_stack_and_bad_backend(project):
    s = align_series.make_series(size=32, tilt_step=10, n_dark=0)
    in_star = make_project(project, s)
    (project / "stack" / "TS_01" / "TS_01.mrc").unlink()
    with pytest.raises(TiltflowError, match="TS_01: stack not found"):
        run_star_step("align", in_star.relative_to(project), "align", root=project, options=Options(device="cpu"))
    with pytest.raises(TiltflowError, match="unknown align backend"):
        run_star_step("align", in_star.relative_to(project), "align", root=project, options=Options(backend="imod"))
    assert _no_outputs(project)


def test_aretomo_exiting_non_zero(project):
    s = align_series.make_series(size=32, tilt_step=10, n_dark=0)
    in_star = make_project(project, s)
    exe = project / "AreTomo2"
    exe.write_text("#!/bin/sh\necho 'AreTomo2 version 1.1.2'\necho 'CUDA error: out of memory' >&2\nexit 3\n")
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    with pytest.raises(TiltflowError, match="TS_01"):
        run_star_step("align", in_star.relative_to(project), "align", root=project,
            options=Options(backend="aretomo2", executable=str(exe), device="cpu"))
    assert _no_outputs(project)
    assert not any(p.name.endswith(".part") for p in (project / "align").rglob("*"))
