"""The built-in aligner: dark tilts -> progressive slab alignment -> projection matching -> axis -> offset.

Two working levels of the stack, both Fourier-binned and bandpassed: a coarse one (at most
``coarse_size`` px) for the search stages and a fine one (at most ``fine_size`` px, or ``--bin``) for
the final projection matching; shifts are always carried in pixels of the stack. The stages:

1. dark/blank detection (``dark``), those tilts are excluded;
2. progressive alignment outward from the zero tilt, each tilt against the slab reprojection of those
   already aligned, at a few slab depths (the best-matching one is kept) (``slab``);
3. projection matching against leave-one-out slab reprojections (``slab``);
4. 3-D point model (``points``, ``track``): features picked on the zero tilt (gold beads first), tracked
   through the series and fitted jointly for per-feature (x, y, z), per-tilt shifts and one tilt-axis
   angle; it removes the smooth cross-axis error that leave-one-out matching cannot see and pins the
   axis. With too few consistent features (featureless data) it is skipped (logged) and the axis comes
   from the mean matching score instead (``axis.refine_axis_by_score``), then 3 again;
5. tilt-angle offset from the stretch between neighbours (``offset``; off by default: thick specimens);
6. projection matching at the fine level, then (when 4 succeeded) final point-model rounds with the same
   features, whose per-tilt RMS residuals become ``residual_px``; then the gauge fixed (``gauge``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from tiltflow.alignment import TiltSeriesAlignment
from tiltflow.errors import TiltflowError

log = logging.getLogger("tiltflow.align")

MIN_TILTS = 5

if TYPE_CHECKING:
    from tiltflow.io.mrc import MrcSections


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
    refine_offset: bool = False  # the stretch criterion assumes a thin slab: off unless asked for
    point_model: bool = True  # track features and fit a 3-D point model (shifts + axis) after the slab stages
    device: str = "auto"
    user_kept: tuple[int, ...] = ()  # stack indices kept with --keep-tilts: never dropped as dark (a warning)


@dataclass
class AlignReport:
    """What the aligner measured, for logs, STAR extras and the benchmark."""

    dark_reasons: dict[int, str] = field(default_factory=dict)
    axis_search: object | None = None
    offset_search: object | None = None
    timings: dict[str, float] = field(default_factory=dict)
    score: np.ndarray | None = None  # per kept tilt: correlation with its reprojection
    points: object | None = None  # points.PointRefinement when the point model was used


def _levels(stack, keep, factors, device) -> list:
    """The kept tilts of ``stack`` Fourier-binned by each of ``factors`` (torch, one tensor per factor).

    Each tilt is read once, its mean removed, transformed once (``rfft2``) and cropped to every level,
    so memory is a few tilts plus the binned levels, never a full-size copy of the stack (a factor <= 1
    keeps the full size: small stacks, or ``--bin 1``).
    """
    import torch

    from tiltflow.align import filters

    h, w = stack.shape[-2:]
    shapes = [(h, w) if f <= 1 else filters.binned_shape((h, w), f) for f in factors]
    out = [torch.empty((len(keep), *s), dtype=torch.float32, device=device) for s in shapes]
    for k, i in enumerate(keep):
        img = torch.as_tensor(np.asarray(stack[int(i)], dtype=np.float32), device=device)
        img -= img.mean()
        spectrum = torch.fft.rfft2(img) if any(f > 1 for f in factors) else None
        for level, f, s in zip(out, factors, shapes, strict=True):
            level[k] = img if f <= 1 else filters.crop_spectrum(spectrum, (h, w), s)
        del img, spectrum
    return out


def _frame(binned, shape: tuple[int, int], centre_xy, low_a: float, high: float):
    """Working level: the Frame that samples the binned images of a ``shape`` stack in the tilt-axis frame."""
    from tiltflow.align import filters, xcorr

    h, w = shape
    scale = filters.bin_scale((h, w), tuple(binned.shape[-2:]))
    out_pixel = float(np.mean(scale))
    out_shape = (int(round(h / out_pixel)) // 2 * 2, int(round(w / out_pixel)) // 2 * 2)
    return xcorr.Frame(filters.normalise(binned), scale, centre_xy, out_shape, out_pixel, low=low_a, high=high)


def align_stack(
    stack: np.ndarray | MrcSections, nominal_tilts, tilt_axis: float, pixel_size: float, options: BuiltinOptions | None = None,
    name: str = "tilt series",
) -> tuple[TiltSeriesAlignment, AlignReport]:
    """Align ``stack`` (n, h, w; rows sorted by tilt) starting from the nominal tilts and axis.

    ``stack`` is an array or a lazy one read a tilt at a time (``io.mrc.MrcSections``): memory stays
    a few tilts plus the binned working levels. Returns the alignment over the kept tilts (dark/blank
    ones in ``excluded``, by stack index) with shifts in stack pixels, and a report.
    """
    from tiltflow.align import axis, dark, gauge, offset, points, slab, track
    from tiltflow.device import get_device

    o = options or BuiltinOptions()
    rep = AlignReport()
    t_all = time.perf_counter()
    if not hasattr(stack, "shape"):
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
    for i in sorted(set(dr.excluded) & set(o.user_kept)):  # an explicit keep wins over the automatic check
        log.warning("%s: tilt %.1f looks %s but was kept with --keep-tilts; aligned anyway", name, tilts_all[i],
                    dr.reasons[i])
        dr.reasons[i] = None
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
    centre_xy = (float(w // 2), float(h // 2))
    f_coarse = max(1.0, max(h, w) / float(o.coarse_size))
    f_fine = o.bin if o.bin is not None else max(1.0, max(h, w) / float(o.fine_size))
    b_coarse, b_fine, b_track = _levels(stack, keep, (f_coarse, f_fine, track.level_factor((h, w))), dev)
    coarse = _frame(b_coarse, (h, w), centre_xy, 0.03, 0.25)
    lv = track.binned_level(b_track, (h, w), centre_xy) if o.point_model else None
    del b_track
    rot = np.full(len(keep), float(tilt_axis))
    shifts = np.zeros((len(keep), 2))

    t0 = time.perf_counter()
    # coarse: each tilt against the slab reprojection of the lower tilts already aligned (thick specimens:
    # pairwise stretching locks onto one layer), at a few slab depths; the best-matching depth is kept
    depth_c, shifts, score_c = _coarse(coarse, tilts, rot, o.thickness_px, log=log)
    log.info("%s: progressive slab alignment done (working pixel %.2f stack px, slab %.0f stack px, score %.3f)",
             name, coarse.out_pixel, depth_c * coarse.out_pixel, score_c)
    rep.timings["xcorr"] = time.perf_counter() - t0
    slab_px = depth_c * coarse.out_pixel

    t0 = time.perf_counter()
    shifts, _, _ = slab.refine(coarse, tilts, rot, shifts, depth_c, rounds=3, max_shift=8.0, log=log)
    rep.timings["projmatch_coarse"] = time.perf_counter() - t0

    pts = None
    if o.point_model:
        t0 = time.perf_counter()
        pts = points.refine(lv, tilts, rot, shifts, fit_axis=o.refine_axis, axis_span=o.axis_span,
                            rounds=1, log=log)
        if pts is not None:
            rot, shifts = pts.rot, pts.shifts
            rep.points = pts
            log.info("%s: point model: %d features, tilt axis %.2f deg, RMS residual %.2f px", name,
                     pts.fit.n_points, rot[0], pts.fit.rms)
        rep.timings["points"] = time.perf_counter() - t0

    if o.refine_axis and pts is None:
        t0 = time.perf_counter()
        search, shifts = axis.refine_axis_by_score(coarse, tilts, float(tilt_axis), shifts, depth_c,
                                                   span=o.axis_span, log=log)
        rep.axis_search = search
        rot = np.full(len(keep), search.best)
        log.info("%s: tilt axis %.2f deg (start %.2f)", name, search.best, tilt_axis)
        shifts, _, _ = slab.refine(coarse, tilts, rot, shifts, depth_c, rounds=2, max_shift=8.0, log=log)
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
    fine = _frame(b_fine, (h, w), centre_xy, 0.03, 0.25)
    depth_f = slab_px / fine.out_pixel
    shifts, disp, score = slab.refine(fine, tilts + tilt_offset, rot, shifts, depth_f, rounds=o.pm_rounds,
                                      max_shift=6.0, log=log)
    rep.timings["projmatch_fine"] = time.perf_counter() - t0
    if pts is not None:
        # final point-model rounds from the fine geometry, the same features (no re-picking)
        t0 = time.perf_counter()
        fin = points.refine(lv, tilts, rot, shifts, fit_axis=o.refine_axis, prior=pts.fit,
                            rounds=3, log=log)
        if fin is not None:
            pts = fin
            rot, shifts = pts.rot, pts.shifts
            rep.points = pts
            log.info("%s: final point model: %d features, tilt axis %.2f deg, RMS residual %.2f px", name,
                     pts.fit.n_points, rot[0], pts.fit.rms)
        rep.timings["points"] += time.perf_counter() - t0
    rep.score = score
    shifts = gauge.fix_gauge(shifts, tilts + tilt_offset, rot)
    residual = np.sqrt(np.sum(disp**2, axis=1)) * fine.out_pixel
    if pts is not None:  # the point model's per-tilt RMS residual where the tilt had tracked features
        tr = pts.fit.tilt_residual
        residual = np.where(np.isfinite(tr), tr, residual)
    rep.timings["total"] = time.perf_counter() - t_all
    ali = TiltSeriesAlignment(
        y_tilt=tilts + tilt_offset, z_rot=rot, shifts_px=shifts, pixel_size=float(pixel_size),
        residual_px=residual, excluded={int(k): v for k, v in dr.excluded.items()}, tilt_offset=tilt_offset,
    )
    log.info("%s: aligned %d tilts (%d excluded), axis %.2f, offset %.2f, median residual %.2f px, %.1f s",
             name, len(keep), len(dr.excluded), rot[0], tilt_offset, float(np.median(residual)),
             rep.timings["total"])
    return ali, rep


#: slab depths tried by the coarse stage, as fractions of the given thickness (a generous guess: the
#: default 300 nm; a slab much thicker than the specimen blurs the references, a thinner one cuts
#: off surface gold, whose ghosts then pull the matches)
DEPTH_FRACTIONS = (0.4, 0.55, 0.75, 1.0)


def _coarse(frame, tilts, rot, thickness_px: float, log=None):
    """Progressive slab alignment at a few slab depths; (depth in working px, shifts, mean LOO score)."""
    from tiltflow.align import slab

    n = len(tilts)
    best = None
    max_depth = max(frame.out_shape)
    for frac in DEPTH_FRACTIONS:
        depth = float(min(max(8.0, frac * thickness_px / frame.out_pixel), max_depth))
        sh = slab.progressive_align(frame, tilts, rot, np.zeros((n, 2)), depth, 0.25 * min(frame.out_shape))
        _, score = slab.match(frame, tilts, rot, sh, depth, 8.0)
        s = float(np.mean(score))
        if log is not None:
            log.debug("slab depth %.0f stack px: mean score %.3f", depth * frame.out_pixel, s)
        if best is None or s > best[2]:
            best = (depth, sh, s)
        if depth >= max_depth:
            break
    return best
