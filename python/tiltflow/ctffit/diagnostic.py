"""Diagnostic images of a CTF fit: what users look at to trust or reject a tilt.

The MRC (``rlnCtfImage``, RELION's ``..._PS.ctf``) follows CTFFIND: the background-subtracted spectrum,
contrast-stretched to [0, 1], with the fitted CTF^2 drawn over the right half so that rings can be
followed across the seam. The PNG adds the 1-D view (equi-phase average, fit, local correlation and
the fit resolution), the same plot ``ctffind_plot_results.sh`` makes, for the HTML report.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tiltflow.atomic import atomic_path


@dataclass
class DiagnosticPlot:
    """Everything the PNG shows, whichever backend produced the fit."""

    image: np.ndarray  # diagnostic image (box x box), y up
    k: np.ndarray  # 1/A
    average: np.ndarray  # equi-phase average, background removed
    fit: np.ndarray  # CTF^2 fit on the same scale
    cc: np.ndarray  # local correlation
    resolution: float  # A (inf: no fit)
    res_min: float
    res_max: float
    title: str


def diagnostic_image(flat_spectrum, pixel_size: float, defocus: float, ax: float, ay: float,
                     phase_shift: float, optics, k_lo: float) -> np.ndarray:
    """CTFFIND-style diagnostic: spectrum (left) and fitted CTF^2 (right half), float32 in [0, 1]."""
    import torch

    from tiltflow.ctffit.background import Background, bspline_basis
    from tiltflow.ctffit.model import ctf_squared
    from tiltflow.ctffit.search import rotational_average
    from tiltflow.ctffit.spectrum import frequency_grid

    box = flat_spectrum.shape[-1]
    k_nyq = (box // 2 - 1) / (box * pixel_size)
    prof = rotational_average(flat_spectrum, pixel_size, 0.5 * k_lo, k_nyq)
    k2p = prof.k.double() ** 2
    smooth = Background(bspline_basis(k2p, 8, float(k2p[0]), float(k2p[-1])).float()).fit(prof.value)
    kx, ky = frequency_grid(box, pixel_size, flat_spectrum.device)
    k2 = kx * kx + ky * ky
    r = k2.sqrt().flatten()
    idx = torch.searchsorted(prof.k.contiguous(), r.contiguous()).clamp(0, len(prof.k) - 1)
    spec = flat_spectrum - smooth[idx].reshape(flat_spectrum.shape)
    band = (k2 >= k_lo * k_lo) & (k2 <= k_nyq * k_nyq)
    vals = spec[band]
    mean, sigma = float(vals.mean()), float(vals.std())
    lo, hi = mean - sigma, mean + 2 * sigma
    img = ((spec - lo) / max(hi - lo, 1e-30)).clamp(0, 1)
    phi = torch.atan2(ky, kx)
    fit = ctf_squared(k2, torch.cos(2 * phi), torch.sin(2 * phi), defocus, ax, ay, optics, phase_shift)
    right = (kx > 0) & (k2 >= k_lo * k_lo)
    img = torch.where(right, fit, img)
    img[k2 < (0.5 * k_lo) ** 2] = 0.5
    return img.cpu().numpy().astype(np.float32)


#: one Figure per process, reused for every tilt's PNG: building the axes, ticks and legend cost more than
#: drawing them (profile: 60 % of a PNG), and a CTF step writes one per tilt
_CANVAS: dict[str, object] = {}
_LOCK = threading.Lock()
_NO_FIT = "no fit resolution"


def _canvas() -> dict[str, object]:
    """The reused figure and the artists each PNG updates (built on first use)."""
    if _CANVAS:
        return _CANVAS
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9.0, 4.2))
    FigureCanvasAgg(fig)
    # fixed axes positions: tight_layout and secondary axes cost more than the drawing itself
    ax_img = fig.add_axes((0.01, 0.04, 0.40, 0.80))
    ax_1d = fig.add_axes((0.48, 0.13, 0.50, 0.71))
    image = ax_img.imshow(np.zeros((2, 2)), cmap="gray", origin="lower", vmin=0, vmax=1, interpolation="nearest")
    ax_img.set_axis_off()
    ax_img.set_title("spectrum | fitted CTF$^2$", fontsize=9)
    (average,) = ax_1d.plot([], [], color="0.35", lw=0.8, label="spectrum (equi-phase average)")
    (fit,) = ax_1d.plot([], [], color="tab:blue", lw=0.9, label="CTF$^2$ fit")
    (cc,) = ax_1d.plot([], [], color="tab:orange", lw=1.0, label="local correlation")
    ax_1d.axhline(0.5, color="tab:orange", lw=0.5, ls=":")
    span = ax_1d.axvspan(0, 1, color="tab:green", alpha=0.06, lw=0)
    res = ax_1d.axvline(0, color="tab:red", lw=0.8, ls="--", label=_NO_FIT)
    ax_1d.set_ylim(-1.1, 1.6)
    ax_1d.set_xlabel("spatial frequency (1/A)", fontsize=8)
    ax_1d.tick_params(labelsize=7)
    legend = ax_1d.legend(fontsize=6.5, loc="upper right", frameon=False)
    title = fig.suptitle("", fontsize=9)
    _CANVAS.update(fig=fig, ax_1d=ax_1d, image=image, average=average, fit=fit, cc=cc, span=span, res=res,
                   legend=legend, title=title)
    return _CANVAS


def write_png(path: str | Path, plot: DiagnosticPlot, dpi: int = 90) -> Path:
    """Write the diagnostic image and the 1-D plot side by side as a PNG (atomically)."""
    with _LOCK:
        c = _canvas()
        c["image"].set_data(plot.image)
        c["title"].set_text(plot.title)
        k = np.asarray(plot.k, dtype=float)
        keep = k > 0
        k = k[keep]
        ax_1d = c["ax_1d"]
        for name, y in (("average", _unit(np.asarray(plot.average)[keep])), ("fit", _unit(np.asarray(plot.fit)[keep])),
                        ("cc", np.asarray(plot.cc, dtype=float)[keep])):
            c[name].set_data(k, y)
        span, res, label = c["span"], c["res"], c["legend"].get_texts()[3]
        fitted = math.isfinite(plot.resolution) and plot.resolution > 0
        if len(k):
            span.set_x(1 / plot.res_min)
            span.set_width(1 / plot.res_max - 1 / plot.res_min)
            if fitted:
                res.set_xdata([1 / plot.resolution] * 2)
            ax_1d.set_xlim(float(k[0]), float(k[-1]))
            ticks = [t for t in (30, 20, 15, 12, 10, 8, 7, 6, 5, 4, 3) if k[0] <= 1 / t <= k[-1]]
            ax_1d.set_xticks([1 / t for t in ticks], [f"1/{t}" for t in ticks])
        span.set_visible(bool(len(k)))
        res.set_visible(bool(len(k)) and fitted)
        label.set_text(f"fit to {plot.resolution:.1f} A" if fitted else _NO_FIT)
        with atomic_path(path) as tmp:
            c["fig"].savefig(tmp, dpi=dpi, format="png", pil_kwargs={"compress_level": 3})
    return Path(path)


def _unit(y) -> np.ndarray:
    """Scale a zero-mean trace to about +-1 for plotting."""
    y = np.asarray(y, dtype=float)
    s = np.percentile(np.abs(y), 98) if len(y) else 1.0
    return y / s if s > 0 else y
