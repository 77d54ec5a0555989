"""``tiltflow follow`` (the pipeline's --watch rule): series announced once each, only when complete; the
watch ends on idle or the stop file, naming the series never complete.

A tiny simulated session is played back event by event (tiltflow.simulate.playback: SerialEM's order,
movie then its mdoc section, two series interleaved) from the follower's own sleep, on a clock the test
advances, so every decision is seen at a known point of the acquisition and nothing depends on timing.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tiltflow.live.completeness import Timing
from tiltflow.live.follow import END, SERIES_PREFIX, follow_session
from tiltflow.runner.params import RunParams

TILTS = 5


@pytest.fixture(scope="module")
def staged(tmp_path_factory):
    from tiltflow.simulate import make_config
    from tiltflow.simulate.session import simulate_session
    from tiltflow.simulate.truth import load_truth

    staging = tmp_path_factory.mktemp("follow") / "staging"
    cfg = make_config("tiny", n_series=2, tilt_min=-20.0, tilt_max=20.0, session_name="session")
    simulate_session(cfg, staging)
    return staging, load_truth(staging / "ground_truth.json")


class Player:
    """The follower's sleep: apply the next playback event and let ``step`` seconds pass."""

    def __init__(self, events, session: Path, ready: Path, step: float = 1.0):
        self.events, self.session, self.ready, self.step = list(events), session, ready, step
        self.now, self.applied = 0.0, []
        self.seen: dict[str, float] = {}  # announcement -> the clock when it was first there

    def clock(self) -> float:
        return self.now

    def sleep(self, _seconds: float) -> None:
        from tiltflow.simulate.playback import apply

        for f in self.ready.glob(f"{SERIES_PREFIX}*"):
            self.seen.setdefault(f.name[len(SERIES_PREFIX):], self.now)
        if self.events:
            ev = self.events.pop(0)
            apply(ev, self.session)
            self.applied.append(ev)
        self.now += self.step


def _follow(tmp_path: Path, events, expected: int | None, **kw):
    session, ready = tmp_path / "session", tmp_path / "ready"
    session.mkdir()
    player = Player(events, session, ready)
    timing = Timing(movie_stable=1.0, series_idle=kw.pop("series_idle", 30.0), idle=kw.pop("idle", 20.0))
    params = RunParams().with_values({"frames": str(session)})
    result = follow_session(session, ready, tmp_path / "work", params, timing, expected, clock=player.clock,
                            sleep=player.sleep, **kw)
    return result, player, session, ready


def _last_section(player: Player, series: str) -> int:
    """The clock when ``series``' last mdoc section had been written (event k is applied as the clock goes to k + 1)."""
    return max(i for i, e in enumerate(player.applied) if e.series == series and e.tilt) + 1


def test_each_series_is_announced_once_when_complete_and_the_watch_ends_idle(staged, tmp_path):
    from tiltflow.simulate.playback import plan_events

    staging, truth = staged
    assert all(len(s.tilts) == TILTS for s in truth.series)
    result, player, session, ready = _follow(tmp_path, plan_events(truth, staging, interleave=2), TILTS)
    assert result.stopped_by == "idle" and result.announced == ["TS_01", "TS_02"] and not result.incomplete
    for name in ("TS_01", "TS_02"):
        # not before its last section was written (and its movie complete), and then within a few looks
        assert _last_section(player, name) <= player.seen[name] <= _last_section(player, name) + 4, name
        mdoc = Path((ready / f"{SERIES_PREFIX}{name}").read_text().strip())
        assert mdoc == next(session.glob(f"{name}*.mdoc")).resolve()
    assert (ready / END).read_text() == "stopped by idle\n"
    assert sorted(p.name for p in ready.iterdir()) == [END, f"{SERIES_PREFIX}TS_01", f"{SERIES_PREFIX}TS_02"]


def test_without_a_tilt_count_a_series_is_complete_after_series_idle(staged, tmp_path):
    from tiltflow.simulate.playback import plan_events

    staging, truth = staged
    result, player, _, _ = _follow(tmp_path, plan_events(truth, staging, interleave=2), None, series_idle=8.0,
                                   idle=20.0)
    assert result.announced == ["TS_01", "TS_02"]
    for name in ("TS_01", "TS_02"):  # at least series_idle (8 looks of 1 s) after its last section
        assert player.seen[name] >= _last_section(player, name) + 8, name


def test_an_abandoned_series_is_named_incomplete_and_the_other_is_announced(staged, tmp_path):
    from tiltflow.simulate.playback import plan_events

    staging, truth = staged
    events = plan_events(truth, staging, interleave=2)
    ts02 = [i for i, e in enumerate(events) if e.series == "TS_02" and e.tilt]
    cut = ts02[2]  # TS_02 stops after three tilts: nothing of it after its third section
    events = [e for i, e in enumerate(events) if not (e.series == "TS_02" and i > cut)]
    result, _, _, ready = _follow(tmp_path, events, TILTS)
    assert result.announced == ["TS_01"] and list(result.incomplete) == ["TS_02"]
    assert "3 section(s)" in result.incomplete["TS_02"]
    assert (ready / END).read_text().splitlines() == ["stopped by idle", f"TS_02\t{result.incomplete['TS_02']}"]


def test_the_stop_file_ends_the_watch_before_anything_is_complete(staged, tmp_path):
    from tiltflow.simulate.playback import plan_events

    staging, truth = staged
    stop = tmp_path / "STOP"
    events = plan_events(truth, staging, interleave=2)
    first_tilt = next(i for i, e in enumerate(events) if e.tilt)
    stop_after = events[first_tilt + 1].target  # touch the stop file after the first section

    class Stopper(Player):
        def sleep(self, seconds: float) -> None:
            super().sleep(seconds)
            if self.applied and self.applied[-1].target == stop_after:
                stop.touch()

    session, ready = tmp_path / "session", tmp_path / "ready"
    session.mkdir()
    player = Stopper(events, session, ready)
    result = follow_session(session, ready, tmp_path / "work", RunParams().with_values({"frames": str(session)}),
                            Timing(movie_stable=1.0, series_idle=30.0, idle=600.0), TILTS, stop_file=stop,
                            clock=player.clock, sleep=player.sleep)
    assert result.stopped_by == "stop file" and result.announced == []
    assert set(result.incomplete) == {"TS_01"} or set(result.incomplete) == {"TS_01", "TS_02"}
    assert (ready / END).read_text().startswith("stopped by stop file\n")
