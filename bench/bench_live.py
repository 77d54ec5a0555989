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
- the series CTF step beside the per-tilt preview (from the logs and STAR files): its first pass fits each
  tilt on its own exactly as the preview did (same micrograph, search range and options), so that pass is
  what reusing the preview could save per tilt; its series pass (one gradient sign, a smooth defocus path,
  one astigmatism) refits every tilt whose value moves, so those values cannot come from the preview.
  Printed: first-pass and refit seconds per tilt, and how many tilts' preview defocus equals the series
  step's first pass and its final value.
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
        print(" | ".join(str(v) for v in r[:-1]))
    print("\nseries CTF step beside the per-tilt preview")
    print(" | ".join(["series", "first pass s/tilt (= the preview's fit)", "series refit s/tilt",
                      "preview = first pass", "preview = final"]))
    for r in rows:
        print(" | ".join(str(v) for v in [r[0], *r[-1]]))
    return 0


_FIT = re.compile(r"INFO\s+(\S+): (tilt \d+ \((\S+?)\.mrc, [^)]*\)) defocus ([0-9]+)/([0-9]+) A .*\(([0-9.]+) s\)$")


def ctf_reuse(out: Path, names: list[str]) -> list[str]:
    """First-pass and refit seconds per tilt of the series CTF step, and how many tilts' preview defocus U
    (live/<TS>/tilts/<root>.ctf.star) equals its first pass (to 1 A) and its final value (ctf/<TS>/<TS>.star).
    """
    from tiltflow import star

    first_s, refit_s, same_first, same_final, n = [], [], 0, 0, 0
    for name in names:
        log = out / "ctf" / name / "console.log"
        final_star = out / "ctf" / name / f"{name}.star"
        if not (log.is_file() and final_star.is_file()):
            continue
        first: dict[str, float] = {}
        for line in log.read_text().splitlines():
            m = _FIT.search(line)
            if not m or m.group(1) != name:
                continue
            root, u, sec = m.group(3), float(m.group(4)), float(m.group(6))
            if root in first:
                refit_s.append(sec)
            else:
                first[root] = u
                first_s.append(sec)
        final = star.read_tilt_series(final_star).tilts
        for i in range(len(final)):
            root = Path(str(final.iloc[i][star.MICROGRAPH])).stem
            preview = out / "live" / name / "tilts" / f"{root}.ctf.star"
            if root not in first or not preview.is_file():
                continue
            u = float(star.read_tilt_series(preview).tilts.iloc[0][star.DEFOCUS_U])
            n += 1
            same_first += abs(u - first[root]) <= 1.0
            same_final += abs(u - float(final.iloc[i][star.DEFOCUS_U])) <= 1.0
    first_med = f"{statistics.median(first_s):.2f}" if first_s else "-"
    return [first_med, f"{sum(refit_s) / max(len(first_s), 1):.2f}", f"{same_first}/{n}", f"{same_final}/{n}"]


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
           "--tilts", str(len(truth.series[0].tilts)), "--movie-stable", str(args.movie_stable),
           # the watch may stop only after two tilts' time with nothing new: a shorter --idle than the pace stops it
           # between tilts whenever the machine is fast enough to be idle (the "incomplete" series seen before)
           "--idle", str(2 * args.pace + 5),
           "--keep-tilts", ";".join(f"{s.name}:0-{len(s.tilts) - 1}" for s in truth.series)]
    thread = threading.Thread(target=player, daemon=True)
    watch = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    thread.start()
    thread.join()
    err = watch.communicate(timeout=3600)[1]
    if watch.returncode != 0 or not all((out / "reconstruct" / s.name).is_dir() for s in truth.series):
        print(f"tiltflow watch exited {watch.returncode}:\n{err[-3000:]}", file=sys.stderr)
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
            _keeps_up(args.jobs * args.pace, per_tilt), _keeps_up(cores() * args.pace, cpu_tilt),
            ctf_reuse(out, [s.name for s in truth.series])]


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _keeps_up(capacity_s: float, cost_s: float) -> str:
    """Series at this pace that ``capacity_s`` seconds of work per tilt interval cover at ``cost_s`` per tilt."""
    return str(int(capacity_s // cost_s)) if cost_s == cost_s and cost_s > 0 else "-"


if __name__ == "__main__":
    sys.exit(main())
