"""Benchmark ``tiltflow.tomo``: WBP, SIRT-like WBP and SIRT on an analytic Gaussian-blob phantom.

The projections are analytic line integrals placed with ``geometry.project_points`` (41 tilts,
+-60 deg, ZRot 85, random shifts, noise 0.5 sigma), so the numbers measure the reconstruction,
not the projector's consistency with itself. Each case runs in a fresh process so that the peak
memory (VmHWM on CPU, max allocated on CUDA) is its own. ``wbp`` uses the fast back-projection
(``FastBackprojector``), ``wbp-exact`` the voxel-driven ``backproject`` of the adjoint pair (what
WBP used before). The time is the best of ``--repeat`` runs; ``load`` is the 1-minute load average
when the case started (the machines are shared: compare rows taken at similar load).

    .venv/bin/python bench/bench_reconstruct.py [--size 64x128x128] [--size 128x256x256] [--device auto]
        [--threads 2] [--repeat 3] [--methods wbp,wbp-exact,sirtlike,sirt]

Measured 2026-11-21 (CPU: 2-core AMD EPYC shared with other jobs, torch 2.13, best of 5 runs, or
of 3 for "before" = the voxel-driven WBP with per-tilt filtering of commit 6581f8d). On this busy
machine one thread is faster than two (every parallel region waits for a descheduled thread) and
single runs at 2 threads vary 3-5x: compare best-of-N rows taken at the same load.

    method         volume        time s  peak MiB  device              r   FSC0.5 FSC0.143  load
    before wbp     128x256x256     5.23       573  cpu (1 threads)  0.778   0.148    0.195   5.0
    wbp            128x256x256     0.46       582  cpu (1 threads)  0.780   0.148    0.195   4.5
    wbp-exact      128x256x256     6.54       619  cpu (1 threads)  0.778   0.148    0.195   4.5
    before sl 10it 128x256x256     3.48       574  cpu (1 threads)  0.762   0.148    0.203   4.7
    sirtlike 10it  128x256x256     0.49       614  cpu (1 threads)  0.762   0.148    0.203   4.7
    before wbp     128x256x256     8.81       570  cpu (2 threads)  0.778   0.148    0.195   3.7
    wbp            128x256x256     1.14       559  cpu (2 threads)  0.780   0.148    0.195   3.8
    wbp-exact      128x256x256     8.46       607  cpu (2 threads)  0.778   0.148    0.195   3.9
    before wbp     64x128x128      0.59       378  cpu (1 threads)  0.814   0.172    0.219   4.9
    wbp            64x128x128      0.12       419  cpu (1 threads)  0.816   0.172    0.219   4.5
    wbp-exact      64x128x128      0.57       422  cpu (1 threads)  0.814   0.172    0.219   4.5

CTF correction (``ctf-<mode>``: the same projections times each tilt's CTF, defocus 3-5 um at 4 A pixels,
then WBP of the corrected images; the correction is part of the time). Measured 2026-12-01 on the same
2-core machine at load 20-24 (so +-30 %; two wbp/phaseflip pairs given), best of 3, 1 thread:

    .venv/bin/python bench/bench_reconstruct.py --size 128x256x256 --threads 1 --repeat 3 \
        --methods wbp,ctf-none,ctf-phaseflip,wbp,ctf-phaseflip,ctf-wiener,ctf-3d

    method         volume        time s  peak MiB  device              r   FSC0.5 FSC0.143  load
    wbp            128x256x256     2.45       976  cpu (1 threads)  0.780   0.145    0.191  20.1
    ctf-none       128x256x256     2.46       978  cpu (1 threads)  0.674   0.129    0.129  23.5
    ctf-phaseflip  128x256x256     3.12      1023  cpu (1 threads)  0.689   0.137    0.191  24.1
    wbp            128x256x256     1.88       969  cpu (1 threads)  0.780   0.145    0.191  24.3
    ctf-phaseflip  128x256x256     2.79       989  cpu (1 threads)  0.689   0.137    0.191  23.7
    ctf-wiener     128x256x256     2.67      1004  cpu (1 threads)  0.805   0.129    0.184  23.5
    ctf-3d         128x256x256     5.11      1051  cpu (1 threads)  0.689   0.137    0.191  22.9

Re-measured 2026-12-02 at load 0.7-1.8 (best of 5, 1 thread), after the strip filters became one pass per
operation (0.177 -> 0.168 s of correction, cProfile: the rest is the strips' FFTs, ~0.09 s, and the CTF phase):

    wbp            128x256x256     0.41       960  cpu (1 threads)  0.780   0.145    0.191   0.7
    ctf-none       128x256x256     0.45       977  cpu (1 threads)  0.674   0.129    0.129   1.1
    ctf-phaseflip  128x256x256     0.58       998  cpu (1 threads)  0.689   0.137    0.191   1.2
    wbp            128x256x256     0.43       975  cpu (1 threads)  0.780   0.145    0.191   1.4
    ctf-phaseflip  128x256x256     0.70       991  cpu (1 threads)  0.689   0.137    0.191   1.5
    ctf-wiener     128x256x256     0.52      1003  cpu (1 threads)  0.805   0.129    0.184   1.6
    ctf-3d         128x256x256     1.31      1019  cpu (1 threads)  0.689   0.137    0.191   1.8

Alternating in one process (min of 10-20 runs, load ~0-2): WBP 0.42 s, phase flip + WBP 0.55-0.59 s, i.e. 1.3-1.4x.
Phase flipping costs 1.15-1.5x plain WBP here (the correction grows with the image area, the
back-projection with the volume, so the ratio falls for thicker tomograms); 3d ~2x (one correction,
filtering and resampling per depth slab). The step (``tiltflow reconstruct``) also writes uncorrected central
slices for the report when a correction is on (one more filtering and resampling, ~0.4x a WBP).

``--demo SESSION RESULTS`` runs the step with each mode on a simulated session's aligned series. On
``make demo``'s session (37 tilts, 3 A images, 10 A tomogram; defocus up to 4.65 um: first zero 1/30.7 A;
the truth phantom has 12 A voxels), 2026-12-01, load ~20:

    mode             FSC0.5 A  FSC0.143 A  FSC below the zero  FSC 1/30.7-1/24 A
    none                 75.8        33.8               0.503              0.046
    phaseflip+dose       75.8        33.8               0.503              0.042
    wiener+dose          84.3        35.0               0.455              0.121
    3d+dose              75.8        33.8               0.503              0.051

So on this demo phase flipping loses nothing below the first zero but gains nothing measurable beyond it:
the tomogram's FSC already falls below 0.143 at 34 A, before the first zero, and the phantom holds no
detail finer than 24 A. The Wiener-like filter raises the FSC beyond the zero (0.05 -> 0.12) at a cost
below it (0.50 -> 0.46: its low-frequency boost). The gain shows where signal reaches past the zero (the synthetic cases above and
tests/test_reconstruct_step.py: shell correlation beyond the zero -0.60 uncorrected, +0.65 flipped).

Timing only (random images, 41 x 1024^2 -> 256x1024x1024, slabs of 64): wbp 13.4 s at 1 thread
(filter 4.2, resampling 1.2, slabs 8.0; peak 1.5 GB, 0.8 GB of it before WBP), 8.2-17 s at 2;
the voxel-driven back-projection of 16 planes took 18-21 s, i.e. ~300 s for the volume.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time

import numpy as np


def _phantom_and_projections(shape, n_tilts=41, seed=0):
    from tiltflow.geometry import centre, project_points

    rng = np.random.default_rng(seed)
    d, h, w = shape
    nb = max(20, (h * w) // 400)
    pos = np.column_stack([rng.uniform(-0.4 * w, 0.4 * w, nb), rng.uniform(-0.4 * h, 0.4 * h, nb),
                           rng.uniform(-0.3 * d, 0.3 * d, nb)])
    sig = rng.uniform(1.5, 4.0, nb)
    amp = rng.uniform(0.5, 1.5, nb)
    tilts = np.linspace(-60, 60, n_tilts)
    shifts = rng.normal(0, 3, (n_tilts, 2))
    uv = project_points(pos, np.zeros(n_tilts), tilts, np.full(n_tilts, 85.0), shifts)
    ys, xs = np.arange(h) - centre(h), np.arange(w) - centre(w)
    imgs = np.zeros((n_tilts, h, w), np.float32)
    for i in range(n_tilts):
        gx = np.exp(-((xs[None, :] - uv[i, :, 0:1]) ** 2) / (2 * sig[:, None] ** 2))  # (nb, w)
        gy = np.exp(-((ys[None, :] - uv[i, :, 1:2]) ** 2) / (2 * sig[:, None] ** 2))  # (nb, h)
        imgs[i] = np.einsum("b,bh,bw->hw", amp * np.sqrt(2 * np.pi) * sig, gy, gx)
    imgs += 0.5 * imgs.std() * rng.normal(size=imgs.shape).astype(np.float32)
    imgs -= imgs.mean(axis=(1, 2), keepdims=True)  # zero-mean, as real images are normalised
    zs, = (np.arange(d) - centre(d),)
    vol = np.zeros(shape, np.float32)
    for p, s, a in zip(pos, sig, amp, strict=True):
        g = [np.exp(-((ax - c) ** 2) / (2 * s * s)) for ax, c in ((zs, p[2]), (ys, p[1]), (xs, p[0]))]
        vol += a * g[0][:, None, None] * g[1][None, :, None] * g[2][None, None, :]
    return vol, imgs, tilts, shifts


def fsc(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Frequencies (cycles/px) where the FSC first drops below 0.5 and 0.143 (simulate.compare's FSC)."""
    from tiltflow.simulate.compare import fourier_shell_correlation, resolution_at

    k, f = fourier_shell_correlation(a, b, 1.0)
    return tuple(1.0 / resolution_at(k, f, t) for t in (0.5, 0.143))


