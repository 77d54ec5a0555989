"""Built-in motion correction of one EER movie (Falcon 4 style, 4k, hundreds of fractions): time and peak memory.

    .venv/bin/python bench/bench_eer.py                              # 2048^2, 400 fractions, grouping 32 and 40
    .venv/bin/python bench/bench_eer.py --size 4096 --fractions 400   # a 4k Falcon movie (run_all.py --size 4k)

Writes one EER movie (``tiltflow.io.eer.write_eer``, given the fractions one by one so that the movie is
never whole in memory) of a random texture drifting ``--drift`` px along x over the exposure, about
``--dose`` electrons per pixel in all, then corrects it in a fresh process per case with the function the
step calls (``motion.correct.correct_movie``, one torch thread, huge pages as ``tiltflow`` sets them) and
prints wall and CPU seconds, the peak resident memory of that process, the rendered frames and the drift
found from the first to the last frame (its length) against the truth's between those frames' centres. The target (issue 14) is a peak under 4 GB on the CPU path.

Measured 2026-12-02 (``--size 4096 --fractions 400``, 1 thread, 2-core machine, load 0.9; movie 154 MB)::

    grouping frames  wall s   CPU s  peak GB  drift px  truth
          32     12    16.7    16.7     2.47     10.34  10.59
          40     10    15.5    15.4     2.19     10.58  10.83
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "python"))

_CHILD = r"""
import json, os, resource, sys, time
from tiltflow.malloc import use_huge_pages
use_huge_pages()
import torch
torch.set_num_threads(1)
from tiltflow.io.movies import open_movie
from tiltflow.motion.correct import MotionSettings, correct_movie
path, grouping = sys.argv[1], int(sys.argv[2])
t0, c0 = time.perf_counter(), time.process_time()
with open_movie(path, eer_grouping=grouping) as mv:
    res = correct_movie(mv, pixel_size=1.0, settings=MotionSettings(even_odd=True))
    n = mv.n_frames
shifts = res.trajectory.shifts
print(json.dumps({"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0, "frames": n,
                  "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                  "drift": float(((shifts[-1] - shifts[0]) ** 2).sum() ** 0.5)}))
"""


def write_movie(path: Path, size: int, fractions: int, dose: float, drift: float, seed: int = 0) -> None:
    """An EER movie of a texture moving ``drift`` px along x over ``fractions`` fractions, made one at a time."""
    from tiltflow.io.eer import write_eer

    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    texture = np.ones((size, size), np.float32)
    for _ in range(6):  # a few smooth blobs: enough structure to align on
        cy, cx, r = rng.uniform(0, size), rng.uniform(0, size), rng.uniform(size / 40, size / 10)
        texture += 2.0 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r)).astype(np.float32)
    texture += rng.uniform(0, 1.0, (size, size)).astype(np.float32)
    del yy, xx
    p = texture * (dose / fractions / float(texture.mean()))
    events = (rng.random((size, size), dtype=np.float32) < np.roll(p, int(round(drift * k / max(fractions - 1, 1))),
                                                                   axis=1) for k in range(fractions))
    write_eer(path, events, pixel_size=1.0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--fractions", type=int, default=400)
    ap.add_argument("--groupings", type=int, nargs="+", default=[32, 40])
    ap.add_argument("--dose", type=float, default=6.0, help="electrons per pixel over the whole movie")
    ap.add_argument("--drift", type=float, default=12.0, help="px along x over the exposure")
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        movie = Path(tmp) / "movie.eer"
        t0 = time.perf_counter()
        write_movie(movie, args.size, args.fractions, args.dose, args.drift)
        print(f"bench_eer: {args.size}^2, {args.fractions} fractions, {args.dose} e/px, drift {args.drift} px; "
              f"movie {movie.stat().st_size / 1e6:.0f} MB written in {time.perf_counter() - t0:.0f} s; "
              f"load average {os.getloadavg()[0]:.1f}")
        print(f"{'grouping':>8} {'frames':>6} {'wall s':>7} {'CPU s':>7} {'peak GB':>8} {'drift px':>9} {'truth':>6}")
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE.parent / "python")}
        for g in args.groupings:
            p = subprocess.run([sys.executable, "-c", _CHILD, str(movie), str(g)], capture_output=True, text=True,
                               env=env)
            if p.returncode:
                print(f"{g:>8} failed: {p.stderr.strip().splitlines()[-1] if p.stderr.strip() else p.returncode}")
                continue
            r = json.loads(p.stdout.strip().splitlines()[-1])
            truth = args.drift * (r["frames"] - 1) * g / max(args.fractions - 1, 1)  # first to last frame centre
            print(f"{g:>8} {r['frames']:>6} {r['wall']:>7.1f} {r['cpu']:>7.1f} {r['peak'] / 1e9:>8.2f} "
                  f"{r['drift']:>9.2f} {truth:>6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
