"""``tiltflow reconstruct``: tomograms from the aligned stack, as RELION 5's ReconstructTomograms.

Input: the align step's STAR file (rows = kept tilts in tilt-angle order = sections of ``tfStack``;
``rlnTomoXTilt/YTilt/ZRot/X,YShiftAngst``). Outputs in ``<outdir>/<name>/``:

- ``rec_<name>.mrc``: volume[z, y, x] (x fastest, z slowest, as IMOD and RELION read it), pixel size
  in the header, contrast as in the images (dark = dense), each tilt normalised to zero mean;
- ``rec_<name>_half1.mrc``/``_half2.mrc`` from the even/odd stacks (RELION's split tomograms);
- the STAR file with ``rlnTomoReconstructedTomogram`` (+ ``Half1/Half2``), ``rlnTomoSizeX/Y/Z``
  (bin-1 pixels), ``rlnTomoTomogramBinning`` and per tilt ``rlnCtfScalefactor`` (cos tilt if absent);
- the series as an IMOD/etomo dataset (``<name>.edf``, ``newst.com``, ``tilt.com``, ...: see
  ``etomo_dataset.py``), pointed at by ``rlnEtomoDirectiveFile``.
  what was corrected: ``tfCtfCorrection`` (none/phaseflip/wiener/3d), ``tfDoseWeighting`` (0/1) and per
  tilt ``tfDoseHalfWeightAngst`` (the resolution where its exposure weight is 0.5; 0 = above everywhere);
- with a CTF correction, ``rec_<name>_uncorrected_xy.mrc``/``_xz.mrc``: the report's central slices
  reconstructed the same way but without CTF and exposure correction (a few planes, cheap).

CTF and exposure correction (``tomo.ctfcorrect``): the tilt images are corrected before filtering, with
each tilt's rlnDefocusU/V/Angle, rlnTomoHand and rlnMicrographPreExposure; the half tomograms the same way.

Geometry, exactly as RELION: a tomogram voxel ``i`` sits at bin-1 position ``B * i`` with
``B = SizeX / (binned width)`` (so, as in RELION, the binning may be non-integer and the pixel size
is the requested one up to the even-box rounding), and both centres are ``int(size/2)`` in bin-1
pixels. Stack pixel ``j`` of a stack average-binned by ``b`` (``tfStackBinning``) covers bin-1
pixels from ``o + j*b`` with ``o = (N % b) // 2``. The images are Fourier-cropped to about the
target pixel and the projector's ``image_scale``/``image_center`` carry the exact mapping.

Memory: the binned images, plus one z-slab on the device; the tomogram is written slab by slab into
a memory-mapped temporary MRC that is renamed when complete (SIRT keeps its volume in host memory).
"""

from __future__ import annotations

import functools
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tiltflow import stackgeom, star
from tiltflow.alignment import TiltSeriesAlignment
from tiltflow.columns import (
    TF_CTF_CORRECTION,
    TF_DOSE_HALF_WEIGHT,
    TF_DOSE_WEIGHTING,
    TF_STACK,
    TF_STACK_BINNING,
    TF_STACK_EVEN,
    TF_STACK_ODD,
    TF_STACK_PIXEL_SIZE,
    TF_UNCORRECTED_XY,
    TF_UNCORRECTED_XZ,
)
from tiltflow.errors import TiltflowError
from tiltflow.io.mrc import SectionStats, read_mrc_header
from tiltflow.parallel import map_ordered, workers_for
from tiltflow.steps.common import option

log = logging.getLogger("tiltflow.reconstruct")


METHODS = ("wbp", "sirtlike", "sirt")


