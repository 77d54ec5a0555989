"""Benchmark of the built-in CTF estimation (``tiltflow ctf``) against known defoci.

    .venv/bin/python bench/bench_ctf.py                    # synthetic tilt series (fast, no simulator)
    .venv/bin/python bench/bench_ctf.py --preset demo      # simulated session -> import -> motioncor -> ctf
    .venv/bin/python bench/bench_ctf.py --project DIR --session SESSION   # existing motioncor results

Sources:

- ``--synthetic`` (default): 21 tilts (+-60 deg, dose-symmetric, 3 e/A^2 each) of 768x768 micrographs at
  3 A made by ``tiltflow.testing.ctf_micrograph`` (white specimen x CTF x envelope + noise + background), the
  defocus wandering around the nominal 3 um, 500 A astigmatism, the defocus gradient of the tilted
  specimen, and a B-factor growing with the dose so that late tilts lose their rings as in real data;
- ``--preset tiny|test|demo``: ``tiltflow simulate`` (phantom, 3-D CTF, radiation damage, drift, counting
  noise), ``import`` and the built-in ``motioncor``, then ``ctf``; truth from ``ground_truth.json``;
- ``--project DIR --session SESSION``: ``DIR/motioncor/<name>/<name>.star`` already made from SESSION.

For each configuration (every tilt on its own as RELION's CtfFind; with the series prior; with the series
prior and one astigmatism per series) it prints the defocus error ((U+V)/2 against the truth: RMS and median
in nm, over all tilts and over the first half of the acquisition), the astigmatism-angle error (median, deg),
the RMS over the tilts with a fit resolution (rlnCtfMaxResolution < 25 A: what an exclusion by fit
resolution keeps), the share of such tilts, time per tilt, peak memory of the process and the device. The
target on the demo session is a defocus RMS under 50 nm.

Passes: the built-in step fits every tilt on its own (first pass), then decides one gradient sign, a defocus
path and one astigmatism for the series and refits from the spectra each tilt's first fit kept (series pass),
then writes the diagnostics (outputs); their cost per tilt is printed for each configuration.

``--baseline SRC`` runs the same configurations with the CTF step of another source tree (``SRC/python``, e.g.
``git archive <commit> | tar -x -C SRC``) in a subprocess on the same micrographs, and prints both and the
ratio of CPU seconds (this tree / baseline): the before/after measurement of a change, on the same machine::

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_ctf.py --preset demo --baseline /tmp/old --configs "series prior + astig"
"""

from __future__ import annotations

import argparse
import json
import logging
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

CONFIGS = {
    "per tilt (RELION-like)": dict(series_prior=0.0, astigmatism="per-tilt"),
    "series prior": dict(series_prior=0.05, astigmatism="per-tilt"),
    "series prior + astig": dict(series_prior=0.05, astigmatism="series"),
}


def _peak_mb() -> float:
    import torch

    host = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if torch.cuda.is_available():
        return max(host, torch.cuda.max_memory_allocated() / 2**20)
    return host


