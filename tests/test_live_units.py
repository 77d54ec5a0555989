"""The rules ``tiltflow watch`` decides with: complete sections, complete movies, playback order, the page.

Movies here are written with tifffile/mrcfile (independent of tiltflow's readers), and the EER one with
the EER encoder that test_io_movies.py checks against imagecodecs' decoder; the mdoc text is a real
SerialEM section layout (tests/data, PROVENANCE.md).
"""

from __future__ import annotations

import urllib.request
from pathlib import Path

import numpy as np
import pytest

from tiltflow.live.completeness import SizeWatch, Timing, complete_part, movie_problem

DATA = Path(__file__).parent / "data"
TIMING = Timing(movie_stable=1.0, series_idle=30.0)


def _mdoc_text() -> str:
    """A real SerialEM tilt-series mdoc (several sections, final blank line)."""
    for name in sorted(DATA.glob("*.mdoc")):
        text = name.read_text(errors="replace")
        if text.count("[ZValue") >= 3 and "SerialEM" in text and text.endswith("\n"):
            return text
    pytest.fail("no SerialEM tilt-series mdoc in tests/data (tests/data/PROVENANCE.md lists them)")


def test_a_section_being_written_is_cut_off_never_half_read():
    text = _mdoc_text()
    n = text.count("[ZValue")
    whole = complete_part(text, Path("x.mdoc"))
    assert sum(s.kind == "ZValue" for s in whole.sections) == n
    last = text.rfind("[ZValue")
    body = text[last:]
    for cut in (len("[ZVal"), len(body) // 2, len(body) - 2):  # inside the header, mid-keys, before the blank line
        part = complete_part(text[:last + cut], Path("x.mdoc"))
        zs = [s for s in part.sections if s.kind == "ZValue"]
        assert len(zs) == n - 1, cut
        assert zs[-1].keys == [s for s in whole.sections if s.kind == "ZValue"][n - 2].keys
    header_only = text[:text.find("[ZValue")]
    assert complete_part(header_only, Path("x.mdoc")) is None


def test_size_watch_measures_how_long_a_size_held():
    w = SizeWatch()
    assert w.update(10, 100.0) == 0.0
    assert w.update(10, 101.5) == 1.5
    assert w.update(20, 102.0) == 0.0  # grew: the clock restarts
    assert w.update(20, 105.0) == 3.0


def _tiff(path: Path, frames: int) -> Path:
    import tifffile

    data = np.random.default_rng(0).integers(0, 5, (frames, 32, 32), dtype=np.uint8)
    tifffile.imwrite(path, data, compression="lzw")
    return path


def test_tiff_movie_complete_only_when_stable_and_all_frames_readable(tmp_path):
    movie = _tiff(tmp_path / "m.tif", 6)
    assert movie_problem(movie, 6, 2.0, TIMING) is None
    assert movie_problem(movie, 6, 0.2, TIMING) == "movie still growing"
    assert movie_problem(tmp_path / "none.tif", 6, 5.0, TIMING) == "movie not there yet"
    assert movie_problem(movie, 8, 2.0, TIMING) == "movie has 6 of 8 frames"  # the mdoc says 8: wait
    assert movie_problem(movie, 8, 31.0, TIMING) is None  # stable for the series' idle time: taken as it is
    data = movie.read_bytes()
    cut = tmp_path / "cut.tif"
    cut.write_bytes(data[: len(data) * 2 // 3])  # a copy caught mid-transfer
    why = movie_problem(cut, 6, 2.0, TIMING)
    assert why is not None and why != "movie still growing"


def test_mrc_movie_truncated_is_waited_for(tmp_path):
    import mrcfile

    path = tmp_path / "m.mrc"
    with mrcfile.new(path) as m:
        m.set_data(np.zeros((5, 32, 32), np.int8))
    assert movie_problem(path, 5, 2.0, TIMING) is None
    data = path.read_bytes()
    path.write_bytes(data[:-32 * 32])  # the last frame not written yet
    assert movie_problem(path, 5, 2.0, TIMING).startswith("movie not readable yet")


def test_eer_movie_counts_raw_fractions(tmp_path):
    from tiltflow.io.eer import write_eer

    frames = (np.random.default_rng(1).random((12, 16, 16)) < 0.05).astype(np.uint8)
    path = write_eer(tmp_path / "m.eer", frames, pixel_size=1.0)
    assert movie_problem(path, 12, 2.0, TIMING, eer_grouping=4) is None
    assert movie_problem(path, 20, 2.0, TIMING, eer_grouping=4) == "movie has 12 of 20 frames"


def test_playback_events_follow_serialem_order(tmp_path):
    from tiltflow.simulate import make_config
    from tiltflow.simulate.playback import plan_events, play, split_mdoc
    from tiltflow.simulate.session import simulate_session

    cfg = make_config("tiny", n_series=2, tilt_min=-20.0, tilt_max=20.0, session_name="live")
    staging = tmp_path / "staging"
    truth = simulate_session(cfg, staging)
    events = plan_events(truth, staging, interleave=2)
    sections = [e for e in events if e.tilt]
    assert [e.series for e in sections[:4]] == ["TS_01", "TS_02", "TS_01", "TS_02"]  # PACEtomo: targets in turn
    for i, e in enumerate(events):
        if e.tilt:  # the movie the section names was written just before it
            movie = events[i - 1]
            assert movie.source is not None and movie.target in e.text
    assert events[0].target == "gain.mrc" and events[-1].target == "ground_truth.json"
    out = tmp_path / "live"
    sleeps = []
    assert play(events, out, pace=7.0, sleep=sleeps.append) == len(sections)
    assert sleeps == [7.0] * len(sections)
    for f in staging.rglob("*"):  # the played-back session is the batch-simulated one, byte for byte
        if f.is_file():
            assert (out / f.relative_to(staging)).read_bytes() == f.read_bytes(), f.name
    header, secs = split_mdoc((staging / "TS_01.mrc.mdoc").read_text())
    assert header + "".join(secs) == (staging / "TS_01.mrc.mdoc").read_text() and len(secs) == 5


def test_live_page_reloads_while_watching_and_serves_on_localhost(tmp_path):
    from tiltflow.live import state as st
    from tiltflow.live.page import serve, write_live_page

    track = st.SeriesTrack("TS_01", tmp_path / "TS_01.mrc.mdoc", sections=3)
    track.tilts = {"a": st.TiltTrack("a", 4, state=st.WAITING, why="movie still growing")}
    track.warnings = ["ExposureDose and PriorRecordDose disagree by 30 %"]
    page = write_live_page(tmp_path, tmp_path, {"TS_01": track}, None)
    text = page.read_text()
    assert "location.reload" in text and "movie still growing" in text and "dose" in text.lower()
    final = write_live_page(tmp_path, tmp_path, {"TS_01": track}, None, final=True, stopped_by="idle")
    assert "location.reload" not in final.read_text() and "stopped (idle)" in final.read_text()
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = serve(tmp_path, port)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/live/index.html", timeout=10) as r:
            assert r.status == 200 and b"tiltflow live" in r.read()
    finally:
        server.shutdown()
