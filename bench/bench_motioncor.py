"""Benchmark the built-in motion correction on simulated sessions against their ground truth.

    .venv/bin/python bench/bench_motioncor.py                  # the "test" preset
    .venv/bin/python bench/bench_motioncor.py --demo           # the "demo" preset (41 tilts of 1024^2)
    .venv/bin/python bench/bench_motioncor.py --preset tiny --patches 3 3 --device cpu
    .venv/bin/python bench/bench_motioncor.py --peer relion   # RELION's own motion correction beside it

Simulates a session (tiltflow.simulate), prepares its gain and imports it (the real steps), runs the
``motioncor`` step with the built-in backend and prints one row per tilt series: the motion error in pixels
(RMS over all frames of |estimated drift - true drift|, each movie's mean removed, estimated drift =
-shift in RELION's convention; also the worst movie), the time per tilt, the peak resident memory of the
process (``resource.getrusage``; torch's allocations do not show in tracemalloc; the simulator, gain and import
steps run as separate ``tiltflow`` processes so they do not count) and the device. The target
on the demo session is a motion error under 0.3 px.

``--peer relion`` also runs the step with ``--backend relion`` (Debian's ``relion_run_motioncorr --use_own``)
on the same movies and gain, and prints both side by side with the CPU seconds per movie (this process's
CPU time for the built-in backend, its children's for RELION; ``resource.getrusage``).
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
    ap.add_argument("--peer", choices=("relion",), default=None, help="also run this backend on the same movies")
    args = ap.parse_args(argv)
    preset = "demo" if args.demo else args.preset

    from tiltflow.device import device_name, get_device
    from tiltflow.simulate import load_truth, make_config
    from tiltflow.simulate.compare import motion_rms_px
    from tiltflow.steplog import configure_console
    from tiltflow.steps.common import run_star_step
    from tiltflow.steps.motioncor import Options as MotionCorOptions

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
    rows = []
    for backend in ("builtin", *((args.peer,) if args.peer else ())):
        opts = MotionCorOptions(gain=Path("gain/gain.mrc"), backend=backend, patches=tuple(args.patches),
                                bin=args.bin, dose_weighting=args.dose_weighting, device=args.device,
                                even_odd=backend == "builtin", threads=os.cpu_count() or 1)
        rows += _score(backend, opts, truth, run_star_step, motion_rms_px)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    w, h = cfg.size
    print(f"\nbench_motioncor: preset {preset} ({w}x{h}, {cfg.frames} frames, {cfg.dose_per_tilt:g} e/A^2 per tilt, "
          f"{cfg.pixel_size:g} A/px, drift ~{cfg.drift:g} px), patches {args.patches[0]}x{args.patches[1]}, "
          f"simulated in {t_sim:.0f} s, work dir {work}")
    header = f"{'series':<10}{'backend':<9}{'tilts':>6}{'motion RMS px':>15}{'worst px':>10}{'path px':>9}" \
             f"{'s/tilt':>8}{'CPU s/tilt':>11}{'peak MB':>9}  device"
    print(header)
    print("-" * len(header))
    for r in sorted(rows, key=lambda r: r["series"]):
        where = device_name(device) if r["backend"] == "builtin" else "cpu (relion_run_motioncorr)"
        print(f"{r['series']:<10}{r['backend']:<9}{r['tilts']:>6}{r['rms']:>15.3f}{r['worst']:>10.3f}{r['path']:>9.2f}"
              f"{r['per_tilt']:>8.2f}{r['cpu_per_tilt']:>11.2f}{peak_mb:>9.0f}  {where}")
    if preset == "demo":
        ok = all(r["rms"] < 0.3 for r in rows if r["backend"] == "builtin")
        print(f"target (demo): motion RMS < 0.3 px: {'met' if ok else 'NOT met'}")
    return 0


def _score(backend: str, opts, truth, run_star_step, motion_rms_px) -> list[dict]:
    """Run the step on every imported series with ``opts``; accuracy against the truth and time per tilt."""
    from tiltflow import star
    from tiltflow.motion.metadata import read_motion_star

    rows = []
    for star_path in sorted(Path("import").glob("*/*.star")):
        ts_in = star.read_tilt_series(star_path)
        t1, c1 = time.perf_counter(), _cpu_seconds()
        out = run_star_step("motioncor", star_path, f"motioncor_{backend}", opts, Path.cwd())
        seconds, cpu = time.perf_counter() - t1, _cpu_seconds() - c1
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
        n = len(ts_in.tilts)
        rows.append(dict(series=ts.name, backend=backend, tilts=n, rms=math.sqrt(sq / n_frames), worst=max(errs),
                         per_tilt=seconds / n, cpu_per_tilt=cpu / n, path=drift_path))
    return rows


def _cpu_seconds() -> float:
    """User + system CPU time of this process and of its finished children (RELION runs as a child)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _tiltflow(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "tiltflow", *args], check=True, stdout=subprocess.DEVNULL)


if __name__ == "__main__":
    sys.exit(main())
