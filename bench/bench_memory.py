"""Peak memory of the stack writer and of the built-in aligner: bounded by a few images, not by the series?

    .venv/bin/python bench/bench_memory.py                          # 12 x 2048^2 float32 (192 MiB stack)
    .venv/bin/python bench/bench_memory.py --tilts 12 --size 4096 --steps stack

Writes ``tilts`` float32 micrographs (one smooth random specimen, shifted a pixel per tilt, plus noise),
then measures each step in a fresh process: ``stack`` builds the stack from them with
``steps.stack._stack_builtin``, ``align`` runs ``align.pipeline.align_stack`` on the stack read into memory.
Printed: the process's peak resident memory (``ru_maxrss``) before the step (imports + inputs) and after it.
Measured on 12 x 2048^2 (a 192 MiB stack), before -> after writing the stack section by section and binning
per tilt in align: stack 360 -> 9 MiB above the baseline, align 1951 -> 949 MiB (10.2x -> 4.9x the stack; the
rest is align's full-resolution point tracking and the in-memory stack copy: still to do).
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


def _child(step: str, folder: str, tilts: int, size: int) -> None:
    import resource

    import numpy as np

    images = [Path(folder) / f"t{i:02d}.mrc" for i in range(tilts)]
    if step == "stack":
        from tiltflow.steps.stack import _Image, _stack_builtin

        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        _stack_builtin([_Image(p, (size, size), np.dtype(np.float32)) for p in images], Path(folder) / "stack.mrc",
                       1, 2.0, 85.0)
    else:
        from tiltflow.align.pipeline import BuiltinOptions, align_stack
        from tiltflow.io.mrc import read_mrc

        stack, _ = read_mrc(Path(folder) / "stack.mrc")
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        align_stack(stack, np.linspace(-30, 30, tilts), 85.0, 2.0, BuiltinOptions(thickness_px=100, device="cpu"))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"base_mib": base, "peak_mib": peak}))


def _write_inputs(folder: Path, tilts: int, size: int) -> None:
    import mrcfile
    import numpy as np

    rng = np.random.default_rng(0)
    k2 = np.add.outer(np.fft.fftfreq(size) ** 2, np.fft.rfftfreq(size) ** 2)
    specimen = np.fft.irfft2(np.fft.rfft2(rng.standard_normal((size, size))) * np.exp(-4000 * k2), s=(size, size))
    specimen = (specimen / specimen.std()).astype(np.float32)
    for i in range(tilts):
        img = np.roll(specimen, (i, -i), axis=(0, 1)) + 0.1 * rng.standard_normal((size, size), dtype=np.float32)
        mrcfile.new(folder / f"t{i:02d}.mrc", img)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        _child(argv[1], argv[2], int(argv[3]), int(argv[4]))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tilts", type=int, default=12)
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--steps", nargs="+", default=["stack", "align"], choices=("stack", "align"))
    a = ap.parse_args(argv)
    stack_mib = a.tilts * a.size * a.size * 4 / 2**20
    print(f"{a.tilts} x {a.size}^2 float32: stack {stack_mib:.0f} MiB")
    print(f"{'step':<8}{'before MiB':>11}{'peak MiB':>9}{'peak - before':>14}{'x stack':>8}")
    with tempfile.TemporaryDirectory(prefix="tiltflow-memory-") as d:
        _write_inputs(Path(d), a.tilts, a.size)
        for step in ("stack", "align"):  # align reads the stack that the stack case writes
            if step not in a.steps and not (step == "stack" and "align" in a.steps):
                continue
            p = subprocess.run([sys.executable, __file__, "--child", step, d, str(a.tilts), str(a.size)],
                               check=True, capture_output=True, text=True)
            r = json.loads(p.stdout.strip().splitlines()[-1])
            extra = r["peak_mib"] - r["base_mib"]
            print(f"{step:<8}{r['base_mib']:>11.0f}{r['peak_mib']:>9.0f}{extra:>14.0f}{extra / stack_mib:>8.2f}",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
