"""Averaged power spectra (Welch periodograms) of a micrograph, ready for CTF fitting.

Why tiles: one FFT of a whole tilt image gives a spectrum too noisy to see Thon rings at 3 e/A^2;
averaging the power of overlapping, Hann-windowed tiles (Welch's method, as CTFFIND and ctfplotter do)
trades spectral resolution we do not need for noise we cannot afford.

Why tiles are cut at the *native* pixel and their spectra cropped: that is the spectrum of the image
resampled to the fitting pixel (Fourier cropping), without a separate resampling pass, and the native
spectrum's outer band is still there for the ice-ring measure.

Why each tile's spectrum is kept: on a tilted specimen the defocus changes across the image, so the
rings of different tiles have different radii. :func:`tilt_corrected_average` stretches each tile's
spectrum onto the defocus at the image centre before averaging (CTFFIND5 and ctfplotter do the same).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tiltflow.ctffit.model import Optics, equiphase_k2
from tiltflow.errors import TiltflowError
from tiltflow.fftsize import is_smooth

#: smallest spectrum box accepted (rings need room)
MIN_BOX = 64

#: CTFFIND's bands for the ice-ring measure (ReturnIcinessOfSpectrum): 3.9-3.5 A against 30-6 A
ICE_BAND = (3.9, 3.5)
CONTROL_BAND = (30.0, 6.0)


@dataclass
class TileSpectra:
    """Power spectra of the tiles of one image, centred (DC at ``[box // 2, box // 2]``).

    ``centres`` are the tile centres in A relative to the image centre, as (x, y) with x along the MRC x
    axis (columns); ``pixel_size`` is the pixel of the (cropped) spectra, i.e. the fitting pixel.
    """

    power: object  # torch.Tensor (n, box, box)
    centres: object  # torch.Tensor (n, 2)
    pixel_size: float
    native_pixel_size: float
    iciness: float | None = None

    @property
    def box(self) -> int:
        """Side of the square spectrum tiles, in pixels."""
        return int(self.power.shape[-1])

    def average(self):
        """Plain average of the tile spectra (no tilt correction)."""
        return self.power.mean(dim=0)


def fitting_pixel_size(pixel_size: float, res_max: float) -> float:
    """Pixel for fitting: coarse enough that the box samples rings finely, fine enough to reach ``res_max``.

    Nyquist is put 10% beyond ``res_max`` (so the fit-resolution estimate can reach it); images whose
    pixel is already coarser are used as they are. CTFFIND resamples to 1.4 A for the same reason.
    """
    return max(float(pixel_size), 0.45 * float(res_max))


def _even(n: float) -> int:
    return max(2, int(round(n / 2.0)) * 2)


def _smooth_even(n: float, up: bool = True) -> int:
    """Nearest even size >= n (or <= n) with no prime factor above 5: tiles of 1706 px (2 x 853) FFT slowly."""
    m = _even(n)
    if not up and m > n:
        m -= 2
    while m > 2:
        if is_smooth(m):
            return m
        m += 2 if up else -2
    return 2


def _hann(n: int, device):
    import torch

    w = torch.hann_window(n, periodic=False, dtype=torch.float32, device=device)
    return w[:, None] * w[None, :]


def tile_spectra(
    image,
    pixel_size: float,
    box: int = 512,
    fit_pixel_size: float | None = None,
    overlap: float = 0.5,
    device=None,
    chunk: int = 8,
) -> TileSpectra:
    """Welch power spectra of ``image`` (2-D array or tensor) resampled to ``fit_pixel_size``.

    Tiles overlap by ``overlap``; each is mean-subtracted, Hann-windowed and transformed at the native
    pixel, and its power spectrum is cropped to ``box`` (so ``box`` pixels at the fitting pixel). If the
    image is smaller than one tile the tile shrinks (and ``box`` with it).
    """
    import torch

    img = torch.as_tensor(np.asarray(image, dtype=np.float32) if not isinstance(image, torch.Tensor) else image)
    img = img.to(device=device, dtype=torch.float32)
    if img.ndim != 2:
        raise TiltflowError(f"expected a 2-D image, got shape {tuple(img.shape)}")
    if not bool(torch.isfinite(img.sum())):  # one reduction instead of a full boolean image
        img = torch.nan_to_num(img, nan=0.0, posinf=0.0, neginf=0.0)
    h, w = img.shape
    fit_px = float(fit_pixel_size or pixel_size)
    fit_px = max(fit_px, float(pixel_size))
    native_box = _smooth_even(box * fit_px / pixel_size)
    if native_box > min(h, w):
        native_box = _smooth_even(min(h, w), up=False)
        box = _even(native_box * pixel_size / fit_px)
    if box < MIN_BOX or native_box < MIN_BOX:
        raise TiltflowError(f"image {w}x{h} is too small for CTF fitting (needs at least {MIN_BOX} px)")
    fit_px = pixel_size * native_box / box  # exact pixel of the cropped spectrum
    # robust clipping of outliers (hot pixels, dead edges) before the FFT
    mean, std = img.mean(), img.std()
    if std > 0:
        img = img.clamp(mean - 6 * std, mean + 6 * std)
    step = max(1, int(native_box * (1 - overlap)))
    ys = _starts(h, native_box, step)
    xs = _starts(w, native_box, step)
    window = _hann(native_box, img.device)
    window = window / window.pow(2).mean().sqrt()
    lo = native_box // 2 - box // 2
    ice = _ice_masks(native_box, pixel_size, img.device)
    spectra, centres = [], []
    ice_test = ice_ctrl = 0.0
    coords = [(y, x) for y in ys for x in xs]
    for i in range(0, len(coords), chunk):
        part = coords[i:i + chunk]
        tiles = torch.stack([img[y:y + native_box, x:x + native_box] for y, x in part])
        tiles = tiles - tiles.mean(dim=(-2, -1), keepdim=True)
        f = torch.fft.fft2(tiles * window)
        p = torch.fft.fftshift(f.real**2 + f.imag**2, dim=(-2, -1))
        if ice is not None:
            amp = p.sqrt()
            ice_test += float(amp[:, ice[0]].mean()) * len(part)
            ice_ctrl += float(amp[:, ice[1]].mean()) * len(part)
        spectra.append(p[:, lo:lo + box, lo:lo + box].contiguous())
        for y, x in part:
            centres.append(((x + native_box / 2 - w / 2) * pixel_size, (y + native_box / 2 - h / 2) * pixel_size))
    power = torch.cat(spectra) / float(native_box * native_box)
    iciness = None
    if ice is not None and ice_ctrl > 0:
        iciness = (ice_test / ice_ctrl) ** 2
    return TileSpectra(
        power=power,
        centres=torch.tensor(centres, dtype=torch.float32, device=img.device),
        pixel_size=fit_px,
        native_pixel_size=float(pixel_size),
        iciness=iciness,
    )


def _starts(n: int, size: int, step: int) -> list[int]:
    starts = list(range(0, n - size + 1, step))
    if starts[-1] != n - size:
        starts.append(n - size)  # cover the far edge too
    return starts


def _ice_masks(box: int, pixel_size: float, device):
    """Masks of CTFFIND's ice and control bands on a native spectrum, or None if Nyquist is too low."""
    if 2 * pixel_size > ICE_BAND[1]:
        return None
    k = radius_grid(box, pixel_size, device)
    test = (k >= 1 / ICE_BAND[0]) & (k <= 1 / ICE_BAND[1])
    ctrl = (k >= 1 / CONTROL_BAND[0]) & (k <= 1 / CONTROL_BAND[1])
    return test, ctrl


def frequency_grid(box: int, pixel_size: float, device=None):
    """(kx, ky) in 1/A on a centred ``box`` x ``box`` spectrum (x = columns, y = rows)."""
    import torch

    f = (torch.arange(box, dtype=torch.float32, device=device) - box // 2) / (box * pixel_size)
    ky, kx = torch.meshgrid(f, f, indexing="ij")
    return kx, ky


def radius_grid(box: int, pixel_size: float, device=None):
    """|k| in 1/A on a centred spectrum."""
    kx, ky = frequency_grid(box, pixel_size, device)
    return (kx * kx + ky * ky).sqrt()


def defocus_gradient(tilt_angle: float, tilt_axis: float, sign: int) -> tuple[float, float]:
    """Change of defocus per A of image position, (gx, gy), on a specimen tilted by ``tilt_angle``.

    RELION's geometry (``tiltflow.geometry``): the tilt axis lies at ``tilt_axis`` degrees from the image
    y axis (rlnTomoZRot / rlnTomoNominalTiltAxisAngle), so the defocus changes along (cos a, sin a) and

        defocus(x, y) = defocus_centre + sign * tan(tilt) * (x cos a + y sin a)

    with x along image columns and y along rows (A from the centre). Which sign is right depends on the
    defocus handedness (RELION: sign = -rlnTomoHand, as the simulator models it), which the fit does not
    assume; ``sign`` 0 means no gradient.
    """
    if sign == 0 or tilt_angle == 0:
        return 0.0, 0.0
    g = sign * math.tan(math.radians(tilt_angle))
    a = math.radians(tilt_axis)
    return g * math.cos(a), g * math.sin(a)


def tile_defocus_offsets(tiles: TileSpectra, gradient: tuple[float, float]):
    """Defocus (A) of each tile's centre relative to the image centre."""
    return tiles.centres[:, 0] * gradient[0] + tiles.centres[:, 1] * gradient[1]


def tilt_corrected_average(tiles: TileSpectra, defocus: float, gradient: tuple[float, float], optics: Optics,
                           chunk: int = 16):
    """Average the tile spectra after stretching each onto the defocus at the image centre.

    A tile at defocus ``defocus + d`` has its rings where the centre's would be at a frequency solving
    chi(k'; defocus + d) = chi(k; defocus); sampling each tile at k' for every output k lines the rings up.
    """
    import torch

    offsets = tile_defocus_offsets(tiles, gradient)
    if float(offsets.abs().max()) < 1.0:
        return tiles.average()
    box = tiles.box
    dev = tiles.power.device
    kx, ky = frequency_grid(box, tiles.pixel_size, dev)
    c = box // 2
    # a real image's power spectrum is centrosymmetric and the stretch is radial, so the average is too:
    # rows 0..c are computed, the others are their mirror images (half the work of the step's costliest part)
    rows = c + 1 if box % 2 == 0 else box
    kx, ky = kx[:rows], ky[:rows]
    k2 = kx * kx + ky * ky
    idx = torch.arange(box, dtype=torch.float32, device=dev) - c
    gy, gx = torch.meshgrid(idx[:rows], idx, indexing="ij")
    out = torch.zeros(rows, box, dtype=tiles.power.dtype, device=dev)
    n = tiles.power.shape[0]
    for i in range(0, n, chunk):
        dz = (defocus + offsets[i:i + chunk]).clamp(min=0.05 * defocus)[:, None, None]
        # each tile's k'^2 that carries the phase the centre has at k^2
        k2t = equiphase_k2(k2[None], defocus, dz, optics).clamp(min=0)
        scale = torch.where(k2[None] > 0, (k2t / k2[None].clamp(min=1e-12)).sqrt(), torch.ones_like(k2t))
        sx = (gx[None] * scale + c) / (box - 1) * 2 - 1
        sy = (gy[None] * scale + c) / (box - 1) * 2 - 1
        grid = torch.stack([sx, sy], dim=-1)
        out += torch.nn.functional.grid_sample(tiles.power[i:i + chunk, None], grid, mode="bilinear",
                                               padding_mode="border", align_corners=True).sum(dim=(0, 1))
    if rows < box:  # row box - r, column box - j (mod box) mirror row r, column j
        mirrored = torch.roll(out[1:c].flip(0).flip(1), 1, dims=1)
        out = torch.cat([out, mirrored])
    return out / n
