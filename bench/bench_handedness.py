"""Defocus-handedness measurement on simulated series: the numbers behind the confidence limits.

    .venv/bin/python bench/bench_handedness.py              # the table in qc/handedness.py's docstring
    .venv/bin/python bench/bench_handedness.py --seeds 7 8 --configs weak

For each simulated series (512^2 at 4 A, tilts -60/-30/0/30/60, one frame, the CTF of the true defocus in the
STAR file as a good fit would give: ``tests/test_handedness.py``'s ``simulated_ctf_star``) it runs the exclude
step and prints the measured gradient scale h (expected +-1), its z-score, the share of agreeing tilts, the
number of tilts measured, and whether the call is confident (``HandOptions``' limits), right or wrong.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "python"))
sys.path.insert(0, str(ROOT / "tests"))

#: group -> name -> (simulation overrides, seeds); "clear" series have visible rings, "weak" ones are
#: noise-dominated. These seeds give the numbers quoted in qc/handedness.py.
CONFIGS = {
    "clear": {"40e": ({}, (1, 2)), "3e": ({"dose_per_tilt": 3}, (1, 2)), "1e": ({"dose_per_tilt": 1}, (1, 2)),
              "c0.3": ({"contrast": 0.3}, (1, 2))},
    "between": {"1e c0.8": ({"dose_per_tilt": 1, "contrast": 0.8}, (3, 4, 5, 6))},
    "weak": {"1e c0.5": ({"dose_per_tilt": 1, "contrast": 0.5}, (1, 2, 3, 4, 5, 6)),
             "0.5e c0.3": ({"dose_per_tilt": 0.5, "contrast": 0.3}, (1, 2, 3, 4, 5))},
}


def measure(hand: int, seed: int, overrides: dict) -> dict:
    from test_handedness import simulated_ctf_star
    from tiltflow.steps.common import run_star_step
    from tiltflow.steps.exclude import Options

    here = os.getcwd()
    with tempfile.TemporaryDirectory() as d:
        os.chdir(d)
        try:
            in_star = simulated_ctf_star(Path("."), hand, seed=seed, **overrides)
            run_star_step("exclude", in_star, "exclude", Options(dark_tol=0.0, min_ctf_resolution=0, device="cpu"), Path(d))
            return json.loads(next(Path("exclude").rglob("*_hand.json")).read_text())
        finally:
            os.chdir(here)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", help="instead of each configuration's own seeds")
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    print(f"{'group':8} {'series':10} {'hand':>4} {'seed':>4} {'h':>6} {'z':>6} {'agree':>6} {'tilts':>5}  call")
    for group in args.configs:
        for name, (overrides, seeds) in CONFIGS[group].items():
            for hand in (1, -1):
                for seed in args.seeds or seeds:
                    j = measure(hand, seed, overrides)
                    call = "confident" if j["confident"] else "not confident"
                    verdict = "right" if j["measured"] == hand else "WRONG"
                    print(f"{group:8} {name:10} {hand:+4d} {seed:4d} {j['scale']:+6.2f} {j['z']:6.1f} "
                          f"{100 * j['agreement']:5.0f}% {len(j['tilts']):5d}  {call}, {verdict} sign", flush=True)


if __name__ == "__main__":
    main()
