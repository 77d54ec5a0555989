"""Peak memory of the stack writer and of the built-in aligner, to check it is bounded by a few images, not by the series.

    .venv/bin/python bench/bench_memory.py                                # 12 x 2048^2 float32 (192 MiB stack)
    .venv/bin/python bench/bench_memory.py --runs 12x2048 24x2048 12x4096  # + a fit and a 41-tilt K3 prediction
    .venv/bin/python bench/bench_memory.py --runs 12x4092x5760 --steps stack

Writes ``tilts`` float32 micrographs (one smooth random specimen, shifted a pixel per tilt, plus noise),
then measures each step in a fresh process: ``stack`` builds the stack from them with
``steps.stack._stack_builtin``, ``align`` runs ``align.pipeline.align_stack`` on the stack read the way the
align step reads it (``io.mrc.MrcSections``: one tilt at a time). Printed: the process's peak resident memory
(``ru_maxrss``) after the imports ("before") and at the end, and the difference in units of the stack and of one
tilt. With runs of different sizes, the aligner's extra memory is fitted as a x (pixels of one tilt) + b x tilts
and predicted for 41 x 4096^2 and 41 x 4092x5760 (K3).

Measured, align's peak resident memory (torch's import, ~430 MiB, included), before -> after streaming the
stack a tilt at a time and binning each tilt to all three working levels from one ``rfft2``:
12 x 2048^2 1196 -> 730 MiB, 12 x 4096^2 2709 -> 756 MiB; 24 x 2048^2 782 MiB. Fit (``--runs 12x2048 24x2048
12x4096``): 5.1 B per pixel of one tilt + 8.1 MiB per tilt, predicting 1.0 GiB for 41 x 4096^2 and for
41 x 4092x5760 (K3; before: about 21 and 32 GB from the 4.9x-the-stack rule).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "python"))

PREDICT = ((41, 4096, 4096), (41, 4092, 5760))


def _child(step: str, folder: str, tilts: int, h: int, w: int) -> None:
    import resource

    images = [Path(folder) / f"t{i:02d}.mrc" for i in range(tilts)]
    if step == "stack":
        from tiltflow.steps.stack import _Image, _stack_builtin

        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        _stack_builtin([_Image(p, (h, w), np.dtype(np.float32)) for p in images], Path(folder) / "stack.mrc",
                       1, 2.0, 85.0)
    else:
        import torch  # noqa: F401 - its ~300 MiB are not the aligner's

        from tiltflow.align.pipeline import BuiltinOptions, align_stack
        from tiltflow.io.mrc import MrcReader, MrcSections

        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        with MrcReader(Path(folder) / "stack.mrc") as reader:
            align_stack(MrcSections(reader), np.linspace(-30, 30, tilts), 85.0, 2.0,
                        BuiltinOptions(thickness_px=100, device="cpu"))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"base_mib": base, "peak_mib": peak}))


def _write_inputs(folder: Path, tilts: int, h: int, w: int) -> None:
    import mrcfile

    rng = np.random.default_rng(0)
    k2 = np.add.outer(np.fft.fftfreq(h) ** 2, np.fft.rfftfreq(w) ** 2)
    specimen = np.fft.irfft2(np.fft.rfft2(rng.standard_normal((h, w))) * np.exp(-4000 * k2), s=(h, w))
    specimen = (specimen / specimen.std()).astype(np.float32)
    for i in range(tilts):
        img = np.roll(specimen, (i, -i), axis=(0, 1)) + 0.1 * rng.standard_normal((h, w), dtype=np.float32)
        mrcfile.new(folder / f"t{i:02d}.mrc", img)


def _parse_run(text: str) -> tuple[int, int, int]:
    """``12x2048`` (square) or ``12x4092x5760`` (tilts x height x width)."""
    parts = [int(p) for p in text.lower().split("x")]
    if len(parts) == 2:
        return parts[0], parts[1], parts[1]
    if len(parts) == 3:
        return parts[0], parts[1], parts[2]
    raise argparse.ArgumentTypeError(f"run {text!r}: expected TILTSxSIZE or TILTSxHEIGHTxWIDTH")


def fit_memory(runs: list[tuple[int, int, int, float]]) -> tuple[float, float]:
    """Least-squares (a, b) in extra MiB = a x (pixels of one tilt) + b x tilts over (n, h, w, extra) runs."""
    a = np.array([[h * w, n] for n, h, w, _ in runs], float)
    y = np.array([e for *_, e in runs], float)
    return tuple(np.linalg.lstsq(a, y, rcond=None)[0])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        _child(argv[1], argv[2], int(argv[3]), int(argv[4]), int(argv[5]))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", nargs="+", type=_parse_run, default=[(12, 2048, 2048)],
                    help="TILTSxSIZE or TILTSxHEIGHTxWIDTH, one per run (default 12x2048)")
    ap.add_argument("--steps", nargs="+", default=["stack", "align"], choices=("stack", "align"))
    a = ap.parse_args(argv)
    print(f"{'run':<14}{'step':<7}{'before MiB':>11}{'peak MiB':>9}{'peak-before':>12}{'x stack':>8}{'x tilt':>8}")
    fitted = []
    for n, h, w in a.runs:
        tilt_mib = h * w * 4 / 2**20
        with tempfile.TemporaryDirectory(prefix="tiltflow-memory-") as d:
            _write_inputs(Path(d), n, h, w)
            for step in ("stack", "align"):  # align reads the stack that the stack case writes
                if step not in a.steps and not (step == "stack" and "align" in a.steps):
                    continue
                p = subprocess.run([sys.executable, __file__, "--child", step, d, str(n), str(h), str(w)],
                                   check=True, capture_output=True, text=True)
                r = json.loads(p.stdout.strip().splitlines()[-1])
                extra = r["peak_mib"] - r["base_mib"]
                print(f"{f'{n}x{h}x{w}':<14}{step:<7}{r['base_mib']:>11.0f}{r['peak_mib']:>9.0f}{extra:>12.0f}"
                      f"{extra / (n * tilt_mib):>8.2f}{extra / tilt_mib:>8.1f}", flush=True)
                if step == "align":
                    fitted.append((n, h, w, extra, r["base_mib"]))
    pixel_counts = {h * w for n, h, w, *_ in fitted}
    tilt_counts = {n for n, *_ in fitted}
    if len(fitted) >= 2 and (len(pixel_counts) > 1 or len(tilt_counts) > 1):
        ca, cb = fit_memory([r[:4] for r in fitted])
        base = max(r[4] for r in fitted)
        print(f"\nalign extra memory ~ {ca * 2**20:.1f} B x (pixels of one tilt) + {cb:.1f} MiB x tilts "
              f"(= {ca * 2**20 / 4:.1f} tilts of float32 + per-tilt working levels)")
        for n, h, w in PREDICT:
            pred = base + ca * h * w + cb * n
            print(f"predicted align peak for {n} x {h}x{w}: {pred:.0f} MiB ({pred / 1024:.1f} GiB; "
                  f"the stack is {n * h * w * 4 / 2**30:.1f} GiB on disk)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
