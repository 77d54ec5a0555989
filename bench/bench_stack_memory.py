"""Peak memory of writing a tilt-series stack (the built-in ``stack`` writer): bounded by a few images?

    .venv/bin/python bench/bench_stack_memory.py                  # 12 x 2048^2 float32 (192 MiB stack)
    .venv/bin/python bench/bench_stack_memory.py --tilts 12 --size 4096

Writes ``tilts`` random float32 micrographs, then in a fresh process builds the stack from them with
``steps.stack._stack_builtin`` and prints that process's peak resident memory (``ru_maxrss``) beside the
stack size and the memory of the process before the stack is written (imports + one image).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "python"))


def _child(folder: str, tilts: int, size: int) -> None:
    import resource

    import numpy as np

    from tiltflow.steps.stack import _Image, _stack_builtin

    images = [_Image(Path(folder) / f"t{i:02d}.mrc", (size, size), np.dtype(np.float32)) for i in range(tilts)]
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    _stack_builtin(images, Path(folder) / "stack.mrc", 1, 2.0, 85.0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"base_mib": base, "peak_mib": peak}))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        _child(argv[1], int(argv[2]), int(argv[3]))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tilts", type=int, default=12)
    ap.add_argument("--size", type=int, default=2048)
    a = ap.parse_args(argv)
    import mrcfile
    import numpy as np

    with tempfile.TemporaryDirectory(prefix="tiltflow-stackmem-") as d:
        rng = np.random.default_rng(0)
        for i in range(a.tilts):
            mrcfile.new(Path(d) / f"t{i:02d}.mrc", rng.standard_normal((a.size, a.size), dtype=np.float32))
        p = subprocess.run([sys.executable, __file__, "--child", d, str(a.tilts), str(a.size)], check=True,
                           capture_output=True, text=True)
        r = json.loads(p.stdout.strip().splitlines()[-1])
    stack_mib = a.tilts * a.size * a.size * 4 / 2**20
    print(f"{'stack':<16}{'stack MiB':>10}{'before MiB':>11}{'peak MiB':>9}{'peak - before':>14}")
    print(f"{a.tilts} x {a.size}^2{'':<{16 - len(f'{a.tilts} x {a.size}^2')}}{stack_mib:>10.0f}"
          f"{r['base_mib']:>11.0f}{r['peak_mib']:>9.0f}{r['peak_mib'] - r['base_mib']:>14.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