def synthetic_series(root: Path, n_tilts: int = 21, size: int = 768, seed: int = 0) -> tuple[Path, list[dict]]:
    """Write a motion-corrected-like series with known CTFs; return its STAR path and the truth per tilt."""
    import pandas as pd

    from tiltflow import star
    from tiltflow.io.mrc import write_mrc
    from tiltflow.testing.ctf_micrograph import synthetic_micrograph

    rng = np.random.default_rng(seed)
    step = 120.0 / (n_tilts - 1)
    order = [0.0]
    for i in range(1, n_tilts // 2 + 1):  # dose-symmetric, groups of one
        order += [i * step, -i * step]
    px, dose, nominal = 3.0, 3.0, 30000.0
    wander = 3000 * np.sin(np.linspace(0, 2 * math.pi, len(order)) + rng.uniform(0, 6))
    frames = root / "motioncor" / "SYN_01" / "frames"
    frames.mkdir(parents=True, exist_ok=True)
    rows, truth = [], []
    for i, tilt in enumerate(order):
        d = nominal + wander[i] + rng.normal(0, 300)
        astig, angle = 500 * rng.uniform(0.9, 1.1), 35 + rng.normal(0, 3)
        pre = i * dose
        img = synthetic_micrograph((size, size), px, d + astig / 2, d - astig / 2, angle, amplitude_contrast=0.1,
                                   snr=0.08, bfactor=80 + 6 * pre, seed=seed * 1000 + i, tilt_angle=tilt,
                                   tilt_axis=85.0, gradient_sign=-1)
        rel = Path("motioncor/SYN_01/frames") / f"SYN_01_{i:03d}_{tilt:.1f}".replace(".", "_")
        write_mrc(root / rel.with_suffix(".mrc"), img, px)
        rows.append({star.MOVIE: f"SYN_01_{i:03d}_{tilt:.1f}.tif", star.NOMINAL_TILT: tilt, star.NOMINAL_AXIS: 85.0,
                     star.PRE_EXPOSURE: pre, star.NOMINAL_DEFOCUS: -nominal / 1e4,
                     star.MICROGRAPH: str(rel.with_suffix(".mrc"))})
        truth.append(dict(movie=rows[-1][star.MOVIE], defocus=d, angle=angle, astig=astig, tilt=tilt))
    g = {star.VOLTAGE: 300.0, star.CS: 2.7, star.AMP_CONTRAST: 0.1, star.TS_PIXEL_SIZE: px,
         star.ORIGINAL_PIXEL_SIZE: px}
    path = star.write_tilt_series(star.TiltSeriesStar("SYN_01", g, pd.DataFrame(rows)),
                                  root / "motioncor" / "SYN_01" / "SYN_01.star")
    return path, truth


def simulated_series(root: Path, preset: str, seed: int, session: Path | None = None) -> list[tuple[Path, list[dict]]]:
    """Simulate (unless ``session`` is given), import and motion-correct; truth per series from the simulator."""
    from tiltflow.simulate import load_truth

    if session is None:
        session = root / "session"
        _tiltflow(root, "simulate", str(session), "--preset", preset, "--seed", str(seed))
    truth = load_truth(session)
    if not list(root.glob("motioncor/*/*.star")):
        _tiltflow(root, "gain", str(session / truth.gain.file), "--outdir", "gain", "--rotate", str(truth.gain.rotate),
                  "--flip", str(truth.gain.flip))
        _tiltflow(root, "import", str(session), "--outdir", "import")
        for s in sorted((root / "import").glob("*/*.star")):
            _tiltflow(root, "motioncor", str(s.relative_to(root)), "--outdir", "motioncor", "--gain", "gain/gain.mrc")
    out = []
    for s in sorted((root / "motioncor").glob("*/*.star")):
        series = truth.series_named(s.parent.name)
        rows = [dict(movie=Path(t.movie).name, defocus=0.5 * (t.defocus_u + t.defocus_v), angle=t.defocus_angle,
                     astig=abs(t.defocus_u - t.defocus_v), tilt=t.tilt_angle, dark=t.dark) for t in series.tilts]
        out.append((s, rows))
    return out


class _PassCost(logging.Handler):
    """Keeps the step's ``ctf_passes`` record (seconds per pass), which the built-in backend logs once."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.passes: dict = {}

    def emit(self, record: logging.LogRecord) -> None:
        self.passes.update(getattr(record, "ctf_passes", {}))


def evaluate(root: Path, in_star: Path, truth: list[dict], options) -> dict:
    """Run the CTF step in this process on ``in_star``; its accuracy, CPU and wall time, and its passes' cost."""
    from tiltflow.steps.common import run_star_step

    handler = _PassCost()
    logger = logging.getLogger("tiltflow.ctf")
    logger.addHandler(handler)
    try:
        t0, c0 = time.perf_counter(), time.process_time()
        out = run_star_step("ctf", in_star, root / f"ctf_{id(options)}", options, root)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        logger.removeHandler(handler)
    return {**score(out, truth), "seconds": seconds, "cpu": cpu, "passes": handler.passes}


_BASELINE = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
from tiltflow.steplog import configure_console
from tiltflow.steps.common import run_star_step
from tiltflow.steps.ctf import Options
configure_console(quiet=True)
t0, c0 = time.perf_counter(), time.process_time()
out = run_star_step("ctf", sys.argv[2], sys.argv[3], Options(**json.loads(sys.argv[4])), ".")
print(json.dumps({"out": str(out), "seconds": time.perf_counter() - t0, "cpu": time.process_time() - c0}))
"""


def evaluate_baseline(src: Path, root: Path, in_star: Path, truth: list[dict], options: dict, tag: str) -> dict:
    """The same run with the CTF step of the source tree ``src`` (its ``python/`` folder), in a subprocess."""
    proc = subprocess.run([sys.executable, "-c", _BASELINE, str(src / "python"), str(in_star), f"ctf_base_{tag}",
                           json.dumps(options)], cwd=root, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"baseline {src} failed:\n{proc.stderr[-2000:]}")
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    return {**score(root / r["out"], truth), "seconds": r["seconds"], "cpu": r["cpu"], "passes": {}}


def score(out: Path, truth: list[dict]) -> dict:
    """Defocus error of a CTF step's STAR file against the truth (nm), per tilt statistics."""
    from tiltflow import star
    from tiltflow.ctffit.model import angle_difference

    ts = star.read_tilt_series(out)
    by_movie = {Path(t["movie"]).name: t for t in truth}
    err, angle_err, first_half, with_fit = [], [], [], []
    for i, row in ts.tilts.iterrows():
        t = by_movie[Path(str(row[star.MOVIE])).name]
        if t.get("dark"):
            continue
        e = 0.5 * (float(row[star.DEFOCUS_U]) + float(row[star.DEFOCUS_V])) - t["defocus"]
        err.append(e)
        if float(row[star.CTF_MAX_RES]) < 25:
            with_fit.append(e)
        if i < len(ts.tilts) / 2:
            first_half.append(e)
        if t["astig"] > 100:
            angle_err.append(angle_difference(float(row[star.DEFOCUS_ANGLE]), t["angle"]))
    err = np.array(err) / 10.0  # nm
    fitted = float((ts.tilts[star.CTF_MAX_RES] < 25).mean())
    return dict(rms=float(np.sqrt(np.mean(err**2))), median=float(np.median(np.abs(err))),
                rms_first=float(np.sqrt(np.mean((np.array(first_half) / 10.0) ** 2))),
                rms_fit=float(np.sqrt(np.mean((np.array(with_fit) / 10.0) ** 2))) if with_fit else float("nan"),
                angle=float(np.median(angle_err)) if angle_err else float("nan"), fitted=fitted,
                tilts=len(ts.tilts), name=ts.name)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--synthetic", action="store_true", help="synthetic tilt series (the default)")
    src.add_argument("--preset", choices=("tiny", "test", "demo"), help="simulate a session with this preset")
    src.add_argument("--project", type=Path, help="folder holding motioncor/<name>/<name>.star (with --session)")
    ap.add_argument("--session", type=Path, help="the simulated session (ground_truth.json) for --project")
    ap.add_argument("--workdir", type=Path, default=None, help="keep inputs and results here")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--tilts", type=int, default=21, help="tilts of the synthetic series")
    ap.add_argument("--size", type=int, default=768, help="image size of the synthetic series")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated subset of: " + ", ".join(CONFIGS))
    ap.add_argument("--baseline", type=Path, default=None,
                    help="also run the CTF step of this source tree (SRC/python) on the same data; print the ratio")
    args = ap.parse_args(argv)

    from tiltflow.device import device_name, get_device
    from tiltflow.steplog import configure_console
    from tiltflow.steps.ctf import Options as CtfOptions

    configure_console(quiet=True)
    device = get_device(args.device)
    if args.project:
        if not args.session:
            ap.error("--project needs --session (the simulated session with ground_truth.json)")
        root = args.project.resolve()
        os.chdir(root)
        inputs = simulated_series(root, "demo", args.seed, args.session.resolve())
        label = f"project {root}"
    else:
        root = (args.workdir or Path(tempfile.mkdtemp(prefix="bench_ctf_"))).resolve()
        root.mkdir(parents=True, exist_ok=True)
        os.chdir(root)
        if args.preset:
            inputs = simulated_series(root, args.preset, args.seed)
            label = f"simulated preset {args.preset}"
        else:
            inputs = [synthetic_series(root, args.tilts, args.size, args.seed)]
            label = f"synthetic, {args.tilts} tilts of {args.size}^2 at 3 A"
    names = [c.strip() for c in args.configs.split(",") if c.strip()]
    rows = []
    for k, (in_star, truth) in enumerate(inputs):
        for j, name in enumerate(names):
            kwargs = dict(device=args.device, png="none", **CONFIGS[name])
            rel = in_star.relative_to(root)
            if args.baseline:  # right before this tree's run, so that both meet the machine in the same state
                b = evaluate_baseline(args.baseline.resolve(), root, rel, truth, kwargs, f"{k}_{j}")
                rows.append({**b, "config": name, "code": "baseline"})
            r = evaluate(root, rel, truth, CtfOptions(**kwargs))
            rows.append({**r, "config": name, "code": "this tree"})
    peak = _peak_mb()
    print(f"\nbench_ctf: {label}; work dir {root}")
    header = (f"{'series':<8}{'configuration':<25}{'code':<11}{'tilts':>6}{'RMS nm':>8}{'median nm':>10}"
              f"{'RMS 1st half':>13}{'RMS fitted':>11}{'angle err':>10}{'fitted':>7}{'s/tilt':>7}{'CPU s/tilt':>11}"
              f"{'peak MB':>8}  device")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['name']:<8}{r['config']:<25}{r['code']:<11}{r['tilts']:>6}{r['rms']:>8.1f}{r['median']:>10.1f}"
              f"{r['rms_first']:>13.1f}{r['rms_fit']:>11.1f}{r['angle']:>10.1f}{r['fitted']:>7.0%}"
              f"{r['seconds'] / r['tilts']:>7.2f}{r['cpu'] / r['tilts']:>11.2f}{peak:>8.0f}  {device_name(device)}")
    print("\npasses of the built-in step (wall s per tilt; refitted = tilts the series pass fitted again)")
    for r in rows:
        p = r["passes"]
        if p:
            print(f"  {r['config']:<25}{r['code']:<11}first pass {p['first pass'] / p['tilts']:.2f}, series pass "
                  f"{p['series pass'] / p['tilts']:.2f} ({p['refitted']} refitted), outputs "
                  f"{p['outputs'] / p['tilts']:.2f}")
    for base, new in zip(rows, rows[1:], strict=False):
        if base["code"] == "baseline" and new["code"] == "this tree":
            print(f"  {new['config']:<25}CPU this tree / baseline = {new['cpu'] / base['cpu']:.2f} "
                  f"(wall {new['seconds'] / base['seconds']:.2f}); defocus RMS {base['rms']:.1f} -> {new['rms']:.1f} nm")
    if args.preset == "demo" or args.project:
        best = min(r["rms"] for r in rows)
        print(f"target (demo): defocus RMS < 50 nm: {'met' if best < 50 else 'NOT met'} (best {best:.1f} nm)")
    return 0


def _tiltflow(cwd: Path, *args: str) -> None:
    subprocess.run([sys.executable, "-m", "tiltflow", *args], check=True, cwd=cwd, stdout=subprocess.DEVNULL)


if __name__ == "__main__":
    sys.exit(main())
