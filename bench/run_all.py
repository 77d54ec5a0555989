"""Run every benchmark in bench/ with its default (small) settings and print their tables.

    .venv/bin/python bench/run_all.py            # all benchmarks
    .venv/bin/python bench/run_all.py ctf align  # the ones whose file name contains these words
    .venv/bin/python bench/run_all.py --size 4k  # the scaling bench at 1024, 2048 and 4096 px (2k: 512-2048), then
                                                 # one EER movie of 400 fractions at the largest size (bench_eer)

Each benchmark is its own script (``bench_<step>.py --help`` shows its options, e.g. ``--demo``); this
runner only calls them one after the other so that `make bench` prints every table.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


#: --size -> the movie sizes bench_scaling runs (time, peak memory and exponents per step)
SIZES = {"1k": ("256", "512", "1024"), "2k": ("512", "1024", "2048"), "4k": ("1024", "2048", "4096")}


def main(argv: list[str]) -> int:
    if argv[:1] == ["--size"] and len(argv) > 1:
        if argv[1] not in SIZES:
            print(f"--size must be one of {', '.join(SIZES)}, got {argv[1]!r}")
            return 2
        sizes = SIZES[argv[1]]
        rc = subprocess.call([sys.executable, str(HERE / "bench_scaling.py"), "--sizes", *sizes])
        return rc or subprocess.call([sys.executable, str(HERE / "bench_eer.py"), "--size", sizes[-1],
                                      "--fractions", "400"])
    scripts = sorted(HERE.glob("bench_*.py"))
    if argv:
        scripts = [s for s in scripts if any(w in s.stem for w in argv)]
    failed = []
    for script in scripts:
        print(f"\n=== {script.stem} ===", flush=True)
        rc = subprocess.call([sys.executable, str(script)])
        if rc:
            failed.append(script.stem)
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
