"""Benchmark ``tiltflow watch`` on a played-back session at the pace of real acquisition.

    .venv/bin/python bench/bench_live.py                      # demo-sized movies, 9 tilts, 10 s per tilt
    .venv/bin/python bench/bench_live.py --interleave 1 2     # one series, then two collected together
    .venv/bin/python bench/bench_live.py --preset tiny --pace 2 --tilt-range 30   # a quick look

Simulates a session (tiltflow.simulate), then plays it back (tiltflow.simulate.playback: movie, then its
mdoc section, series interleaved as PACEtomo collects) into a folder that ``tiltflow watch`` follows in
its own process, one tilt every ``--pace`` seconds per series. Prints per run:

- tilt delay: from a tilt's mdoc section being written (its movie was written just before) to its
  motion-correction and CTF results (``live/<TS>/tilts/<root>.ctf.star``), median and worst, and the
  worst minus the first delay (growing = falling behind); includes ``--movie-stable``;
- tomogram delay: from a series' last section to its tomogram (import .. reconstruct);
- per-tilt cost from the watch's log: wall seconds (what this machine gave, shared or not) and CPU
  seconds (all threads), and the series kept up with at this pace: jobs x pace / wall per tilt as
  measured, and cores x pace / CPU per tilt for the same machine when nothing else runs on it (series
  work left out: it runs when the tilts leave room).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="demo", choices=("tiny", "test", "demo"))
    ap.add_argument("--tilt-range", type=float, default=12.0, help="tilts from -R to +R (deg)")
    ap.add_argument("--pace", type=float, default=10.0, help="seconds between tilts of one series")
    ap.add_argument("--interleave", type=int, nargs="+", default=[1], help="series collected together")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--movie-stable", type=float, default=1.0)
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args(argv)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_live_"))
    rows = []
    for n in args.interleave:
        rows.append(run_once(work / f"interleave{n}", args, n))
    print(f"\ntiltflow watch, {args.preset} movies, tilts -{args.tilt_range:g}..{args.tilt_range:g}, one tilt every "
          f"{args.pace:g} s per series, --jobs {args.jobs}, device {args.device}, movie-stable {args.movie_stable:g} s, "
          f"load average {os.getloadavg()[1]:.1f} on {cores()} cores during the runs")
    head = ["series", "tilt delay median (s)", "worst (s)", "growth (s)", "tomogram delay (s)",
            "wall/tilt (s)", "cpu/tilt (s)", "keeps up (wall)", f"keeps up ({cores()} idle cores)"]
    print(" | ".join(head))
    for r in rows:
        print(" | ".join(str(v) for v in r))
    return 0


def run_once(work: Path, args, n: int) -> list:
    from tiltflow.simulate import load_truth, make_config
    from tiltflow.simulate.playback import apply, plan_events
    from tiltflow.simulate.session import simulate_session

    staging, session, out = work / "staging", work / "session", work / "out"
    cfg = make_config(args.preset, n_series=n, tilt_min=-args.tilt_range, tilt_max=args.tilt_range,
                      session_name="session")
    simulate_session(cfg, staging)
    truth = load_truth(staging / "ground_truth.json")
    session.mkdir(parents=True, exist_ok=True)
    events = plan_events(truth, staging, interleave=n)
    written: dict[tuple[str, str], float] = {}  # (series, movie root) -> time its section was written

    def player() -> None:
        movie = None
        for ev in events:
            apply(ev, session)
            if ev.source is not None and ev.series:
                movie = ev.target
            if ev.tilt:
                written[ev.series, Path(movie).stem.replace(".", "_")] = time.time()
                time.sleep(args.pace / n)

    cmd = [sys.executable, "-m", "tiltflow", "watch", str(session), "--outdir", str(out), "--gain",
           str(session / "gain.mrc"), "--device", args.device, "--jobs", str(args.jobs),
           "--tilts", str(len(truth.series[0].tilts)), "--movie-stable", str(args.movie_stable), "--idle", "5",
           "--keep-tilts", ";".join(f"{s.name}:0-{len(s.tilts) - 1}" for s in truth.series)]
    thread = threading.Thread(target=player, daemon=True)
    watch = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    thread.start()
    thread.join()
    err = watch.communicate(timeout=3600)[1]
    if watch.returncode != 0:
        print(err[-3000:], file=sys.stderr)
    delays, first, compute, cpu = [], [], [], []
    tomo = []
    for s in truth.series:
        series_delays = []
        for key, t in sorted(((k, v) for k, v in written.items() if k[0] == s.name), key=lambda kv: kv[1]):
            result = out / "live" / s.name / "tilts" / f"{key[1]}.ctf.star"
            if result.is_file():
                series_delays.append(result.stat().st_mtime - t)
        delays += series_delays
        first += series_delays[:1]
        rec = out / "reconstruct" / s.name / f"rec_{s.name}.mrc"
        last = max(v for k, v in written.items() if k[0] == s.name)
        if rec.is_file():
            tomo.append(rec.stat().st_mtime - last)
        log = out / "live" / s.name / "console.log"
        if log.is_file():
            text = log.read_text()
            compute += [float(x) for x in re.findall(r"done live \S+ in ([0-9.]+) s", text)]
            cpu += [float(x) for x in re.findall(r"motion \+ CTF preview: cpu ([0-9.]+) s", text)]
    per_tilt = statistics.median(compute) if compute else float("nan")
    cpu_tilt = statistics.median(cpu) if cpu else float("nan")
    growth = max(delays) - statistics.mean(first) if delays and first else float("nan")
    return [n, f"{statistics.median(delays):.1f}" if delays else "-", f"{max(delays):.1f}" if delays else "-",
            f"{growth:.1f}", f"{max(tomo):.1f}" if tomo else "-", f"{per_tilt:.1f}", f"{cpu_tilt:.1f}",
            _keeps_up(args.jobs * args.pace, per_tilt), _keeps_up(cores() * args.pace, cpu_tilt)]


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _keeps_up(capacity_s: float, cost_s: float) -> str:
    """Series at this pace that ``capacity_s`` seconds of work per tilt interval cover at ``cost_s`` per tilt."""
    return str(int(capacity_s // cost_s)) if cost_s == cost_s and cost_s > 0 else "-"


if __name__ == "__main__":
    sys.exit(main())