#: the CTF cases: images carry each tilt's CTF (defocus 3-5 um, 4 A pixels) and are corrected with <mode>
CTF_PIXEL = 4.0


def _with_ctf(imgs, seed=0):
    """Each image times its tilt's CTF (ctfmodel, one defocus per image); the defoci (A)."""
    from tiltflow.ctfmodel import ctf_2d

    defocus = np.random.default_rng(seed).uniform(30000, 50000, len(imgs))
    out = np.empty_like(imgs)
    for i, (img, d) in enumerate(zip(imgs, defocus, strict=True)):
        c = ctf_2d(img.shape, CTF_PIXEL, d, d, 0.0, amplitude_contrast=0.1, rfft=True).numpy()
        out[i] = np.fft.irfft2(np.fft.rfft2(img) * -c, s=img.shape)
    return out, defocus


def _case(args):
    shape, method, device_pref, iterations, slab, threads, repeat, q = args
    import torch

    from tiltflow.alignment import TiltSeriesAlignment
    from tiltflow.device import device_name, get_device
    from tiltflow.tomo.ctfcorrect import CtfCorrection, TiltCorrector, TiltOptics
    from tiltflow.tomo.filters import FilterSettings
    from tiltflow.tomo.projector import ProjectionSetup
    from tiltflow.tomo.sirt import sirt
    from tiltflow.tomo.wbp import wbp_depth_corrected_slabs, wbp_slabs

    dev = get_device(device_pref)
    if threads:
        torch.set_num_threads(threads)
    vol, imgs, tilts, shifts = _phantom_and_projections(shape)
    aln = TiltSeriesAlignment(y_tilt=tilts, z_rot=85.0, shifts_px=shifts, pixel_size=1.0)
    setup = ProjectionSetup(aln, shape, imgs.shape[1:])
    mode = method.split("-", 1)[1] if method.startswith("ctf-") else None
    if mode is not None:
        imgs, defocus = _with_ctf(imgs)
        zero = np.zeros(len(imgs))
        optics = TiltOptics(defocus, defocus, zero, zero, zero, amplitude_contrast=0.1, hand=1.0)
        corr = CtfCorrection(mode=mode, dose_weighting=False)
    x = torch.from_numpy(imgs).to(dev)
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    dt = float("inf")
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        if method == "sirt":
            rec = sirt(x, setup, iterations=iterations, slab=slab).cpu().numpy()
        elif mode is not None:  # the correction is part of the time
            corrector = TiltCorrector(x.shape, setup, optics, corr, CTF_PIXEL, dev)
            if mode == "3d":
                parts = wbp_depth_corrected_slabs(x, setup, corrector, FilterSettings(), slab=slab)
            else:
                parts = wbp_slabs(x if mode == "none" else corrector.correct(x), setup, FilterSettings(), slab=slab)
            rec = np.concatenate([v.cpu().numpy() for _, _, v in parts])
        else:
            st = FilterSettings(sirt_iterations=iterations if method == "sirtlike" else 0)
            parts = wbp_slabs(x, setup, st, slab=slab, exact=method == "wbp-exact")
            rec = np.concatenate([v.cpu().numpy() for _, _, v in parts])
        if dev.type == "cuda":
            torch.cuda.synchronize()
        dt = min(dt, time.perf_counter() - t0)
    if dev.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM")) / 1024
    a, b = rec.ravel() - rec.mean(), vol.ravel() - vol.mean()
    r = float(a @ b / np.sqrt((a @ a) * (b @ b)))
    q.put((dt, peak, device_name(dev), r, *fsc(rec, vol)))


