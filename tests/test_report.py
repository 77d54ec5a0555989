"""``tiltflow report``: the one-page session report from a results folder (complete or partial)."""

from __future__ import annotations

import re

import pytest

from builders import results_folder


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    return results_folder(tmp_path_factory.mktemp("report") / "OUT")


def test_the_report_table_and_the_run_summary_agree(session):
    """One reading of a series' results (qc/report/collect.SeriesResults) behind both tables."""
    from tiltflow.qc.report.collect import collect
    from tiltflow.qc.report.render import series_summary as report_row
    from tiltflow.runner.summary import HEADER, rows, series_summary

    data = collect(session)
    assert [sd.name for sd in data.series] == ["TS_01", "TS_02"]
    for sd in data.series:
        report = report_row(data, sd)
        run = dict(zip(HEADER, rows([series_summary(session, sd.name)])[0], strict=True))
        # built independently: 9 tilts; tilt 2 by the user, 3 (motion 90 A), 5 (CTF 24 A) and 8 (dark)
        # excluded; kept tilts 0, 1, 4, 6, 7 have mean defocus 2.95 + 0.03 i um; residuals 1..3 px
        assert report["tilts used"] == "5 / 9" and run["tilts used"] == "5/9"
        assert report["excluded"] == run["excluded"] == "4"
        assert report["defocus (um)"] == "2.95 - 3.16" and run["defocus (um)"] == "2.95-3.16"
        assert report["align residual"] == run["residual (px)"] == "2.00"
        assert report["tilt axis (deg)"] == "84.2 (aligned)" and run["tilt axis"] == "84.20"
        assert report["tomogram"] == run["tomogram"] == f"reconstruct/{sd.name}/rec_{sd.name}.mrc"


def test_report_shows_the_whole_session(session, monkeypatch, tmp_path):
    from tiltflow.cli import main

    monkeypatch.chdir(tmp_path)  # paths in the STAR files resolve against OUT, not the cwd
    assert main(["report", str(session)]) == 0
    page = (session / "report" / "report.html").read_text()
    # summary: both series, tilts used / total (3 by rules, 1 by the user, of 9), handedness disagreement
    summary = re.search(r"<table id='summary'>.*?</table>", page, re.S).group(0)
    assert "TS_01" in summary and "TS_02" in summary and "5 / 9" in summary
    assert "84.2 (aligned)" in summary and "rec_TS_01.mrc" in summary and "2.00" in summary
    assert "id='hand-warning'" in page and "TS_02 (-1)" in page
    # every exclusion with its reason
    assert "excluded: total motion 90.0 A, limit 60 A" in page
    assert "excluded: CTF fit resolution 24.0 A, limit 15 A" in page
    assert "excluded by user (--exclude-tilts)" in page and "dark image" in page
    # self-contained: images are data URIs, no network references, PNGs beside the page
    srcs = re.findall(r"<img src='([^']*)'", page)
    assert len(srcs) >= 2 * 9 and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert not re.search(r"(src|href)=['\"]?(https?:)?//", page)
    for f in ("ctf_vs_tilt.png", "motion.png", "dose.png", "alignment.png", "tilts.png", "tomogram.png"):
        assert (session / "report" / "TS_01" / f).stat().st_size > 1000
    assert len(list((session / "report" / "TS_01").glob("ctf_*.png"))) >= 3
    assert "Time per step: ctf 12.5 s, exclude" in page
    # the tomogram with and without CTF correction, its power spectrum, what was corrected
    assert "CTF correction: phaseflip; exposure weighting: on" in page and "21 e/A^2: weight 0.5 at 10.5 A" in page
    assert (session / "report" / "TS_01" / "tomogram_spectrum.png").stat().st_size > 1000
    assert (session / "report" / "TS_02" / "tomogram_spectrum.png").is_file()
    assert page.count("CTF correction: ") == 1  # TS_02's STAR says nothing about a correction


def test_text_is_escaped_and_partial_sessions_do_not_crash(tmp_path):
    from tiltflow.qc.report import write_report

    out = results_folder(tmp_path / "OUT", names=("TS_<b>",), through="ctf")
    page = write_report(out).read_text()
    assert "TS_&lt;b&gt;" in page and "<b>" not in page.split("<body>")[1].split("<script>")[0]
    assert "Not run (yet): import, motioncor, exclude, stack, align, reconstruct" in page
    assert "No tomogram yet" in page
    empty = tmp_path / "EMPTY"
    empty.mkdir()
    assert "no tilt-series results found" in write_report(empty).read_text()
