"""The report's figures (matplotlib, Agg backend), one PNG per figure, written atomically.

Every plot marks excluded tilts the same way (red crosses, red frames) so a reader learns it once.
Each function returns the PNG path, or None when the data it needs are missing.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from tiltflow import star
from tiltflow.atomic import atomic_path
from tiltflow.shells import rfft_shells

KEPT = "#1f5fa8"
EXCLUDED = "#d62728"


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    plt = _plt()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, bbox_inches="tight")
    plt.close(fig)
    return path


def _num(t: pd.DataFrame, col: str) -> np.ndarray | None:
    if col not in t:
        return None
    return pd.to_numeric(t[col], errors="coerce").to_numpy(float)


def ctf_vs_tilt(t: pd.DataFrame, path: Path) -> Path | None:
    """Defocus and CTF fit resolution against tilt angle."""
    ang, u, v = _num(t, star.NOMINAL_TILT), _num(t, star.DEFOCUS_U), _num(t, star.DEFOCUS_V)
    if ang is None or u is None or v is None:
        return None
    res = _num(t, star.CTF_MAX_RES)
    ex = t[star.TF_EXCLUDED].to_numpy(bool)
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    df = star.mean_defocus_um(t)
    axes[0].plot(ang[~ex], df[~ex], "o", color=KEPT, label="kept")
    axes[0].plot(ang[ex], df[ex], "x", color=EXCLUDED, ms=9, mew=2, label="excluded")
    axes[0].set(xlabel="tilt angle (deg)", ylabel="defocus (um, underfocus)", title="Defocus")
    axes[0].legend(fontsize=8)
    if res is not None:
        r = np.where(np.isfinite(res), res, np.nan)
        axes[1].plot(ang[~ex], r[~ex], "o", color=KEPT)
        axes[1].plot(ang[ex], r[ex], "x", color=EXCLUDED, ms=9, mew=2)
        axes[1].invert_yaxis()
    axes[1].set(xlabel="tilt angle (deg)", ylabel="fit resolution (A)", title="CTF fit resolution")
    for a in axes:
        a.grid(alpha=0.3)
    return _save(fig, path)


def motion_per_tilt(t: pd.DataFrame, path: Path) -> Path | None:
    """Total and early motion per tilt, in acquisition order."""
    tot = _num(t, star.MOTION_TOTAL)
    if tot is None:
        return None
    early = _num(t, star.MOTION_EARLY)
    idx = _num(t, star.TF_ACQ_INDEX)
    ex = t[star.TF_EXCLUDED].to_numpy(bool)
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9, 3))
    colors = [EXCLUDED if e else KEPT for e in ex]
    ax.bar(idx, tot, color=colors, alpha=0.8, label="total")
    if early is not None:
        ax.bar(idx, early, color="#999999", width=0.4, label="early")
    ax.set(xlabel="acquisition index", ylabel="motion (A)", title="Beam-induced motion per tilt (red: excluded)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, path)


def dose_plot(t: pd.DataFrame, path: Path) -> Path | None:
    """Pre-exposure against tilt angle, joined in acquisition order (the dose-symmetric zig-zag)."""
    pre, ang = _num(t, star.PRE_EXPOSURE), _num(t, star.NOMINAL_TILT)
    if pre is None or ang is None:
        return None
    ex = t[star.TF_EXCLUDED].to_numpy(bool)
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    ax.plot(ang, pre, "-", color="#aaaaaa", lw=1)
    ax.plot(ang[~ex], pre[~ex], "o", color=KEPT, ms=4)
    ax.plot(ang[ex], pre[ex], "x", color=EXCLUDED, ms=8, mew=2)
    ax.set(xlabel="tilt angle (deg)", ylabel="pre-exposure (e/A^2)", title="Dose (acquisition order)")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def residual_columns(t: pd.DataFrame) -> list[str]:
    """The columns that hold alignment residuals, whichever aligner wrote them."""
    return [c for c in t.columns if "residual" in c.lower()]


def alignment_plot(t: pd.DataFrame, path: Path) -> Path | None:
    """Alignment residuals per tilt when the aligner reports them, and the fitted shifts."""
    ang = _num(t, star.NOMINAL_TILT)
    res_cols = residual_columns(t)
    xs, ys = _num(t, star.X_SHIFT), _num(t, star.Y_SHIFT)
    if ang is None or (not res_cols and xs is None):
        return None
    plt = _plt()
    n = int(bool(res_cols)) + int(xs is not None and ys is not None)
    fig, axes = plt.subplots(1, n, figsize=(4.5 * n, 3.2), squeeze=False)
    k = 0
    if res_cols:
        r = _num(t, res_cols[0])
        axes[0, k].plot(ang, r, "o", color=KEPT)
        axes[0, k].set(xlabel="tilt angle (deg)", ylabel=res_cols[0], title="Alignment residual")
        k += 1
    if xs is not None and ys is not None:
        axes[0, k].plot(ang, xs, "o", ms=4, label="x shift")
        axes[0, k].plot(ang, ys, "s", ms=4, label="y shift")
        axes[0, k].set(xlabel="tilt angle (deg)", ylabel="shift (A)", title="Alignment shifts")
        axes[0, k].legend(fontsize=8)
    for a in axes.ravel():
        a.grid(alpha=0.3)
    return _save(fig, path)


def hand_plot(hand: dict, path: Path) -> Path | None:
    """Measured defocus slope across the axis against tan(tilt), with the +1 and -1 predictions."""
    tilts = hand.get("tilts") or []
    if not tilts:
        return None
    tan = np.array([math.tan(math.radians(x["tilt_angle"])) for x in tilts])
    slope = np.array([x["slope"] for x in tilts])
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    xx = np.linspace(min(tan.min(), -0.2) * 1.1, max(tan.max(), 0.2) * 1.1, 10)
    ax.plot(xx, -xx, "--", color="#2ca02c", label="hand +1")
    ax.plot(xx, xx, ":", color="#9467bd", label="hand -1")
    ax.plot(tan, slope, "o", color="black", label="measured")
    ax.set(xlabel="tan(tilt)", ylabel="defocus slope across axis", title=_hand_title(hand))
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def _hand_title(hand: dict) -> str:
    """'measured +1 (confident), rlnTomoHand +1 (measured)' from ``<name>_hand.json``."""
    measured = hand.get("measured", hand.get("hand", 0)) or 0
    confident = hand.get("confident", bool(hand.get("hand")))
    title = f"Handedness: measured {measured:+d} ({'confident' if confident else 'not confident'})"
    written = hand.get(star.HAND)
    if written is not None:
        title += f"\nrlnTomoHand {int(float(written)):+d} ({hand.get('source', 'measured' if confident else 'imported')})"
    return title


def _binned(img: np.ndarray, size: int) -> np.ndarray:
    a = np.asarray(img, dtype=np.float32)
    b = max(1, int(math.ceil(max(a.shape) / size)))
    h, w = (a.shape[0] // b) * b, (a.shape[1] // b) * b
    return a[:h, :w].reshape(h // b, b, w // b, b).mean(axis=(1, 3))


def _contrast(img: np.ndarray) -> tuple[float, float]:
    finite = img[np.isfinite(img)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(finite, [1, 99])
    return float(lo), float(hi if hi > lo else lo + 1)


def thumbnails(images: list[tuple[float, int, np.ndarray | None, bool, str]], path: Path) -> Path | None:
    """A grid of tilt images sorted by angle: (angle, acquisition index, image, excluded, reason)."""
    if not images:
        return None
    plt = _plt()
    n = len(images)
    cols = min(8, n)
    rows = int(math.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.95 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (ang, idx, img, ex, reason) in zip(axes.ravel(), sorted(images, key=lambda x: x[0]), strict=False):
        if img is not None:
            small = _binned(img, 128)
            lo, hi = _contrast(small)
            ax.imshow(small, cmap="gray", vmin=lo, vmax=hi)
        ax.set_title(f"{ang:+.0f} deg (#{idx})", fontsize=7, color=EXCLUDED if ex else "black")
        if ex:
            ax.axis("on")
            ax.set_xticks([])
            ax.set_yticks([])
            for s in ax.spines.values():
                s.set_color(EXCLUDED)
                s.set_linewidth(3)
            short = reason.replace("excluded: ", "").split(";")[0]
            ax.text(0.5, -0.08, short[:34], transform=ax.transAxes, ha="center", va="top", fontsize=5.5,
                    color=EXCLUDED)
    fig.suptitle("Tilt images by angle (red frame: excluded)", fontsize=9)
    return _save(fig, path)


def spectrum_vs_ctf(spectrum: np.ndarray, pixel_size: float, defocus_u: float, defocus_v: float,
                    angle: float, optics: tuple[float, float, float], title: str, path: Path) -> Path:
    """CTFFIND-style diagnostic: the power spectrum (left half) beside the fitted CTF^2 (right half)."""
    from tiltflow.ctfmodel import ctf_2d

    spec = np.asarray(spectrum, dtype=np.float64)
    n = min(spec.shape)
    spec = spec[:n, :n]
    ctf = ctf_2d((n, n), pixel_size, defocus_u, defocus_v, angle, voltage=optics[0], cs=optics[1],
                 amplitude_contrast=optics[2]).numpy()
    model = np.fft.fftshift(ctf**2)
    s = np.log(np.maximum(spec, 1e-12))
    yy, xx = np.indices(s.shape) - n // 2
    r = np.hypot(xx, yy)
    # remove the radial fall-off so that rings show (as CTFFIND's diagnostic does)
    rb = r.astype(int)
    prof = np.bincount(rb.ravel(), s.ravel()) / np.maximum(np.bincount(rb.ravel()), 1)
    s = s - prof[rb]
    s[r < max(2, n // 40)] = 0
    lo, hi = np.percentile(s[r < n // 2], [2, 98])
    s = np.clip((s - lo) / max(hi - lo, 1e-9), 0, 1)
    out = s.copy()
    out[:, n // 2:] = model[:, n // 2:]
    plt = _plt()
    fig, ax = plt.subplots(figsize=(3.2, 3.4))
    ax.imshow(out, cmap="gray")
    ax.axvline(n // 2 - 0.5, color="yellow", lw=0.8)
    ax.set_title(title, fontsize=8)
    ax.axis("off")
    return _save(fig, path)


def welch_spectrum(img: np.ndarray, box: int = 256) -> np.ndarray:
    """Averaged power spectrum of overlapping tiles (centred), when no step saved one."""
    a = np.asarray(img, dtype=np.float64)
    box = min(box, (min(a.shape) // 2) * 2)
    step = box // 2
    w = np.outer(np.hanning(box), np.hanning(box))
    acc = np.zeros((box, box))
    k = 0
    for y in range(0, a.shape[0] - box + 1, step):
        for x in range(0, a.shape[1] - box + 1, step):
            t = a[y:y + box, x:x + box]
            acc += np.abs(np.fft.fft2((t - t.mean()) * w)) ** 2
            k += 1
    return np.fft.fftshift(acc / max(k, 1))


def central_slices(vol: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The central XY and XZ slabs (a few planes averaged), the planes reconstruct saves uncorrected."""
    from tiltflow.steps.reconstruct import central_planes

    (z0, z1), (y0, y1) = central_planes(vol.shape[0], vol.shape[1])
    return np.asarray(vol[z0:z1]).mean(axis=0), np.asarray(vol[:, y0:y1, :]).mean(axis=1)


