"""Invariants of order and dose for generated sessions (hypothesis)."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tiltflow.metadata.mdoc import format_mdoc, parse_mdoc_text
from tiltflow.metadata.movies import MovieIndex
from tiltflow.metadata.series import build_series


@st.composite
def acquisitions(draw):
    """(angles in acquisition order, doses, scheme name) for a generated tilt scheme."""
    scheme = draw(st.sampled_from(["unidirectional", "bidirectional", "dose-symmetric"]))
    step = draw(st.sampled_from([1.0, 2.0, 3.0]))
    start = draw(st.floats(-20, 20)).__round__(2)
    if scheme == "unidirectional":
        n = draw(st.integers(2, 30))
        angles = [start + i * step for i in range(n)]
    elif scheme == "bidirectional":
        up, down = draw(st.integers(1, 15)), draw(st.integers(1, 15))
        angles = [start + i * step for i in range(up + 1)] + [start - i * step for i in range(1, down + 1)]
    else:
        group = draw(st.integers(1, 4))
        per_side = draw(st.integers(group + 1, 15))
        plus = [start + i * step for i in range(1, per_side + 1)]
        minus = [start - i * step for i in range(1, per_side + 1)]
        angles, side = [start], 0
        while plus or minus:
            src = plus if side == 0 else minus
            angles += src[:group]
            del src[:group]
            side = 1 - side
    doses = draw(st.lists(st.floats(0.5, 5.0), min_size=len(angles), max_size=len(angles)))
    return angles, [round(d, 4) for d in doses], scheme


def _text(angles, doses, times, file_order, dose_key, year4, spaces):
    sections = []
    for z, i in enumerate(file_order):
        fmt = "%d-%b-%Y" if year4 else "%d-%b-%y"
        keys = {"TiltAngle": angles[i], "SubFramePath": rf"D:\f\m_{i}.tif", "NumSubFrames": 5,
                "DateTime": times[i].strftime(fmt) + " " * spaces + times[i].strftime("%H:%M:%S")}
        if dose_key == "ExposureDose":
            keys["ExposureDose"] = doses[i]
        else:  # frame doses, several groups
            keys["ExposureDose"] = 0
            keys["FrameDosesAndNumber"] = f"{doses[i] / 10:.10g} 4  {doses[i] / 10:.10g} 6"
        sections.append(("ZValue", z, keys))
    return format_mdoc({"PixelSpacing": 2.0}, ["SerialEM: x", "Tilt axis angle = 85.0, binning = 1"], sections)


@settings(max_examples=60, deadline=None)
@given(
    acq=acquisitions(),
    gaps=st.lists(st.integers(1, 400), min_size=60, max_size=60),
    t0=st.datetimes(min_value=datetime(2001, 1, 1), max_value=datetime(2060, 1, 1)),
    order_kind=st.sampled_from(["acquisition", "angle", "shuffled"]),
    seed=st.randoms(use_true_random=False),
    dose_key=st.sampled_from(["ExposureDose", "FrameDosesAndNumber"]),
    year4=st.booleans(),
    spaces=st.integers(1, 2),
)
def test_order_and_dose_invariants(acq, gaps, t0, order_kind, seed, dose_key, year4, spaces):
    angles, doses, scheme = acq
    n = len(angles)
    t0 = t0.replace(microsecond=0)
    times = [t0 + timedelta(seconds=sum(gaps[:i])) for i in range(n)]
    idx = list(range(n))
    if order_kind == "angle":
        idx.sort(key=lambda i: angles[i])
    elif order_kind == "shuffled":
        seed.shuffle(idx)
    md = parse_mdoc_text(_text(angles, doses, times, idx, dose_key, year4, spaces), Path("/nonexistent/TS_9.mrc.mdoc"))
    ts = build_series(md, MovieIndex())

    assert [t.tilt_angle for t in ts.tilts] == pytest.approx(angles)  # acquisition order, whatever the file order
    assert [t.acquisition_index for t in ts.tilts] == list(range(n))
    pre = [t.pre_exposure for t in ts.tilts]
    assert pre[0] == 0.0
    assert all(b > a for a, b in zip(pre, pre[1:], strict=False))  # strictly increasing
    assert [b - a for a, b in zip(pre, pre[1:], strict=False)] == pytest.approx(doses[:-1], rel=1e-6)
    assert ts.total_dose == pytest.approx(sum(doses), rel=1e-6)
    assert ts.scheme == scheme
    assert not ts.dropped


@settings(max_examples=25, deadline=None)
@given(acq=acquisitions(), seed=st.randoms(use_true_random=False))
def test_result_independent_of_section_order(acq, seed):
    angles, doses, _ = acq
    times = [datetime(2022, 8, 1, 10) + timedelta(seconds=30 * i) for i in range(len(angles))]
    idx = list(range(len(angles)))
    where = Path("/nonexistent/TS_9.mrc.mdoc")
    a = build_series(parse_mdoc_text(_text(angles, doses, times, idx, "ExposureDose", True, 2), where), MovieIndex())
    seed.shuffle(idx)
    b = build_series(parse_mdoc_text(_text(angles, doses, times, idx, "ExposureDose", False, 1), where), MovieIndex())
    key = [(t.tilt_angle, t.pre_exposure, t.dose, t.acquisition_index, t.movie_name) for t in a.tilts]
    assert key == [(t.tilt_angle, t.pre_exposure, t.dose, t.acquisition_index, t.movie_name) for t in b.tilts]
