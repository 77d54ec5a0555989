"""Motion-correct one movie: frames -> gain, defects -> global (+ local) alignment -> sums and trajectory.

The order is MotionCor2's and RELION's: gain correction; hot pixels (RELION's rule: above mean + 6 sd in the
unaligned sum, or zero in the gain) and the gain step's dead pixels (its defect map, as MotionCor's
-DefectMap) replaced by the frame's mean so a static defect cannot pull the alignment to zero shift; global alignment on a Fourier-cropped copy; smoothing; optional patch alignment
and the polynomial field; summation at full size with dose weighting and Fourier binning; the spectrum
thumbnail from the unweighted sum.

Memory: as many of the gain-corrected frames' spectra are kept as fit in ``memory_gb`` (default 4 GB, half
the free memory on a GPU); the others are read again from the movie for every pass (three reads in all).
:func:`movie_bytes` says what one movie holds, for the step's cap on tilts at a time.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np

from tiltflow.errors import TiltflowError
from tiltflow.motion import apply, doseweight, estimate, fourier, local, spectrum, trajectory

log = logging.getLogger("tiltflow.motion")

HOT_PIXEL_SIGMA = 6.0  # RELION's hotpixel_sigma


@dataclass(frozen=True)
class MotionSettings:
    """How to correct a movie (the built-in backend's options)."""

    throw: int = 0  # frames left out at the start
    trunc: int = 0  # frames left out at the end
    bin_factor: float = 1.0  # Fourier binning of the output
    patches: tuple[int, int] = (1, 1)  # x, y; fewer than 2x2 = global only
    even_odd: bool = True
    bfactor: float = 500.0  # px^2, global alignment (MotionCor2 -Bft default)
    bfactor_local: float = 500.0
    group: int = 1  # frames per group for the global alignment
    max_shift: float = 80.0  # px
    smooth: bool = True
    fix_hot_pixels: bool = True
    memory_gb: float | None = None


@dataclass(frozen=True)
class Exposure:
    """Dose per movie frame (e/A^2), the tilt's pre-exposure (e/A^2) and the voltage, for dose weighting."""

    dose_per_frame: float
    pre_exposure: float
    kv: float = 300.0


@dataclass
class MotionResult:
    """Everything one movie produced."""

    trajectory: trajectory.Trajectory
    sums: apply.Sums
    spectrum: spectrum.Spectrum
    pixel_size: float  # of the output images (movie pixel x binning)
    local_model: local.LocalModel | None
    alignment: estimate.AlignResult
    hot_pixels: int
    report: list[str] = field(default_factory=list)


def correct_movie(movie, *, pixel_size: float, gain: np.ndarray | None = None,
                  settings: MotionSettings = MotionSettings(), exposure: Exposure | None = None,
                  defects: np.ndarray | None = None, device=None, label: str = "movie") -> MotionResult:
    """Correct ``movie`` (a :class:`tiltflow.io.movies.Movie`); dose-weight when ``exposure`` is given.

    ``defects`` is a defect map (non-zero = bad pixel, e.g. the gain step's ``defects.mrc``): those pixels
    are replaced like hot pixels. ``label`` names the tilt in errors and the report.
    """
    import torch

    t0 = time.perf_counter()
    dev = torch.device(device) if device is not None else torch.device("cpu")
    n = movie.n_frames
    first, stop = settings.throw, n - settings.trunc
    if settings.throw < 0 or settings.trunc < 0 or stop - first < 2:
        raise TiltflowError(f"{label}: {n} frames, --throw {settings.throw} --trunc {settings.trunc} leave "
                            f"{max(stop - first, 0)}; at least 2 are needed", movie.path)
    shape = tuple(movie.shape)
    if gain is not None and tuple(gain.shape) != shape:
        raise TiltflowError(f"{label}: movie frames are {shape[1]}x{shape[0]} but the gain reference is "
                            f"{gain.shape[1]}x{gain.shape[0]} (wrong gain, or it needs rotating/flipping)",
                            movie.path)
    report = [f"movie {movie.path} ({n} frames of {shape[1]}x{shape[0]}, {movie.dtype}), frames used "
              f"{first + 1}-{stop}"]
    if defects is not None and tuple(defects.shape) != shape:
        raise TiltflowError(f"{label}: the defect map is {defects.shape[1]}x{defects.shape[0]}, the frames "
                            f"{shape[1]}x{shape[0]}", movie.path)
    frames = _FrameSource(movie, range(first, stop), gain, dev, settings, label, defects)
    report.append(f"hot pixels replaced: {frames.n_hot}; frame spectra kept in memory: {frames.kept} of {frames.n}")

    # global alignment on a Fourier-cropped copy
    use_local = settings.patches[0] * settings.patches[1] >= 4
    b_min = min(settings.bfactor, settings.bfactor_local) if use_local else settings.bfactor
    wshape = estimate.working_shape(shape, b_min)
    small = torch.stack([fourier.crop(frames.spectrum(k), shape, wshape) for k in range(frames.n)])
    small_real = torch.fft.irfft2(small, s=wshape)
    params = estimate.AlignParams(bfactor=settings.bfactor, max_shift=settings.max_shift, group=settings.group)
    res = estimate.align(estimate.prepare(small_real), wshape, shape, params)
    shifts = res.shifts
    lam = 0.0
    if settings.smooth:
        shifts, lam = trajectory.smooth(shifts)
    report.append(f"global alignment at {wshape[1]}x{wshape[0]}: {res.iterations} iterations, "
                  f"{'converged' if res.converged else 'NOT converged'}, smoothing lambda {lam:.3g}")
    if not res.converged:
        log.warning("%s: global alignment did not converge in %d iterations (last update %.3f px)",
                    label, res.iterations, res.history[-1] if res.history else float("nan"))

    # local motion on the globally aligned copy
    model = None
    if use_local:
        aligned = torch.fft.irfft2(fourier.shift(small, torch.as_tensor(shifts - shifts[0], dtype=torch.float32),
                                                 shape, wshape), s=wshape)
        lparams = local.LocalParams(patches=tuple(settings.patches), bfactor=settings.bfactor_local)
        model, note = local.estimate_local(aligned, shape, lparams)
        report.append(f"local motion, {settings.patches[0]}x{settings.patches[1]} patches: {note}")
    del small, small_real
    traj = trajectory.Trajectory.from_used(shifts, n, first, model.coeffs if model else None)

    # summation at full size
    out_shape = apply.binned_shape(shape, settings.bin_factor)
    exposures = None
    if exposure is not None:
        exposures = doseweight.frame_exposures(n, exposure.dose_per_frame, exposure.pre_exposure)
    summer = apply.FrameSummer(shape, out_shape, pixel_size, exposures=exposures,
                               kv=exposure.kv if exposure else 300.0, halves=settings.even_odd,
                               local_coeffs=model.coeffs if model else None, device=dev)
    for k in range(frames.n):
        i = first + k
        summer.add(frames.spectrum(k), i, traj.shifts[i], float(k))
    sums = summer.result()
    out_pixel = pixel_size * settings.bin_factor
    # the thumbnail comes from the unweighted output-size sum, at the output pixel (RELION: early binning)
    plain = torch.fft.irfft2(fourier.crop(sums.plain_spectrum, shape, out_shape), s=out_shape)
    spec = spectrum.amplitude_spectrum(plain, out_pixel)
    report.append(f"output {out_shape[1]}x{out_shape[0]} at {out_pixel:.4f} A/px"
                  + (f", dose-weighted ({exposure.dose_per_frame:.4g} e/A^2 per frame, pre-exposure "
                     f"{exposure.pre_exposure:.4g})" if exposure else "") + f"; {time.perf_counter() - t0:.1f} s")
    return MotionResult(traj, sums, spec, out_pixel, model, res, frames.n_hot, report)


class _FrameSource:
    """Gain-corrected, defect-fixed frames of the used range as full-size spectra (as many kept as fit)."""

    def __init__(self, movie, indices: range, gain, device, settings: MotionSettings, label: str,
                 defects: np.ndarray | None = None):
        import torch

        self.movie, self.indices, self.device, self.label = movie, indices, device, label
        self.n = len(indices)
        self.gain = None if gain is None else torch.as_tensor(np.asarray(gain, np.float32), device=device)
        h, w = movie.shape
        budget = _memory_budget(settings.memory_gb, device)
        # as many frames' spectra as fit are kept, the others are read again from the movie in each pass
        self.kept = min(self.n, int(budget // cache_bytes((h, w), 1)))
        self._cache: list = [None] * self.kept
        # float32: a sum of counts is exact in it to 2^24, and the 6-sigma rule needs no more (float64 cost 3 %)
        total = torch.zeros(h, w, dtype=torch.float32, device=device)
        for k in range(self.n):
            fr = self._read(k)
            total += fr
            if k < self.kept:
                self._cache[k] = fr
        if not bool(torch.isfinite(total.sum(dtype=torch.float64))):  # NaN/inf propagate into the sum
            self._refuse_non_finite()
        self.bad_index = None
        self.n_hot = 0
        if settings.fix_hot_pixels:
            mean, sd = float(total.mean()), float(total.std())
            bad = total > mean + HOT_PIXEL_SIGMA * sd
            if self.gain is not None:
                bad |= self.gain == 0
            if defects is not None:
                bad |= torch.as_tensor(np.asarray(defects) != 0, device=device)
            self.n_hot = int(bad.sum())
            if self.n_hot:
                # flat indices of the bad pixels, found once: a boolean mask used as an index finds them again
                # in every frame (torch's nonzero: 2.5 GB of fresh memory for 10 frames of 4096^2)
                self.bad_index = bad.flatten().nonzero().squeeze(1)
                self.n_good = bad.numel() - self.n_hot
        for k in range(self.kept):
            self._cache[k] = torch.fft.rfft2(self._fix(self._cache[k]))

    def _read(self, k: int):
        import torch

        i = self.indices[k]
        arr = self.movie.frame(i)
        arr32 = np.asarray(arr, dtype=np.float32)
        fr = torch.as_tensor(arr32, device=self.device)
        # the tensor must be our own (later steps work in place), never the movie's array (raw data)
        shared = fr.device.type == "cpu" and np.may_share_memory(arr32, arr)
        if self.gain is not None:
            fr = fr * self.gain if shared else fr.mul_(self.gain)
        elif shared:
            fr = fr.clone()
        return fr

    def _refuse_non_finite(self) -> None:
        """Name the first frame with NaN or infinite values (read again: only on this error)."""
        import torch

        for k in range(self.n):
            if not bool(torch.isfinite(self._read(k)).all()):
                raise TiltflowError(f"{self.label}: frame {self.indices[k] + 1} has NaN or infinite values "
                                    "(corrupt frame or gain)", self.movie.path)
        raise TiltflowError(f"{self.label}: the frames sum to NaN or infinity (corrupt frames or gain)",
                            self.movie.path)

    def _fix(self, fr):
        import torch

        if self.bad_index is None:
            return fr
        flat = fr.view(-1)  # fr is this source's own contiguous copy
        good_sum = float(flat.sum(dtype=torch.float64)) - float(flat[self.bad_index].sum(dtype=torch.float64))
        flat.index_fill_(0, self.bad_index, good_sum / max(self.n_good, 1))
        return fr

    def spectrum(self, k: int):
        """Full-size rfft2 of used frame ``k`` (0-based within the used range)."""
        import torch

        if k < self.kept:
            return self._cache[k]
        return torch.fft.rfft2(self._fix(self._read(k)))


def cache_bytes(shape: tuple[int, int], n_used: int) -> int:
    """What keeping ``n_used`` frames' spectra costs (complex64 half-spectra of the full frame)."""
    h, w = shape
    return n_used * h * (w // 2 + 1) * 8


def movie_bytes(shape: tuple[int, int], n_used: int) -> int:
    """About what :func:`correct_movie` holds for one movie on the CPU besides the kept frames (:func:`cache_bytes`).

    Measured peak minus the process's memory before (ru_maxrss; huge pages, dose weighting, even/odd sums),
    no frame kept / all kept: 10 frames of 2048^2 0.41 / 0.57 GiB, 20 frames 0.44 / 0.73, 10 frames of
    5760x4092 1.38 / 2.24 GiB. The full-size sums, their spectra and one frame's temporaries are about 54 bytes
    per pixel, the working-size stack grows with the frames; rounded up, so that a cap on workers errs
    towards fewer.
    """
    h, w = shape
    return 56 * h * w + n_used * h * w * 3 // 4 + (128 << 20)


def _memory_budget(memory_gb: float | None, device) -> float:
    if memory_gb is not None:
        return memory_gb * 1e9
    if getattr(device, "type", "cpu") == "cuda":
        import torch

        free, _ = torch.cuda.mem_get_info(device)
        return 0.5 * free
    return 4e9