@dataclass(frozen=True)
class Options:
    """What to reconstruct (``tiltflow reconstruct``); defaults as RELION's GUI (10 A, 300 nm) and IMOD
    (Hann-apodised ramp).
    """

    pixel_size: float = option(10.0, "Tomogram pixel size in A (RELION's binned_angpix).", "A", min=0.01)
    thickness: float = option(300.0, "Tomogram thickness in nm.", "nm", min=1.0)
    method: str = option("wbp", "wbp, sirtlike (WBP with the SIRT-like filter) or sirt.")
    iterations: int = option(10, "Iterations for sirt and sirtlike.", min=1)
    halves: bool = option(True, "Half tomograms from the even/odd stacks.")
    slab: int = option(64, "z-planes reconstructed at a time (bounds memory).", min=1)
    device: str = option("auto", "auto, cpu, cuda or cuda:N.")
    ctf_correction: str = option(
        "phaseflip", "none, phaseflip (strips along the tilt axis, as IMOD ctfphaseflip), wiener (Wiener-like "
                     "filter) or 3d (each z-slab at its own defocus, as novaCTF/Warp).")
    dose_weighting: bool = option(
        True, "Weight each tilt by RELION's critical-exposure curve at its rlnMicrographPreExposure.")
    defocus_step: float = option(
        0.0, "Largest defocus change (A) between corrected strips/slabs; 0 = automatic (pi/4 at Nyquist).", "A",
        min=0.0)
    wiener_snr: float = option(100.0, "wiener: SNR at low resolution.", min=1e-6)
    wiener_falloff: float = option(100.0, "wiener: SNR(k) = snr * exp(-falloff * k), falloff in A.", "A", min=0.0)

    def validate(self) -> None:
        """Reject impossible settings before the stack is read."""
        if self.method not in METHODS:
            raise TiltflowError(f"--method: unknown method '{self.method}' (choose {', '.join(METHODS)})")
        if self.pixel_size <= 0 or self.thickness <= 0:
            raise TiltflowError("--pixel-size and --thickness must be positive")
        if self.slab < 1 or self.iterations < 1:
            raise TiltflowError("--slab and --iterations must be at least 1")
        from tiltflow.tomo.ctfcorrect import MODES

        if self.ctf_correction not in MODES:
            raise TiltflowError(f"--ctf-correction: unknown CTF correction '{self.ctf_correction}' "
                                f"(choose {', '.join(MODES)})")
        if self.ctf_correction == "3d" and self.method == "sirt":
            raise TiltflowError("--ctf-correction 3d needs --method wbp or sirtlike (SIRT has no depth slabs)")
        if self.defocus_step < 0 or self.wiener_snr <= 0 or self.wiener_falloff < 0:
            raise TiltflowError("--defocus-step and --wiener-falloff must be >= 0 and --wiener-snr positive")

    def correction(self):
        """The CTF correction and dose weighting these options ask for."""
        from tiltflow.tomo.ctfcorrect import CtfCorrection

        return CtfCorrection(self.ctf_correction, self.dose_weighting, self.defocus_step, self.wiener_snr,
                             self.wiener_falloff)


