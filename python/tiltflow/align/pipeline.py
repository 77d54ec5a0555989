"""The built-in aligner: dark tilts -> stretch cross-correlation -> projection matching -> axis -> offset.

Two working levels of the stack, both Fourier-binned and bandpassed: a coarse one (at most
``coarse_size`` px) for the search stages and a fine one (at most ``fine_size`` px, or ``--bin``) for
the final projection matching; shifts are always carried in pixels of the stack. The stages:

1. dark/blank detection (``dark``), those tilts are excluded;
2. stretch cross-correlation, global least squares over neighbour pairs (``xcorr``);
3. projection matching against leave-one-out reconstructions (``projmatch``);
4. tilt-axis refinement from the mdoc's value by the residual-distortion criterion (``axis``), then 2-3 again;
5. tilt-angle offset from the stretch between neighbours (``offset``);
6. projection matching at the fine level, then the gauge fixed (``gauge``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np

from tiltflow.alignment import TiltSeriesAlignment
from tiltflow.errors import TiltflowError

log = logging.getLogger("tiltflow.align")

MIN_TILTS = 5


@dataclass
class BuiltinOptions:
    """Knobs of the built-in aligner (defaults suit 41-61 tilt series at any size)."""

    thickness_px: float = 300.0  # specimen thickness for projection matching, in stack pixels
    refine_axis: bool = True
    axis_span: float = 3.0  # deg searched either side of the starting axis
    dark_tol: float = 0.7
    blank_tol: float = 0.3
    bin: float | None = None  # fine-level binning of the stack (None: automatic, <= fine_size px)
    coarse_size: int = 128
    fine_size: int = 256
    pm_rounds: int = 4
    refine_offset: bool = True
    device: str = "auto"


@dataclass
class AlignReport:
    """What the aligner measured, for logs, STAR extras and the benchmark."""

    dark_reasons: dict[int, str] = field(default_factory=dict)
    axis_search: object | None = None
    offset_search: object | None = None
    timings: dict[str, float] = field(default_factory=dict)
    score: np.ndarray | None = None  # per kept tilt: correlation with its reprojection


def _frame(images, out_size: int | None, factor: float | None, centre_xy, low_a: float, high: float):
    """Working level: Fourier-binned stack and the Frame that samples it in the tilt-axis frame."""
    from tiltflow.align import filters, xcorr

    n, h, w = images.shape
    if factor is None:
        factor = max(1.0, max(h, w) / float(out_size))
    binned = filters.fourier_bin(images, factor) if factor > 1 else images
    scale = filters.bin_scale((h, w), tuple(binned.shape[-2:]))
    out_pixel = float(np.mean(scale))
    shape = (int(round(h / out_pixel)) // 2 * 2, int(round(w / out_pixel)) // 2 * 2)
    return xcorr.Frame(filters.normalise(binned), scale, centre_xy, shape, out_pixel, low=low_a, high=high)


def align_stack(
    stack: np.ndarray, nominal_tilts, tilt_axis: float, pixel_size: float, options: BuiltinOptions | None = None,
    name: str = "tilt series",
) -> tuple[TiltSeriesAlignment, AlignReport]:
    """Align ``stack`` (n, h, w; rows sorted by tilt) starting from the nominal tilts and axis.

    Returns the alignment over the kept tilts (dark/blank ones in ``excluded``, by stack index) with
    shifts in stack pixels, and a report.
    """
    import torch

    from tiltflow.align import axis, dark, gauge, offset, projmatch, xcorr
    from tiltflow.device import get_device

    o = options or BuiltinOptions()
    rep = AlignReport()
    t_all = time.perf_counter()
    stack = np.asarray(stack)
    if stack.ndim != 3:
        raise TiltflowError(f"tilt series {name}: the stack is not 3-D ({stack.shape})")
    n, h, w = stack.shape
    tilts_all = np.asarray(nominal_tilts, float)
    if len(tilts_all) != n:
        raise TiltflowError(f"tilt series {name}: {n} images in the stack but {len(tilts_all)} tilt angles")
    if n < MIN_TILTS:
        raise TiltflowError(f"tilt series {name}: only {n} tilts; at least {MIN_TILTS} are needed to align")

    t0 = time.perf_counter()
    dr = dark.detect_dark(stack, tilts_all, o.dark_tol, o.blank_tol, log=log)
    rep.dark_reasons = dr.excluded
    keep = np.array([i for i in range(n) if i not in dr.excluded])
    if len(keep) == 0:
        raise TiltflowError(f"tilt series {name}: all {n} tilts are dark or blank")
    if len(keep) < MIN_TILTS:
        raise TiltflowError(f"tilt series {name}: only {len(keep)} usable tilts after removing "
                            f"{len(dr.excluded)} dark/blank ones; at least {MIN_TILTS} are needed")
    rep.timings["dark"] = time.perf_counter() - t0

    dev = get_device(o.device)
    tilts = tilts_all[keep]
    images = torch.as_tensor(np.ascontiguousarray(stack[keep], dtype=np.float32), device=dev)
    images = images - images.mean(dim=(-2, -1), keepdim=True)
    centre_xy = (float(w // 2), float(h // 2))
    coarse = _frame(images, o.coarse_size, None, centre_xy, 0.02, 0.25)
    depth_c = _depth(o.thickness_px, coarse.out_pixel, coarse.out_shape)
    rot = np.full(len(keep), float(tilt_axis))
    shifts = np.zeros((len(keep), 2))

    t0 = time.perf_counter()
    shifts, _ = xcorr.stretch_align(coarse, tilts, rot, shifts, iterations=5,
                                    max_shift=0.35 * min(coarse.out_shape))
    log.info("%s: coarse stretch cross-correlation done (working pixel %.2f stack px)", name, coarse.out_pixel)
    rep.timings["xcorr"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    shifts, _ = projmatch.refine(coarse, tilts, rot, shifts, depth_c, rounds=2, log=log)
    rep.timings["projmatch_coarse"] = time.perf_counter() - t0

    if o.refine_axis:
        t0 = time.perf_counter()
        search = axis.refine_axis(coarse, tilts, float(tilt_axis), shifts, depth_c, span=o.axis_span, log=log)
        rep.axis_search = search
        rot = np.full(len(keep), search.best)
        log.info("%s: tilt axis %.2f deg (start %.2f)", name, search.best, tilt_axis)
        shifts, _ = projmatch.refine(coarse, tilts, rot, shifts, depth_c, rounds=2, log=log)
        rep.timings["axis"] = time.perf_counter() - t0

    tilt_offset = 0.0
    if o.refine_offset:
        t0 = time.perf_counter()
        os_ = offset.estimate_offset(coarse, tilts, rot, shifts, log=log)
        rep.offset_search = os_
        if os_.confident:
            tilt_offset = os_.best
        rep.timings["offset"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    fine = _frame(images, o.fine_size, o.bin, centre_xy, 0.01, 0.3)
    depth_f = _depth(o.thickness_px, fine.out_pixel, fine.out_shape)
    shifts, res = projmatch.refine(fine, tilts + tilt_offset, rot, shifts, depth_f, rounds=o.pm_rounds, log=log)
    rep.timings["projmatch_fine"] = time.perf_counter() - t0
    rep.score = res.score
    shifts = gauge.fix_gauge(shifts, tilts + tilt_offset, rot)
    residual = np.sqrt(np.sum(res.displacement**2, axis=1)) * fine.out_pixel
    rep.timings["total"] = time.perf_counter() - t_all
    ali = TiltSeriesAlignment(
        y_tilt=tilts + tilt_offset, z_rot=rot, shifts_px=shifts, pixel_size=float(pixel_size),
        residual_px=residual, excluded={int(k): v for k, v in dr.excluded.items()}, tilt_offset=tilt_offset,
    )
    log.info("%s: aligned %d tilts (%d excluded), axis %.2f, offset %.2f, median residual %.2f px, %.1f s",
             name, len(keep), len(dr.excluded), rot[0], tilt_offset, float(np.median(residual)),
             rep.timings["total"])
    return ali, rep


def _depth(thickness_px: float, out_pixel: float, shape: tuple[int, int]) -> int:
    """Slab depth in working pixels: the specimen thickness, at least 8 and at most the image width."""
    d = int(round(thickness_px / out_pixel))
    return int(min(max(8, d), max(shape)))
