"""mdoc parser and writer: SerialEM's layout, real-file quirks, incomplete files."""

from __future__ import annotations

from pathlib import Path

import pytest

from tiltflow.metadata.mdoc import format_mdoc, parse_mdoc_text, read_mdoc, write_mdoc
from tiltflow.metadata.movies import MovieIndex
from tiltflow.metadata.series import IncompleteMdoc, build_series, check_complete

DATA = Path(__file__).parent / "data"


def test_write_mdoc_layout_and_round_trip(tmp_path):
    out = write_mdoc(
        tmp_path / "TS_01.mrc.mdoc",
        {"PixelSpacing": 1.35, "Voltage": 300, "ImageSize": (4096, 4096), "DataMode": 1},
        ["SerialEM: Test scope    30-Nov-15  15:14:20", "    Tilt axis angle = 85.3, binning = 1  spot = 8  camera = 0"],
        [
            ("ZValue", 0, {"TiltAngle": 0.0009998, "SubFramePath": r"D:\DATA\frames\TS_01_000_0.0.tif", "NumSubFrames": 8}),
            ("ZValue", 1, {"TiltAngle": 3.00113, "SubFramePath": "TS_01_001_3.0.tif", "NumSubFrames": 8}),
        ],
    )
    text = out.read_text()
    assert text.startswith("PixelSpacing = 1.35\nVoltage = 300\nImageSize = 4096 4096\nDataMode = 1\n\n[T = SerialEM:")
    assert "\n\n[ZValue = 0]\nTiltAngle = 0.0009998\n" in text
    assert "\n\n[ZValue = 1]\n" in text and text.endswith("\n\n")
    assert not list(tmp_path.glob(".*part*"))  # atomic: no temporary left
    md = read_mdoc(out)
    assert md.header == {"PixelSpacing": "1.35", "Voltage": "300", "ImageSize": "4096 4096", "DataMode": "1"}
    assert md.titles[1].startswith("Tilt axis angle = 85.3")
    assert [(s.kind, s.index) for s in md.sections] == [("ZValue", "0"), ("ZValue", "1")]
    assert md.sections[0].keys["SubFramePath"] == r"D:\DATA\frames\TS_01_000_0.0.tif"
    check_complete(md)  # a file written by write_mdoc is complete
    ts = build_series(md, MovieIndex())
    assert ts.tilt_axis == pytest.approx(85.3) and ts.tilt_axis_source == "title"
    assert [t.tilt_angle for t in ts.tilts] == [0.0009998, 3.00113]


def test_crlf_file_has_no_carriage_returns_in_values():
    md = read_mdoc(DATA / "mdocfile__TS_01.mrc.mdoc")
    assert md.crlf
    assert all("\r" not in v for s in md.sections for v in s.keys.values())
    assert md.sections[0].keys["DateTime"] == "30-Nov-15  15:21:38"
    lf = read_mdoc(DATA / "mdocfile__tilt_series.mdoc")
    assert not lf.crlf
    assert [s.keys for s in md.sections] == [s.keys for s in lf.sections]


def test_unknown_keys_kept_and_bare_title():
    md = parse_mdoc_text(
        "T = SerialEM: scope 08-Oct-21  07:38:24\nVoltage = 300\n\n[FrameSet = 0]\nTiltAngle = 33\n"
        "SomeFutureKey = a b c\nChannelName =\nweird line without equals\n\n"
    )
    assert md.titles == ["SerialEM: scope 08-Oct-21  07:38:24"]
    assert md.header == {"Voltage": "300"}
    assert md.sections[0].kind == "FrameSet"
    assert md.sections[0].keys == {"TiltAngle": "33", "SomeFutureKey": "a b c", "ChannelName": ""}


def test_cut_header_is_incomplete():
    text = format_mdoc({"PixelSpacing": 1.0}, ["SerialEM: x"], [("ZValue", 0, {"TiltAngle": 0})])
    md = parse_mdoc_text(text + "[ZValue = 1")
    with pytest.raises(IncompleteMdoc, match="header cut short"):
        check_complete(md)


def test_partial_last_section_is_incomplete():
    keys = {"TiltAngle": 0.0, "ExposureDose": 2.0, "SubFramePath": "a.tif", "DateTime": "01-Aug-2022  18:58:35"}
    text = format_mdoc({"PixelSpacing": 1.0}, [], [("ZValue", i, keys) for i in range(3)])
    cut = text[: text.rindex("SubFramePath")]  # last section lost its last two keys, ends with newline
    with pytest.raises(IncompleteMdoc, match=r"ZValue = 2\] is partial \(no DateTime, SubFramePath\)"):
        check_complete(parse_mdoc_text(cut))
    with pytest.raises(IncompleteMdoc, match="final newline"):
        check_complete(parse_mdoc_text(text.rstrip("\n")))  # SerialEM file cut mid-line
    with pytest.raises(IncompleteMdoc, match="2 of the expected 5"):
        check_complete(parse_mdoc_text(format_mdoc({}, [], [("ZValue", i, keys) for i in range(2)])), 5)


def test_tomo5_file_without_final_newline_is_complete():
    md = read_mdoc(DATA / "Ot2Rec__Position_1_2.mdoc")
    assert not md.ends_with_newline
    check_complete(md)  # Tomo5: last section has every key of the others
    assert md.sections[-1].keys["CameraLength"] == "NaN"