def tomogram_slices(volume_path: Path, path: Path, title: str,
                    uncorrected: tuple[np.ndarray, np.ndarray] | None = None) -> Path | None:
    """Central XY and XZ slices of the tomogram; with ``uncorrected`` (xy, xz) beside them, for comparison."""
    from tiltflow.io.mrc import read_mrc

    vol, _ = read_mrc(volume_path)
    if vol.ndim != 3:
        return None
    nz, ny, nx = vol.shape
    columns = [("", central_slices(vol))]
    if uncorrected is not None:
        columns = [(" with CTF correction", columns[0][1]), (" without", uncorrected)]
    plt = _plt()
    ratio = nz / max(ny, 1)
    fig, axes = plt.subplots(2, len(columns), squeeze=False,
                             figsize=(6 * len(columns), 6 * (1 + ratio) * ny / max(nx, 1) * 0.9 + 0.6),
                             gridspec_kw={"height_ratios": [ny, max(nz, 1)]})
    for c, (label, (xy, xz)) in enumerate(columns):
        for r, (img, name) in enumerate(((xy, "XY (central slice)"), (xz, "XZ (central slice)"))):
            ax = axes[r, c]
            lo, hi = _contrast(img)
            ax.imshow(img, cmap="gray", vmin=lo, vmax=hi, origin="lower")
            ax.set_title(name + label, fontsize=8)
            ax.axis("off")
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def radial_power(data: np.ndarray, pixel: float, box: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Radially averaged power spectrum (1/A, power) of the central ``box``-sized region of a 2-D or 3-D array."""
    a = np.asarray(data, dtype=np.float64)
    sl = tuple(slice(max(0, n // 2 - box // 2), max(0, n // 2 - box // 2) + min(n, box)) for n in a.shape)
    a = a[sl] - a[sl].mean()
    shells = rfft_shells(a.shape)
    total = shells.sum(np.abs(np.fft.rfftn(a)) ** 2)
    n = np.bincount(shells.index, minlength=shells.count)
    return shells.centres(pixel), total / np.maximum(n, 1)


def tomogram_spectrum(volume_path: Path, path: Path, title: str,
                      uncorrected_xy: np.ndarray | None = None) -> Path | None:
    """The tomogram's radially averaged power spectrum; with ``uncorrected_xy``, the XY slab's with and without."""
    from tiltflow.io.mrc import read_mrc

    vol, px = read_mrc(volume_path)
    if vol.ndim != 3 or not px:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.4))
    k, p = radial_power(vol, float(px))
    ax.semilogy(k[1:], p[1:], color=KEPT, label="tomogram (central box)")
    if uncorrected_xy is not None:
        xy = central_slices(vol)[0]
        for img, style, label in ((xy, "-", "XY slab, corrected"), (uncorrected_xy, "--", "XY slab, uncorrected")):
            k2, p2 = radial_power(img, float(px), box=512)
            ax.semilogy(k2[1:], p2[1:] / p2[1:].mean() * p[1:].mean(), "k" + style, lw=0.8, label=label)
    ax.set_xlabel("spatial frequency (1/A)")
    ax.set_ylabel("power")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return _save(fig, path)
