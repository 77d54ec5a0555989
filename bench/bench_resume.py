#!/usr/bin/env python3
"""What a rerun of ``tiltflow run`` costs before any step runs, against the number of series: planning every
step call and checking its resume record (the options, the STAR hashes, the size+mtime of every movie), as
``tiltflow run`` does on a finished results folder. No step runs and nothing is written.

    bench/bench_resume.py SESSION RESULTS [--gain GAIN] [--counts 10,20,40,60] [-- tiltflow run options]

RESULTS is a finished ``tiltflow run SESSION --outdir RESULTS`` (the same options after ``--``); the first N
series (by name) are planned and checked for each N of ``--counts``. Why: a session of 60 series must not
cost quadratically in the series (one import STAR, one session folder, 60 x 6 records).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "python"))


def check(session: Path, root: Path, names: list[str], params) -> tuple[float, int]:
    """Seconds to plan and resume-check every series step of ``names`` (and gain, import); steps up to date."""
    from tiltflow.runner import plan, resume
    from tiltflow.runner.execute import expected_record
    from tiltflow.runner.pipeline import find_mdocs

    t0 = time.perf_counter()
    mdocs = [m for m in find_mdocs(session) if m.name.split(".")[0] in names]
    calls = [plan.gain_call(params), plan.import_call(params, mdocs)] if params.gain else []
    calls += [plan.series_call(s, n, params, params.gain is not None) for n in names for s in plan.SERIES_STEPS]
    fresh = sum(resume.up_to_date(root, c.step, c.folder, expected_record(root, c))[0] for c in calls[2:])
    return time.perf_counter() - t0, fresh


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("session", type=Path)
    ap.add_argument("results", type=Path)
    ap.add_argument("--gain", type=Path)
    ap.add_argument("--counts", default="10,20,40,60")
    args, rest = ap.parse_known_args()
    from tiltflow import star
    from tiltflow.commands.run import run_params

    opts = dict(session=args.session, outdir=args.results, params_file=None, gain=args.gain)
    rest = [r for r in rest if r != "--"]
    for key, value in zip(rest[::2], rest[1::2], strict=True):
        opts[key.lstrip("-").replace("-", "_")] = float(value) if key in ("--thickness", "--rec-pixel-size") else value
    params = run_params(opts)
    session = args.session.resolve()
    params = params.with_values({"input": str(session), "gain": str(args.gain.resolve()) if args.gain else None})
    root = args.results.resolve()
    names = sorted(str(n) for n in star.read_tomograms(root / "import" / "tomograms.star")[star.TOMO_NAME])
    print(f"{'series':>6} {'calls':>6} {'up to date':>10} {'seconds':>8} {'ms/series':>9}")
    for n in [int(c) for c in args.counts.split(",") if int(c) <= len(names)]:
        seconds, fresh = check(session, root, names[:n], params)
        print(f"{n:6d} {n * 6:6d} {fresh:10d} {seconds:8.2f} {1000 * seconds / n:9.1f}")
    print(f"peak memory {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
