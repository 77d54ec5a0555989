"""The counting detector: per-pixel sensitivity, Poisson counts, the gain reference, movie files.

Why a sensitivity map: a real camera's pixels differ by a few percent (smoothly over the chip, per column
and per pixel, plus a few weak pixels); the gain reference (``1 / sensitivity``, multiplicative, as
MotionCor's ``-Gain``) is what removes that pattern. The gain is written in the camera's native
orientation, i.e. with the movies' orientation undone by :func:`tiltflow.io.gain.unorient_gain`, so that
``orient_gain(read(gain), rotate, flip) * frame`` is flat: exactly what MotionCor's ``-RotGain -FlipGain``
would need.

Counts: ``Poisson(electrons per pixel per frame * sensitivity * relative intensity)`` where electrons per
pixel per frame ``= dose_per_tilt / frames * pixel_size^2`` (incident). Movies are unnormalised counts:
TIFF (uint8 or uint16, LZW by default, as SerialEM writes) or MRC (mode 0 unsigned bytes with IMOD's
stamp, or mode 6). Each format is written the way SerialEM writes it, so that the field's readers get back
the image meant: an image ``M`` (``M[y, x]`` as every reader holds it in memory) is stored as MRC rows
``M`` and TIFF rows ``M[::-1]`` (IMOD, MotionCor and RELION reverse TIFF rows on read; see
:mod:`tiltflow.io.movies`). A TIFF and an MRC session simulated with the same seed hold the same images.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from tiltflow.atomic import atomic_path

IMOD_STAMP = 1146047817
DARK_FACTOR = 0.02  # a "dark" tilt (beam blocked by a grid bar) keeps this fraction of its counts


def sensitivity_map(height: int, width: int, rng: np.random.Generator, bad_pixels: int = 0) -> np.ndarray:
    """Detector sensitivity (float32, movie orientation): smooth 0.85-1.15, column and pixel noise, weak pixels."""
    import torch

    coarse = rng.normal(size=(1, 1, max(height // 64, 2) + 2, max(width // 64, 2) + 2))
    smooth = torch.nn.functional.interpolate(torch.from_numpy(coarse), size=(height, width), mode="bicubic",
                                             align_corners=True)[0, 0].numpy()
    smooth = (smooth - smooth.mean()) / (smooth.std() + 1e-12)
    yy, xx = np.mgrid[0:height, 0:width]
    ramp = ((xx - width / 2) / width) * rng.uniform(-0.1, 0.1) + ((yy - height / 2) / height) * rng.uniform(-0.1, 0.1)
    sens = 1.0 + 0.06 * smooth + ramp
    sens *= 1.0 + 0.01 * rng.normal(size=(1, width))  # column readout differences
    sens *= 1.0 + 0.02 * rng.normal(size=(height, width))
    sens = np.clip(sens, 0.8, 1.2)
    if bad_pixels:
        flat = rng.choice(height * width, size=min(bad_pixels, height * width), replace=False)
        sens.reshape(-1)[flat] = rng.uniform(0.2, 0.5, size=len(flat))
    return sens.astype(np.float32)


def gain_file_array(sensitivity: np.ndarray, rotate: int, flip: int) -> np.ndarray:
    """The gain reference as stored on disk: ``1 / sensitivity`` with the movie orientation undone."""
    from tiltflow.io.gain import unorient_gain

    return unorient_gain((1.0 / sensitivity).astype(np.float32), rotate, flip)


def movie_dtype(electrons_per_pixel_frame: float) -> np.dtype:
    """uint8 unless bright frames could reach 255 counts (then uint16).

    Bright = the most sensitive pixel (1.2) under twice the mean intensity, plus six standard deviations.
    """
    worst = electrons_per_pixel_frame * 1.2 * 2.0
    return np.dtype(np.uint8) if worst + 6 * np.sqrt(worst) < 255 else np.dtype(np.uint16)


def poisson_counts(rate, generator, dtype: np.dtype) -> np.ndarray:
    """Poisson counts of a torch rate image, as ``dtype`` (clipped to its range, which never binds in practice).

    ``torch.poisson`` is exact and as fast as a CDF inversion at a few electrons per pixel (measured).
    """
    import torch

    c = torch.poisson(rate.float().clamp_min(0), generator=generator)
    return c.clamp_(0, float(np.iinfo(dtype).max)).numpy().astype(dtype)


def write_movie(path: str | Path, frames: np.ndarray, movie_format: str, pixel_size: float,
                compression: str = "lzw") -> Path:
    """Write a (n, h, w) integer stack as a multi-page TIFF (rows reversed, as read back) or an MRC stack."""
    path = Path(path)
    if movie_format == "tiff":
        import tifffile

        from tiltflow.io.movies import tiff_rows

        comp = None if compression == "none" else compression
        with atomic_path(path) as tmp:
            tifffile.imwrite(tmp, tiff_rows(frames), compression=comp, photometric="minisblack", metadata=None)
        return path
    return write_mrc_deterministic(path, frames, pixel_size, label="tiltflow simulate: movie (counts)")


def write_mrc_deterministic(path: str | Path, data: np.ndarray, pixel_size: float, label: str,
                            stack: bool = True) -> Path:
    """MRC without mrcfile's time-stamped label (same bytes for the same data), atomically.

    uint8 data become mode 0 with IMOD's stamp and unsigned-byte flags (as SerialEM writes frames); a 3-D
    array is written as an image stack (ispg 0) when ``stack``, else as a volume.
    """
    import mrcfile

    arr = np.ascontiguousarray(data)
    unsigned_bytes = arr.dtype == np.uint8
    with atomic_path(path) as tmp:
        with mrcfile.new(tmp, overwrite=True) as mrc:
            mrc.set_data(arr.view(np.int8) if unsigned_bytes else arr)
            if stack and arr.ndim == 3:
                mrc.set_image_stack()
            mrc.voxel_size = float(pixel_size)
            mrc.update_header_stats()
            mrc.header.label[0] = label[:80].encode()
            mrc.header.nlabl = 1
        if unsigned_bytes:  # IMOD: mode 0 bytes are unsigned unless flag bit 0 is set
            with open(tmp, "r+b") as f:
                f.seek(76)
                f.write(struct.pack("<3f", float(arr.min()), float(arr.max()), float(arr.mean())))
                f.seek(152)
                f.write(struct.pack("<2i", IMOD_STAMP, 0))
    return Path(path)
