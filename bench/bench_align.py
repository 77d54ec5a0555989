"""Benchmark of the built-in aligner: shift RMS error, tilt-axis error, tomogram vs phantom, time, memory.

Two sources:

- ``--synthetic`` (default): analytic Gaussian-blob series (``tiltflow.testing.align_series``: exact line
  integrals, no projector shared with the aligner), demo-like geometry (41 tilts, +-60 deg, axis 85,
  shifts U(-8, 8) px, noise 0.5 x signal, two dark tilts), started from a tilt axis 1.5 deg off;
- ``--project DIR --truth ground_truth.json``: a results folder of a simulated session (e.g. ``make demo``'s
  ``demo/results``); its align step is re-run from ``DIR/stack/<name>/<name>.star`` and scored with
  ``tiltflow.simulate.compare`` (movie pixels), exactly as the demo summary scores it.

Gauge (documented in ``tiltflow.align.gauge``): both estimate and truth lose the same terms, a
translation along the axis and ``a cos(t) + b sin(t)`` across it, before the RMS is taken.

    .venv/bin/python bench/bench_align.py --size 256
    .venv/bin/python bench/bench_align.py --project demo/results --truth demo/session/ground_truth.json
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _peak_mb() -> float:
    import torch

    host = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if torch.cuda.is_available():
        return max(host, torch.cuda.max_memory_allocated() / 2**20)
    return host


def _tomogram_cc(images, ali, phantom_vol) -> float:
    """Correlation of a WBP reconstruction (written geometry) with the phantom, both bandpassed."""
    import torch

    from tiltflow.align import filters
    from tiltflow.tomo import filters as wbp
    from tiltflow.tomo.projector import backproject

    imgs = torch.tensor(images, dtype=torch.float32)
    imgs = imgs - imgs.mean(dim=(-2, -1), keepdim=True)
    d = phantom_vol.shape[0]
    vol = backproject(wbp.weight_images(imgs, ali, float(d), wbp.FilterSettings()), ali, phantom_vol.shape)
    a = filters.bandpass(vol, 0.02, 0.25).flatten()
    b = filters.bandpass(torch.tensor(phantom_vol), 0.02, 0.25).flatten()
    a, b = a - a.mean(), b - b.mean()
    return float((a @ b) / (a.norm() * b.norm()))


def bench_synthetic(size: int, seed: int, device: str) -> dict:
    from tiltflow import star
    from tiltflow.align import gauge
    from tiltflow.alignment import TiltSeriesAlignment
    from tiltflow.device import device_name, get_device
    from tiltflow.io.mrc import read_mrc
    from tiltflow.steps.align import Options
    from tiltflow.steps.common import run_star_step
    from tiltflow.testing import align_series

    px = 10.0
    thick = size / 5
    s = align_series.make_series(size=size, seed=seed, thickness=thick, n_blobs=int(300 * (size / 128) ** 2))
    with tempfile.TemporaryDirectory() as tmp:
        in_star = align_series.write_stack_project(tmp, s, "TS_bench", px, axis_in_mdoc=s.tilt_axis - 1.5)
        cwd = os.getcwd()
        os.chdir(tmp)
        try:
            t0 = time.perf_counter()
            out = run_star_step("align", Path(in_star).relative_to(tmp), "align",
                                Options(thickness=thick * 1.25 * px / 10, device=device), Path(tmp))
            wall = time.perf_counter() - t0
            ts = star.read_tilt_series(out)
            images, _ = read_mrc(ts.globals["tfStack"])
            log = Path(out).parent.joinpath("console.log").read_text()
        finally:
            os.chdir(cwd)
    keep = ~s.dark
    est = TiltSeriesAlignment.from_star(ts.tilts, px)
    err = gauge.gauge_free_error(est.shifts_px, s.shifts_px[keep], s.tilt_angles[keep], s.tilt_axis)
    vol = s.phantom.render((int(thick * 1.5) // 2 * 2, size, size))
    true = TiltSeriesAlignment(s.tilt_angles[keep], s.tilt_axis, s.shifts_px[keep], px)
    return {
        "source": f"synthetic {size}px, {len(s.nominal_tilts)} tilts",
        "shift_rms_px": gauge.rms(err), "shift_max_px": float(np.max(np.linalg.norm(err, axis=1))),
        "axis_err_deg": float(np.median(est.z_rot) - s.tilt_axis),
        "offset_err_deg": float(np.median(est.y_tilt - s.tilt_angles[keep])),
        "dark_found": f"{len(s.dark) - len(ts.tilts)} (true {int(s.dark.sum())})",
        "tomo_cc": _tomogram_cc(images, est, vol), "tomo_cc_true_geometry": _tomogram_cc(images, true, vol),
        "time_s": wall, "steps": _step_times(log), "peak_mb": _peak_mb(),
        "device": device_name(get_device(device)),
    }


def _step_times(log: str) -> str:
    import re

    m = re.findall(r"aligned .* ([\d.]+) s$", log, flags=re.M)
    return m[-1] + " s" if m else "?"


def bench_project(project: Path, truth_path: Path, device: str) -> list[dict]:
    """Re-run the align step of a results folder (from its stack step) and score it with
    ``tiltflow.simulate.compare``: the same metrics, gauge and truth conventions as ``make demo``.
    """
    from tiltflow import star
    from tiltflow.device import device_name, get_device
    from tiltflow.simulate.compare import compare_series
    from tiltflow.simulate.truth import load_truth
    from tiltflow.steps.align import Options
    from tiltflow.steps.common import run_star_step

    truth = load_truth(truth_path)
    rows = []
    os.chdir(project)
    for in_star in sorted(Path("stack").glob("*/*.star")):
        ts_in = star.read_tilt_series(in_star)
        st = truth.series_named(ts_in.name)
        t0 = time.perf_counter()
        out = run_star_step("align", in_star, "align", Options(thickness=st.thickness_nm, device=device), Path(project))
        wall = time.perf_counter() - t0
        ts = star.read_tilt_series(out)
        cmp = compare_series(Path("."), truth, st, with_tomogram=False)
        rows.append({
            "source": f"{project.name}/{ts.name}", "shift_rms_px": cmp.shift_rms_px,
            "shift_max_px": float("nan"),
            "axis_err_deg": cmp.tilt_axis_error_deg,
            "offset_err_deg": cmp.tilt_angle_rms_deg,
            "dark_found": f"{len(st.tilts) - len(ts.tilts)} tilts dropped by exclude/align "
                          f"(true dark {sum(t.dark for t in st.tilts)})",
            "time_s": wall, "peak_mb": _peak_mb(), "device": device_name(get_device(device)),
            "note": "movie pixels, tiltflow.simulate.compare",
        })
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--project", type=Path)
    p.add_argument("--truth", type=Path)
    a = p.parse_args(argv)
    rows = bench_project(a.project.resolve(), a.truth.resolve(), a.device) if a.project else [
        bench_synthetic(a.size, a.seed, a.device)]
    for r in rows:
        print("-" * 60)
        for k, v in r.items():
            print(f"{k:24s} {v:.3f}" if isinstance(v, float) else f"{k:24s} {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
