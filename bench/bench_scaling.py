"""Cost against pixels and against tilts, per step: time, peak memory and fitted exponents (target 1.0 +- 0.1).

    .venv/bin/python bench/bench_scaling.py                            # 512, 1024 px x 5 tilts; 9 tilts at 512
    .venv/bin/python bench/bench_scaling.py --sizes 1024 2048 4096 --tilts 5 9   # what run_all.py --size 4k runs

Each case simulates a session (``tiltflow simulate --preset tiny`` at the given movie size and tilt count,
same pixel size: a bigger image is a bigger field of view), runs it once with ``tiltflow run`` for the inputs,
then times every per-series step again in a fresh process of one thread (``steptime``: imports excluded) and
reads its peak resident memory. The exponent between two cases is log(cost ratio) / log(size ratio): 1.0 is
linear; torch's import (~300 MiB) is in every peak, so memory exponents of small cases read low.

Measured 2026-12-02 (``run_all.py --size 4k`` = ``--sizes 1024 2048 4096 --tilts 5 9``, 1 thread, 2 idle cores),
CPU s / peak MiB, and the fitted exponents (vs pixels from 2048^2 to 4096^2; vs tilts at 1024^2)::

    step          5 x 1024^2  9 x 1024^2   5 x 2048^2   5 x 4096^2   CPU exp tilts / pixels  peak exp
    motioncor     1.33 / 845  2.37 / 836   5.95 / 1074  27.05 / 1714   0.98 / 1.09            0.34
    ctf           2.49 / 792  3.64 / 802   7.19 / 960   22.31 / 1647   0.65 / 0.82            0.39
    stack         0.55 / 692  0.69 / 692   1.29 / 728    3.66 / 872    0.39 / 0.75            0.13
    align         1.13 / 771  1.66 / 801   1.37 / 790    3.34 / 852    0.65 / 0.64            0.05
    reconstruct   2.51 / 869  3.08 / 880   6.99 / 1207  33.85 / 2434   0.35 / 1.14            0.51

Every peak is under 2.5 GiB (torch and the imports are about 0.7 of it); memory does not grow with the tilts
(exponent ~0). Motion correction is linear in tilts and pixels (5.4 CPU s per 4096^2 tilt of 4 frames, the tiny preset);
the reconstruction's 1.14 from 2048 to 4096 is a 16 A tomogram growing with the field of view.
Earlier (before the parallel, FFT-size and memory work; ``--sizes 512 1024 2048``, load ~30): motioncor
0.97 CPU s for 9 x 512^2, exponents 0.41-0.69 where fixed per-process costs dominated.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "python"))

from steptime import time_step  # noqa: E402

NAME = "TS_01"
THICKNESS_NM = "60"
REC_PIXEL = "16"

#: step -> (module, argv after the step name); paths relative to the results folder
STEPS = {
    "motioncor": ("tiltflow.steps.motioncor", ["import/{n}/{n}.star", "--gain", "gain/gain.mrc", "--device", "cpu"]),
    "ctf": ("tiltflow.steps.ctf", ["motioncor/{n}/{n}.star", "--device", "cpu"]),
    "stack": ("tiltflow.steps.stack", ["exclude/{n}/{n}.star"]),
    "align": ("tiltflow.steps.align", ["stack/{n}/{n}.star", "--thickness", THICKNESS_NM, "--device", "cpu"]),
    "reconstruct": ("tiltflow.steps.reconstruct", ["align/{n}/{n}.star", "--pixel-size", REC_PIXEL, "--thickness",
                                                   THICKNESS_NM, "--device", "cpu"]),
}


def _tiltflow(*argv: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TILTFLOW_THREADS": "1"}
    p = subprocess.run([sys.executable, "-m", "tiltflow", *argv], capture_output=True, text=True, env=env)
    if p.returncode:
        raise SystemExit(f"tiltflow {' '.join(argv)} failed:\n{p.stderr[-3000:]}")


def run_case(work: Path, size: int, tilts: int) -> dict[str, object]:
    """Simulate and run one case; {step: Timing} of each step timed again on its own."""
    session, results = work / f"s{size}_{tilts}", work / f"r{size}_{tilts}"
    half = 10.0 * (tilts - 1) / 2
    if not (results / "relion" / "tomograms.star").is_file():  # a --workdir kept from an earlier run: reused
        _simulate_and_run(session, results, size, tilts, half)
    out = {}
    for step, (module, args) in STEPS.items():
        argv = [step, *(a.format(n=NAME) for a in args), "--outdir", f"timed_{step}"]
        out[step] = t = time_step(results, module, argv, threads=1)
        print(f"  {step:<12} wall {t.wall:7.2f} s  CPU {t.cpu:7.2f} s  peak {t.peak_mib:6.0f} MiB", flush=True)
    return out


def _simulate_and_run(session: Path, results: Path, size: int, tilts: int, half: float) -> None:
    _tiltflow("simulate", str(session), "--preset", "tiny", "--size", str(size), "--tilt-min", str(-half),
              "--tilt-max", str(half), "--tilt-step", "10")
    _tiltflow("run", str(session), "--outdir", str(results), "--gain", str(session / "gain.mrc"), "--keep-tilts",
              f"{NAME}:0-{tilts - 1}", "--thickness", THICKNESS_NM, "--rec-pixel-size", REC_PIXEL, "--device", "cpu")


def exponent(a: float, b: float, xa: float, xb: float) -> float:
    """log(b / a) / log(xb / xa): the power of x that the cost follows between two cases."""
    if not (a > 0 and b > 0 and xa > 0 and xb > 0 and xa != xb):
        return float("nan")
    return math.log(b / a) / math.log(xb / xa)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[512, 1024], help="movie sizes (px, square)")
    ap.add_argument("--tilts", type=int, nargs="+", default=[5, 9],
                    help="tilt counts: the first at every size, the others at the smallest size")
    ap.add_argument("--workdir", type=Path, default=None, help="keep the sessions and results here")
    a = ap.parse_args(argv)
    sizes, tilts = sorted(a.sizes), a.tilts
    with tempfile.TemporaryDirectory(prefix="tiltflow-scaling-") as tmp:
        work = a.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        cases = [(sizes[0], t) for t in tilts] + [(s, tilts[0]) for s in sizes[1:]]
        timings = {}
        for size, n in cases:
            print(f"case {n} tilts x {size}^2 ...", flush=True)
            timings[(size, n)] = run_case(work, size, n)
    print(f"\n{'step':<12}{'case':>14}{'wall s':>8}{'CPU s':>8}{'peak MiB':>10}{'CPU exp':>9}{'peak exp':>9}")
    for step in STEPS:
        for k, (size, n) in enumerate(cases):
            t = timings[(size, n)][step]
            if k == 0:
                ref, x0, x1 = None, 0, 0
            elif n == tilts[0]:  # against the next smaller size: exponent in pixels
                below = sizes[sizes.index(size) - 1]
                ref, x0, x1 = timings[(below, n)][step], below**2, size**2
            else:  # against the first tilt count at the smallest size: exponent in tilts
                ref, x0, x1 = timings[(sizes[0], tilts[0])][step], tilts[0], n
            ce = exponent(ref.cpu, t.cpu, x0, x1) if ref else float("nan")
            pe = exponent(ref.peak_mib, t.peak_mib, x0, x1) if ref else float("nan")
            cols = "".join(f"{v:>9.2f}" if math.isfinite(v) else f"{'':>9}" for v in (ce, pe))
            print(f"{step:<12}{f'{n}x{size}^2':>14}{t.wall:>8.2f}{t.cpu:>8.2f}{t.peak_mib:>10.0f}{cols}")
    print("exponents: vs pixels along the sizes (same tilts), vs tilts at the smallest size; 1.0 = linear")
    return 0


if __name__ == "__main__":
    sys.exit(main())
