"""Benchmark the built-in motion correction on simulated sessions against their ground truth.

    .venv/bin/python bench/bench_motioncor.py                  # the "test" preset
    .venv/bin/python bench/bench_motioncor.py --demo           # the "demo" preset (41 tilts of 1024^2)
    .venv/bin/python bench/bench_motioncor.py --preset tiny --patches 3 3 --device cpu

Simulates a session (tiltflow.simulate), prepares its gain and imports it (the real steps), runs the
``motioncor`` step with the built-in backend and prints one row per tilt series: the motion error in pixels
(RMS over all frames of |estimated drift - true drift|, each movie's mean removed, estimated drift =
-shift in RELION's convention; also the worst movie), the time per tilt, the peak resident memory of the
process (``resource.getrusage``; torch's allocations do not show in tracemalloc; the simulator, gain and import
steps run as separate ``tiltflow`` processes so they do not count) and the device. The target
on the demo session is a motion error under 0.3 px.
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="test", choices=("tiny", "test", "demo"))
    ap.add_argument("--demo", action="store_true", help="same as --preset demo")
    ap.add_argument("--workdir", type=Path, default=None, help="keep the session and results here")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--patches", type=int, nargs=2, default=(1, 1), metavar=("X", "Y"))
    ap.add_argument("--bin", type=float, default=1.0)
    ap.add_argument("--dose-weighting", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    preset = "demo" if args.demo else args.preset

    from tiltflow.device import device_name, get_device
    from tiltflow.simulate import load_truth, make_config
    from tiltflow.simulate.compare import motion_rms_px
    from tiltflow.steplog import configure_console
    from tiltflow.steps.motioncor import MotionCorOptions, run_from_star

    configure_console(quiet=True)
    work = args.workdir or Path(tempfile.mkdtemp(prefix=f"bench_motioncor_{preset}_"))
    work.mkdir(parents=True, exist_ok=True)
    os.chdir(work)
    # simulator, gain and import run as the CLI does, in their own processes: the peak memory below is
    # then the motion correction's (plus the interpreter and torch)
    t0 = time.perf_counter()
    _tiltflow("simulate", "session", "--preset", preset, "--seed", str(args.seed))
    t_sim = time.perf_counter() - t0
    cfg = make_config(preset, seed=args.seed)
    truth = load_truth(Path("session"))
    _tiltflow("gain", str(Path("session") / truth.gain.file), "--outdir", "gain", "--rotate", str(truth.gain.rotate),
              "--flip", str(truth.gain.flip))
    _tiltflow("import", "session", "--outdir", "import")
    device = get_device(args.device)
    opts = MotionCorOptions(gain=Path("gain/gain.mrc"), backend="builtin", patches=tuple(args.patches),
                            bin_factor=args.bin, dose_weighting=args.dose_weighting, device=args.device)

    rows = []
    for star_path in sorted(Path("import").glob("*/*.star")):
        from tiltflow import star
        from tiltflow.motion.metadata import read_motion_star

        ts_in = star.read_tilt_series(star_path)
        t1 = time.perf_counter()
        out = run_from_star(star_path, "motioncor", opts)
        seconds = time.perf_counter() - t1
        ts = star.read_tilt_series(out)
        series = truth.series_named(ts.name)
        errs, sq, n_frames = [], 0.0, 0
        for movie, meta in zip(ts.tilts[star.MOVIE], ts.tilts[star.MICROGRAPH_METADATA], strict=True):
            t = series.tilt_for_movie(str(movie))
            traj, _ = read_motion_star(meta)
            true = np.array(t.frame_shifts_px)
            e = motion_rms_px(traj.drift(), true)
            errs.append(e)
            sq += e * e * len(true)
            n_frames += len(true)
        drift_path = np.mean([np.abs(np.diff(np.array(t.frame_shifts_px), axis=0)).sum() for t in series.tilts])
        rows.append(dict(series=ts.name, tilts=len(ts_in.tilts), rms=math.sqrt(sq / n_frames), worst=max(errs),
                         per_tilt=seconds / len(ts_in.tilts), path=drift_path))

    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    w, h = cfg.size
    print(f"\nbench_motioncor: preset {preset} ({w}x{h}, {cfg.frames} frames, {cfg.dose_per_tilt:g} e/A^2 per tilt, "
          f"{cfg.pixel_size:g} A/px, drift ~{cfg.drift:g} px), patches {args.patches[0]}x{args.patches[1]}, "
          f"simulated in {t_sim:.0f} s, work dir {work}")
    header = f"{'series':<10}{'tilts':>6}{'motion RMS px':>15}{'worst px':>10}{'path px':>9}{'s/tilt':>8}" \
             f"{'peak MB':>9}  device"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['series']:<10}{r['tilts']:>6}{r['rms']:>15.3f}{r['worst']:>10.3f}{r['path']:>9.2f}"
              f"{r['per_tilt']:>8.2f}{peak_mb:>9.0f}  {device_name(device)}")
    if preset == "demo":
        ok = all(r["rms"] < 0.3 for r in rows)
        print(f"target (demo): motion RMS < 0.3 px: {'met' if ok else 'NOT met'}")
    return 0


def _tiltflow(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "tiltflow", *args], check=True, stdout=subprocess.DEVNULL)


if __name__ == "__main__":
    sys.exit(main())