@dataclass(frozen=True)
class TomogramGrid:
    """The tomogram's sampling: size in bin-1 pixels (RELION's rlnTomoSize) and binned voxels."""

    size_bin1: tuple[int, int, int]  # x, y, z
    shape: tuple[int, int, int]  # d, h, w of the binned volume
    binning: float  # bin-1 pixels per voxel (rlnTomoTomogramBinning)
    ts_pixel_size: float

    @property
    def pixel_size(self) -> float:
        """Voxel size in A."""
        return self.binning * self.ts_pixel_size

    @property
    def center(self) -> tuple[float, float, float]:
        """x, y, z centre in voxels: RELION's int(size/2) (bin-1) over the binning."""
        return tuple(float(s // 2) / self.binning for s in self.size_bin1)  # type: ignore[return-value]


def make_grid(image_size_bin1: tuple[int, int], ts_pixel_size: float, target: float, thickness_nm: float) -> TomogramGrid:
    """RELION's even-box tomogram for images of (x, y) bin-1 pixels at ``target`` A."""
    from tiltflow.tomo.binning import binned_size

    nx, ny = image_size_bin1
    factor = target / ts_pixel_size
    w = binned_size(nx, factor) if factor > 1 else nx
    b = nx / w
    h = max(2, int(round(ny / b / 2.0)) * 2)
    size_z = max(1, int(round(thickness_nm * 10.0 / ts_pixel_size)))
    d = max(2, int(round(size_z / b / 2.0)) * 2)
    return TomogramGrid((nx, ny, size_z), (d, h, w), b, ts_pixel_size)


def run_series(ts: star.TiltSeriesStar, out_dir: Path, opts: Options, root: str | Path) -> star.TiltSeriesStar:
    """Write the tomogram(s) of ``ts`` into ``out_dir``; return the series with RELION's columns."""
    from tiltflow.device import device_name, get_device

    root = Path(root)
    where = ts.globals.get(star.TS_STAR_FILE)
    for col in (star.Y_TILT, star.Z_ROT, star.X_SHIFT, star.Y_SHIFT):
        if col not in ts.tilts:
            raise TiltflowError(f"tilt series {ts.name} has no {col} column (run align first)", where)
    if TF_STACK not in ts.globals or not ts.globals[TF_STACK]:
        raise TiltflowError(f"tilt series {ts.name} has no tfStack (run stack and align first)", where)
    ts_px = ts.pixel_size
    stack_path = star.resolve(ts.globals[TF_STACK], root)
    stack_px, stack_bin, (ns_x, ns_y) = _stack_header(ts, stack_path, ts_px)
    n1 = stackgeom.bin1_image_size(ts, root, (ns_x, ns_y), stack_bin)
    if opts.pixel_size < stack_px * 0.999:
        raise TiltflowError(
            f"tilt series {ts.name}: target pixel {opts.pixel_size:g} A is finer than the stack's "
            f"{stack_px:g} A (re-run stack with a smaller --bin)", stack_path)
    grid = make_grid(n1, ts_px, opts.pixel_size, opts.thickness)
    device = get_device(opts.device)
    optics = _optics(ts, opts)
    aln = TiltSeriesAlignment.from_star(ts.tilts, ts_px).rebinned(grid.pixel_size)
    log.info("tilt series %s: %d tilts, stack %dx%d at %.3f A -> tomogram %dx%dx%d at %.3f A (binning %.4f), %s, %s",
             ts.name, len(ts.tilts), ns_x, ns_y, stack_px, grid.shape[2], grid.shape[1], grid.shape[0],
             grid.pixel_size, grid.binning, opts.method, device_name(device))

    jobs = {star.TOMOGRAM: (stack_path, out_dir / f"rec_{ts.name}.mrc")}
    even, odd = ts.globals.get(TF_STACK_EVEN), ts.globals.get(TF_STACK_ODD)
    if opts.halves and even and odd:
        jobs[star.TOMOGRAM_HALF1] = (star.resolve(even, root), out_dir / f"rec_{ts.name}_half1.mrc")
        jobs[star.TOMOGRAM_HALF2] = (star.resolve(odd, root), out_dir / f"rec_{ts.name}_half2.mrc")
        for src, _ in list(jobs.values())[1:]:
            _stack_header(ts, src, ts_px, expect=(ns_x, ns_y))
    elif opts.halves and (even or odd):
        log.warning("tilt series %s has only one of tfStackEven/tfStackOdd: no half tomograms", ts.name)

    new = ts.copy()
    # the full tomogram first: its images give the intensity scale and the CTF corrector of all three
    t0 = time.perf_counter()
    images, setup = _load(ts, stack_path, aln, grid, stack_bin, (ns_x, ns_y), n1, device)
    scale = float(images.std()) or 1.0
    corrector = _corrector(images, setup, optics, grid, opts)
    images /= scale
    full = jobs[star.TOMOGRAM][1]
    _write_tomogram(images, setup, grid, opts, full, corrector)
    log.info("wrote %s in %.1f s", full, time.perf_counter() - t0)

    def half(src: Path, target: Path) -> None:
        t0 = time.perf_counter()
        imgs, stp = _load(ts, src, aln, grid, stack_bin, (ns_x, ns_y), n1, device)
        imgs /= scale
        _write_tomogram(imgs, stp, grid, opts, target, corrector)
        log.info("wrote %s in %.1f s", target, time.perf_counter() - t0)

    # the report's uncorrected slices and the halves side by side (tiltflow.parallel; each back-projects on one
    # thread then): their fixed parts (reading, filtering, writing) are most of a binned tomogram's time
    tasks = [functools.partial(half, src, target) for col, (src, target) in jobs.items() if col != star.TOMOGRAM]
    if corrector is not None and opts.method != "sirt":
        tasks.insert(0, functools.partial(_write_uncorrected_slices, images, setup, grid, opts, out_dir, ts.name,
                                          new.globals, root))
    map_ordered(lambda task: task(), tasks, workers_for(len(tasks), device))
    for col, (_, target) in jobs.items():
        new.globals[col] = star.relative_to_root(target, root)

    g = new.globals
    g[star.TOMO_SIZE_X], g[star.TOMO_SIZE_Y], g[star.TOMO_SIZE_Z] = grid.size_bin1
    g[star.TOMO_BINNING] = round(grid.binning, 6)
    for col in (star.TOMOGRAM_HALF1, star.TOMOGRAM_HALF2):
        if col not in jobs:
            g.pop(col, None)
    if star.CTF_SCALE not in new.tilts:
        new.tilts[star.CTF_SCALE] = np.cos(np.deg2rad(new.tilts[star.Y_TILT].to_numpy(float)))
    from tiltflow.etomo_dataset import EtomoGeometry, write_dataset

    geom = EtomoGeometry(stack_path, (ns_x, ns_y), stack_bin, n1, grid.shape, grid.binning, grid.size_bin1,
                         ts_px, opts.iterations if opts.method == "sirtlike" else 0)
    edf = write_dataset(new, out_dir, geom, root)
    g.pop(star.ETOMO_DIRECTIVE, None)
    if edf is not None:
        g[star.ETOMO_DIRECTIVE] = star.relative_to_root(edf, root)
    _record_correction(new, opts)
    return new


# --- CTF and exposure correction -----------------------------------------------------------------------
def _optics(ts: star.TiltSeriesStar, opts: Options):
    """The per-tilt CTF and exposure the correction needs, or None when nothing is corrected."""
    from tiltflow.tomo.ctfcorrect import TiltOptics

    if opts.ctf_correction == "none" and not opts.dose_weighting:
        return None
    where = ts.globals.get(star.TS_STAR_FILE)
    t, g = ts.tilts, ts.globals
    n = len(t)
    if opts.ctf_correction != "none":
        for col in (star.DEFOCUS_U, star.DEFOCUS_V):
            if col not in t:
                raise TiltflowError(f"tilt series {ts.name} has no {col} column for --ctf-correction "
                                    f"{opts.ctf_correction} (run ctf first, or --ctf-correction none)", where)

    def col(name, default):
        return t[name].to_numpy(float) if name in t else np.full(n, float(default))

    du = col(star.DEFOCUS_U, 0.0)
    values = [du, col(star.DEFOCUS_V, 0.0), col(star.DEFOCUS_ANGLE, 0.0), col(star.PHASE_SHIFT, 0.0),
              col(star.PRE_EXPOSURE, 0.0)]
    if not all(np.isfinite(v).all() for v in values):
        raise TiltflowError(f"tilt series {ts.name}: non-numeric defocus or pre-exposure values", where)
    hand = float(g.get(star.HAND) or 1.0)
    o = ts.optics
    return TiltOptics(*values, voltage=o.voltage, cs=o.cs, amplitude_contrast=o.amplitude_contrast,
                      hand=1.0 if hand >= 0 else -1.0)


def _corrector(images, setup, optics, grid: TomogramGrid, opts: Options):
    from tiltflow.tomo.ctfcorrect import TiltCorrector

    if optics is None:
        return None
    return TiltCorrector(images.shape, setup, optics, opts.correction(), grid.pixel_size, images.device)


def _record_correction(ts: star.TiltSeriesStar, opts: Options) -> None:
    from tiltflow.tomo.ctfcorrect import half_weight_resolution

    ts.globals[TF_CTF_CORRECTION] = opts.ctf_correction
    ts.globals[TF_DOSE_WEIGHTING] = int(opts.dose_weighting)
    if opts.dose_weighting:
        ts.tilts[TF_DOSE_HALF_WEIGHT] = [round(half_weight_resolution(v), 2)
                                         for v in ts.tilts[star.PRE_EXPOSURE].astype(float)]
    else:
        ts.tilts = ts.tilts.drop(columns=[TF_DOSE_HALF_WEIGHT], errors="ignore")
    if opts.ctf_correction == "none" or opts.method == "sirt":
        for key in (TF_UNCORRECTED_XY, TF_UNCORRECTED_XZ):
            ts.globals.pop(key, None)


def central_planes(depth: int, height: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """The z range of the central XY slab and the y range of the central XZ slab the report shows."""
    dz, dy = max(1, depth // 20), max(1, height // 40)
    return (max(0, depth // 2 - dz), min(depth, depth // 2 + dz + 1)), \
        (max(0, height // 2 - dy), min(height, height // 2 + dy + 1))


def _write_uncorrected_slices(images, setup, grid: TomogramGrid, opts: Options, out_dir: Path,
                              name: str, g: dict, root: Path) -> None:
    """The report's central XY and XZ slabs without CTF/exposure correction (same filter, few planes)."""
    from dataclasses import replace

    from tiltflow.io.mrc import write_mrc
    from tiltflow.tomo.filters import FilterSettings, weight_images

    d, h, w = grid.shape
    (z0, z1), (y0, y1) = central_planes(d, h)
    settings = FilterSettings(sirt_iterations=opts.iterations if opts.method == "sirtlike" else 0)
    filtered = weight_images(images, setup.alignment, thickness_px=d, settings=settings)
    xy = setup.fast_backprojector(filtered)((z0, z1)).mean(dim=0)
    cx, cy, cz = setup.volume_center if setup.volume_center is not None else grid.center
    rows = replace(setup, volume_shape=(d, y1 - y0, w), volume_center=(cx, cy - y0, cz))
    xz = rows.fast_backprojector(filtered)().mean(dim=1)
    for key, img, suffix in ((TF_UNCORRECTED_XY, xy, "xy"), (TF_UNCORRECTED_XZ, xz, "xz")):
        target = out_dir / f"rec_{name}_uncorrected_{suffix}.mrc"
        write_mrc(target, img.cpu().numpy().astype(np.float32), grid.pixel_size)  # atomic
        g[key] = star.relative_to_root(target, root)


# --- input ---------------------------------------------------------------------------------------
def _stack_header(ts: star.TiltSeriesStar, path: Path, ts_px: float, expect=None) -> tuple[float, int, tuple[int, int]]:
    """(pixel size, integer binning, (nx, ny)) of a stack, checked against the STAR table."""
    if not path.is_file():
        raise TiltflowError(f"tilt series {ts.name}: stack not found", path)
    h = read_mrc_header(path, context=f"tilt series {ts.name}: stack", complete=True)
    shape, header_px = (h.nz, h.ny, h.nx), h.pixel_size
    if len(shape) == 2:
        shape = (1,) + tuple(shape)
    n = len(ts.tilts)
    if len(shape) != 3 or shape[0] != n:
        raise TiltflowError(
            f"tilt series {ts.name}: stack has {shape[0] if len(shape) == 3 else '?'} sections but the STAR "
            f"table has {n} tilts (rows must be the stack's sections in order)", path)
    nx, ny = int(shape[2]), int(shape[1])
    if expect is not None and (nx, ny) != tuple(expect):
        raise TiltflowError(f"tilt series {ts.name}: half stack is {nx}x{ny}, expected {expect[0]}x{expect[1]}", path)
    stack_px = float(ts.globals.get(TF_STACK_PIXEL_SIZE) or 0) or (header_px if header_px > 0 else ts_px)
    b = ts.globals.get(TF_STACK_BINNING)
    b = int(round(float(b))) if b else max(1, int(round(stack_px / ts_px)))
    if abs(stack_px - b * ts_px) > 1e-3 * stack_px:
        raise TiltflowError(
            f"tilt series {ts.name}: stack pixel {stack_px:g} A is not {b} x the tilt-series pixel {ts_px:g} A", path)
    return stack_px, b, (nx, ny)



def _load(ts, src: Path, aln: TiltSeriesAlignment, grid: TomogramGrid, b: int, ns: tuple[int, int],
          n1: tuple[int, int], device):
    """Binned, zero-mean images on ``device`` and the exact projection setup for them."""
    import mrcfile
    import torch

    from tiltflow.tomo.binning import fourier_crop
    from tiltflow.tomo.projector import ProjectionSetup

    ns_x, ns_y = ns
    # binned image size: the stack Fourier-cropped to about the tomogram's pixel
    f = grid.binning / b
    m_x, m_y = (min(ns_x, max(2, int(round(ns_x / f)))), min(ns_y, max(2, int(round(ns_y / f)))))
    with mrcfile.mmap(src, mode="r", permissive=True) as mrc:
        data = mrc.data.reshape(-1, ns_y, ns_x)
        imgs = torch.empty((data.shape[0], m_y, m_x), dtype=torch.float32, device=device)
        for i in range(data.shape[0]):  # one image at a time: a full-size stack never sits in memory
            img = torch.from_numpy(np.array(data[i], dtype=np.float32)).to(device)
            if not torch.isfinite(img).all():
                raise TiltflowError(f"tilt series {ts.name}: section {i} of the stack has NaN/inf values", src)
            imgs[i] = fourier_crop(img[None], (m_y, m_x))[0]
    imgs -= imgs.mean(dim=(1, 2), keepdim=True)
    # image index k <-> bin-1 position o + (b-1)/2 + k * (ns * b / m)
    o = np.array([stackgeom.crop_origin(n1[0], b), stackgeom.crop_origin(n1[1], b)], float) + (b - 1) / 2.0
    step = np.array([ns_x * b / m_x, ns_y * b / m_y])
    scale = grid.binning / step
    c_img = (np.array([n1[0] // 2, n1[1] // 2], float) - o) / grid.binning
    setup = ProjectionSetup(aln, grid.shape, (m_y, m_x), volume_center=grid.center,
                            image_center=tuple(c_img), image_scale=tuple(scale))
    return imgs, setup


# --- output --------------------------------------------------------------------------------------
def _write_tomogram(images, setup, grid: TomogramGrid, opts: Options, target: Path,
                    corrector=None) -> None:
    """Reconstruct slab by slab into a memory-mapped temporary MRC, renamed when complete."""
    import mrcfile

    from tiltflow.atomic import atomic_path
    from tiltflow.tomo.filters import FilterSettings

    stats = SectionStats()
    with atomic_path(target) as tmp:
        with mrcfile.new_mmap(tmp, shape=grid.shape, mrc_mode=2, overwrite=True) as mrc:
            for z0, z1, slab in _slabs(images, setup, opts, FilterSettings, corrector):
                arr = slab.detach().cpu().numpy()
                mrc.data[z0:z1] = arr
                for plane in arr:  # plane by plane: SectionStats' float64 copy is one plane, not the slab
                    stats.add(plane)
            mrc.voxel_size = float(grid.pixel_size)
            stats.write_to(mrc.header, str(target))
            mrc.add_label(f"tiltflow reconstruct {opts.method}, binning {grid.binning:.4f}, "
                          f"ctf {opts.ctf_correction}, dose weighting {'on' if opts.dose_weighting else 'off'}")


def _slabs(images, setup, opts: Options, settings_cls, corrector=None):
    from tiltflow.tomo.wbp import wbp_depth_corrected_slabs, wbp_slabs

    settings = settings_cls(sirt_iterations=opts.iterations if opts.method == "sirtlike" else 0)
    if corrector is not None and opts.ctf_correction == "3d":
        yield from wbp_depth_corrected_slabs(images, setup, corrector, settings, slab=opts.slab)
        return
    if corrector is not None:
        images = corrector.correct(images)
    if opts.method == "sirt":
        import torch

        from tiltflow.tomo.sirt import sirt

        big = math.prod(setup.volume_shape) > 2**27  # > 512 MB: keep the volume in host memory
        vol = sirt(images, setup, iterations=opts.iterations, slab=opts.slab,
                   store=torch.device("cpu") if big else None,
                   progress=lambda i, r: log.info("SIRT iteration %d: residual %.4f", i + 1, r))
        d = setup.volume_shape[0]
        for z0 in range(0, d, opts.slab):
            yield z0, min(d, z0 + opts.slab), vol[z0 : z0 + opts.slab]
        return
    yield from wbp_slabs(images, setup, settings, slab=opts.slab)