def first_zero(defocus: float, voltage: float = 300.0, cs: float = 2.7, amplitude_contrast: float = 0.1) -> float:
    """Spatial frequency (1/A) of the first CTF zero at ``defocus`` (A): where the CTF phase reaches pi."""
    import torch

    from tiltflow.ctfmodel import ctf_phase

    k = torch.linspace(1e-4, 0.5, 50001, dtype=torch.float64)
    phase, _ = ctf_phase(k, torch.zeros_like(k), defocus, defocus, 0.0, voltage, cs, amplitude_contrast)
    return float(k[int(torch.nonzero(phase >= np.pi)[0])])


def demo(session: str, results: str, modes: list[str]) -> None:
    """Reconstruct the demo's aligned series with each CTF mode; FSC against the phantom per mode."""
    import tempfile
    from pathlib import Path

    from tiltflow import star
    from tiltflow.io.mrc import read_mrc
    from tiltflow.simulate.compare import tomogram_shells
    from tiltflow.simulate.truth import load_truth
    from tiltflow.steps.common import run_star_step
    from tiltflow.steps.reconstruct import Options as ReconstructOptions

    truth = load_truth(session)
    results = Path(results).resolve()
    os.chdir(results)  # STAR paths are relative to the project root
    for series in truth.series:
        name = series.name
        ali = star.read_tilt_series(Path("align") / name / f"{name}.star")
        rec = star.read_tilt_series(Path("reconstruct") / name / f"{name}.star").globals
        px = float(rec[star.TOMO_BINNING]) * ali.pixel_size
        thickness = float(rec[star.TOMO_SIZE_Z]) * ali.pixel_size / 10.0
        mean_def = (ali.tilts[star.DEFOCUS_U].astype(float) + ali.tilts[star.DEFOCUS_V].astype(float)) / 2
        k0 = first_zero(float(mean_def.max()), float(ali.globals.get(star.VOLTAGE, 300.0)))
        phantom, _ = read_mrc(truth.path(series.phantom))
        print(f"{name}: {len(ali.tilts)} tilts, tomogram {px:.2f} A (Nyquist 1/{2 * px:.1f} A), highest defocus "
              f"{mean_def.max() / 1e4:.2f} um: first CTF zero at 1/{1 / k0:.1f} A")
        print(f"phantom voxels {series.phantom_pixel_size:g} A: FSC>zero is the mean over 1/{1 / k0:.1f} A to "
              f"1/{2 * series.phantom_pixel_size:g} A, FSC<zero below 1/{1 / (0.9 * k0):.1f} A")
        print(f"{'mode':<22} {'time s':>7} {'FSC0.5 A':>9} {'FSC0.143 A':>10} {'FSC<zero':>9} {'FSC>zero':>9}")
        with tempfile.TemporaryDirectory() as tmp:
            for mode in modes:
                ctf, dose = (mode.split("+") + [""])[:2]
                opts = ReconstructOptions(pixel_size=px, thickness=thickness, halves=False, ctf_correction=ctf,
                                          dose_weighting=dose == "dose")
                t0 = time.perf_counter()
                out = star.read_tilt_series(run_star_step("reconstruct", Path("align") / name / f"{name}.star", Path(tmp) / mode, opts, results))
                dt = time.perf_counter() - t0
                vol, vpx = read_mrc(star.resolve(out.globals[star.TOMOGRAM], results))
                g = out.globals
                size = (int(g[star.TOMO_SIZE_X]), int(g[star.TOMO_SIZE_Y]), int(g[star.TOMO_SIZE_Z]))
                s = tomogram_shells(np.asarray(vol), float(vpx), float(g[star.TOMO_BINNING]), size, series,
                                    np.asarray(phantom))
                # beyond the zero up to the phantom's own Nyquist (the truth holds nothing finer)
                top = 0.5 / series.phantom_pixel_size
                below = s.fsc[(s.frequency < 0.9 * k0) & (s.frequency > 0)]
                above = s.fsc[(s.frequency > k0) & (s.frequency < top)]
                print(f"{mode:<22} {dt:7.1f} {s.resolution_05:9.1f} {s.resolution_0143:10.1f} "
                      f"{below.mean():9.3f} {above.mean():9.3f}", flush=True)
                print("  FSC per shell: " + " ".join(f"{1 / k:.0f}A:{f:.2f}" for k, f in
                                                     zip(s.frequency[1::2], s.fsc[1::2], strict=True)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", action="append", help="DxHxW, repeatable (default 64x128x128)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument("--slab", type=int, default=64)
    ap.add_argument("--methods", default="wbp,wbp-exact,sirtlike,sirt",
                    help="also ctf-none, ctf-phaseflip, ctf-wiener, ctf-3d: WBP of images that carry a CTF")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: as tiltflow sets them)")
    ap.add_argument("--repeat", type=int, default=1, help="runs per case; the best time is shown")
    ap.add_argument("--demo", nargs=2, metavar=("SESSION", "RESULTS"),
                    help="instead: reconstruct a simulated session's aligned series with each --ctf-modes and "
                         "print the FSC against its phantom")
    ap.add_argument("--ctf-modes", default="none,none+dose,phaseflip+dose,wiener+dose,3d+dose",
                    help="for --demo: <mode>[+dose], comma-separated")
    a = ap.parse_args()
    if a.demo:
        demo(*a.demo, a.ctf_modes.split(","))
        return
    sizes = [tuple(int(v) for v in s.split("x")) for s in (a.size or ["64x128x128"])]
    ctx = mp.get_context("spawn")
    print(f"{'method':<14} {'volume (d x h x w)':<20} {'time s':>8} {'peak MiB':>9}  {'device':<28} "
          f"{'r':>6} {'FSC0.5':>7} {'FSC0.143':>8} {'load':>5}")
    for shape in sizes:
        for method in a.methods.split(","):
            q = ctx.Queue()
            load = os.getloadavg()[0]
            p = ctx.Process(target=_case, args=((shape, method, a.device, a.iterations, a.slab, a.threads,
                                                 a.repeat, q),))
            p.start()
            dt, peak, dev, r, f5, f1 = q.get()
            p.join()
            label = method + (f" {a.iterations}it" if method in ("sirt", "sirtlike") else "")
            print(f"{label:<14} {'x'.join(map(str, shape)):<20} {dt:8.2f} {peak:9.0f}  {dev:<28} "
                  f"{r:6.3f} {f5:7.3f} {f1:8.3f} {load:5.1f}", flush=True)


if __name__ == "__main__":
    main()
