"""Write ``report.html``: session summary, warnings, and one section per tilt series.

Why embedded images: the page must open anywhere (a laptop, a mail attachment, an archive) with no
network and no companion files; the PNGs are also written beside it for reuse in slides. All text that
comes from files (names, reasons, paths) goes through ``html.escape``.
"""

from __future__ import annotations

import base64
import datetime
import html
import logging
import math
from pathlib import Path
from string import Template

import numpy as np
import pandas as pd

from tiltflow import __version__, star
from tiltflow.atomic import write_text
from tiltflow.qc.report import plots
from tiltflow.qc.report.collect import STEPS, SeriesData, SessionData, collect

log = logging.getLogger("tiltflow.report")

_HERE = Path(__file__).parent


def write_report(root: str | Path, output: str | Path | None = None) -> Path:
    """Build the report for the results folder ``root``; returns the HTML path (``output`` relative to ``root``)."""
    root = Path(root)
    data = collect(root)
    out = root / output if output else root / "report" / "report.html"
    fig_dir = out.parent
    sections = [_session_section(data)]
    for sd in data.series:
        try:
            sections.append(_series_section(data, sd, fig_dir / sd.name))
        except Exception as exc:  # one broken series must not hide the others
            log.warning("report: series %s: %s", sd.name, exc)
            sections.append(f"<h2>{_e(sd.name)}</h2><div class='warn'>could not draw this series: {_e(exc)}</div>")
    page = Template((_HERE / "template.html").read_text()).substitute(
        title=_e(f"tiltflow session report: {root.resolve().name}"),
        meta=_e(f"results folder {root.resolve()} - tiltflow {__version__} - "
                f"{datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}"),
        css=(_HERE / "report.css").read_text(),
        body="\n".join(sections),
    )
    write_text(out, page)
    log.info("wrote %s (%d tilt series)", out, len(data.series))
    return out


# --- helpers -------------------------------------------------------------------------------------
def _e(x) -> str:
    return html.escape(str(x), quote=True)


def _img(path: Path | None, caption: str, alt: str) -> str:
    if path is None or not Path(path).is_file():
        return ""
    b64 = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return (f"<figure><img src='data:image/png;base64,{b64}' alt='{_e(alt)}' data-file='{_e(Path(path).name)}'>"
            f"<figcaption>{_e(caption)}</figcaption></figure>")


def _fmt(v, spec: str = ".1f", unit: str = "") -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return "-"
    if not math.isfinite(f):
        return "-"
    return f"{int(f)}{unit}" if spec == "d" else f"{f:{spec}}{unit}"


def _num(t: pd.DataFrame, col: str) -> np.ndarray:
    return pd.to_numeric(t[col], errors="coerce").to_numpy(float) if col in t else np.array([])


# --- session -------------------------------------------------------------------------------------
def series_summary(data: SessionData, sd: SeriesData) -> dict[str, str]:
    """The summary-table row of one series (strings, already formatted) from :meth:`SeriesData.results`."""
    r = sd.results()
    excluded = r.excluded or 0  # before exclude ran every tilt counts as used
    row: dict[str, str] = {"series": sd.name, "tilts used": f"{r.tilts_total - excluded} / {r.tilts_total}",
                           "excluded": str(excluded), "dose (e/A^2)": _fmt(r.dose, ".0f")}
    row["defocus (um)"] = (f"{r.defocus_min_um:.2f} - {r.defocus_max_um:.2f}" if r.defocus_min_um is not None
                           else "-")
    row["CTF res. (A, median)"] = _fmt(r.ctf_resolution)
    row["align residual"] = _fmt(r.residual_px, ".2f")
    row["tilt axis (deg)"] = f"{_fmt(r.tilt_axis)} ({r.tilt_axis_source})" if r.tilt_axis is not None else "-"
    row["hand"] = hand_text(sd.globals)
    row["tomogram"] = r.tomogram or "-"
    row["time (s)"] = _fmt(sd.total_time, ".0f") if sd.timings else "-"
    return row


def hand_text(g: dict) -> str:
    """The rlnTomoHand as written, where it came from, and what was measured with which confidence.

    For example ``-1 (imported; measured +1, not confident: z 3.7, 87% of tilts agree)``.
    """
    hand, source = g.get(star.HAND), g.get(star.TF_HAND_SOURCE)
    text = "-" if hand is None else f"{int(float(hand)):+d}"
    scale, z, agree = (_float(g.get(k)) for k in (star.TF_HAND_SCALE, star.TF_HAND_Z, star.TF_HAND_AGREEMENT))
    called = _float(g.get(star.TF_HAND_MEASURED))
    called = int(called) if math.isfinite(called) else 0
    if not math.isfinite(scale):  # not measured (or --hand given)
        if source:
            text += f" ({source})"
        elif g.get(star.TF_HAND_MEASURED) is not None:
            text += " (measured: undetermined)"
        return text
    evidence = f"z {z:.1f}" + (f", {100 * agree:.0f}% of tilts agree" if math.isfinite(agree) else "")
    measured = f"{int(np.sign(scale)):+d}"
    if called:
        return text + f" ({source or 'measured'}; measured {measured}, confident: {evidence})"
    return text + f" ({source or 'imported'}; measured {measured}, not confident: {evidence})"


def _float(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def _session_section(data: SessionData) -> str:
    from tiltflow.qc.handedness import session_hand

    parts = ["<h2>Session summary</h2>"]
    parts.append("<p>Steps found: " + _e(", ".join(data.steps_found) or "none") + "</p>")
    if data.steps_missing:
        parts.append(f"<div class='note'>Not run (yet): {_e(', '.join(data.steps_missing))}. "
                     "The sections below show what the finished steps produced.</div>")
    for n in data.notes:
        parts.append(f"<div class='warn'>{_e(n)}</div>")
    hands = {}
    for sd in data.series:
        m = sd.globals.get(star.TF_HAND_MEASURED)
        if m is not None:
            hands[sd.name] = int(float(m))
    sh = session_hand(hands)
    if hands and sh.warning():
        parts.append(f"<div class='warn' id='hand-warning'>{_e(sh.warning())}</div>")
    elif hands and sh.consensus:
        parts.append(f"<p class='ok'>Defocus handedness agrees across the measured series: {sh.consensus:+d}.</p>")
    rows = [series_summary(data, sd) for sd in data.series]
    if rows:
        cols = list(rows[0])
        parts.append("<table id='summary'><tr>" + "".join(f"<th>{_e(c)}</th>" for c in cols) + "</tr>")
        for r in rows:
            parts.append("<tr>" + "".join(f"<td>{_e(r.get(c, '-'))}</td>" for c in cols) + "</tr>")
        parts.append("</table>")
    if data.relion:
        parts.append(f"<p>RELION 5 input: <code>{_e(data.relion.relative_to(data.root))}</code></p>")  # as RELION opens it
    return "\n".join(parts)


# --- one series ------------------------------------------------------------------------------------
def _series_section(data: SessionData, sd: SeriesData, fig_dir: Path) -> str:
    parts = [f"<h2 id='series-{_e(sd.name)}'>{_e(sd.name)}</h2>"]
    for p in sd.problems:
        parts.append(f"<div class='warn'>{_e(p)}</div>")
    missing = [s for s in STEPS if s not in sd.stars]
    if missing:
        parts.append(f"<div class='note'>No results for: {_e(', '.join(missing))}</div>")
    if sd.timings:
        parts.append("<p class='meta'>Time per step: " + _e(", ".join(f"{k} {v:.1f} s" for k, v in sd.timings.items()))
                     + "</p>")
    t = sd.tilts()
    if t.empty:
        return "\n".join(parts)
    figs = [
        _img(plots.ctf_vs_tilt(t, fig_dir / "ctf_vs_tilt.png"), "Defocus and CTF fit resolution", "ctf vs tilt"),
        _img(plots.motion_per_tilt(t, fig_dir / "motion.png"), "Motion per tilt", "motion"),
        _img(plots.dose_plot(t, fig_dir / "dose.png"), "Dose", "dose"),
        _img(plots.alignment_plot(t, fig_dir / "alignment.png"), "Alignment", "alignment"),
        _img(plots.hand_plot(sd.hand, fig_dir / "handedness.png") if sd.hand else None,
             (sd.hand or {}).get("note") or "defocus slope per tilt", "handedness"),
    ]
    figs = [f for f in figs if f]
    if figs:
        parts.append("<div class='figs'>" + "".join(figs) + "</div>")
    else:
        parts.append("<div class='note'>No per-tilt measurements yet (motioncor/ctf not run).</div>")
    parts.append(_exclusion_table(t))
    parts.append(_img(plots.thumbnails(_thumb_images(data, t), fig_dir / "tilts.png"),
                      "Tilt images sorted by angle", "thumbnails"))
    parts.append(_ctf_figures(data, sd, t, fig_dir))
    parts.append(_tomogram(data, sd, fig_dir))
    return "\n".join(p for p in parts if p)


def _exclusion_table(t: pd.DataFrame) -> str:
    cols = [(star.TF_ACQ_INDEX, "#", "d"), (star.NOMINAL_TILT, "tilt", ".1f"),
            (star.PRE_EXPOSURE, "pre-exp.", ".1f"), (star.MOTION_TOTAL, "motion (A)", ".1f"),
            (star.DEFOCUS_U, "defocus U (A)", ".0f"), (star.CTF_MAX_RES, "CTF res. (A)", ".1f"),
            (star.CTF_FOM, "CTF score", ".3f")]
    cols = [c for c in cols if c[0] in t]
    head = "".join(f"<th>{_e(h)}</th>" for _, h, _ in cols) + "<th>decision</th>"
    rows = []
    for _, r in t.iterrows():
        ex = bool(r[star.TF_EXCLUDED])
        cells = "".join(f"<td>{_e(_fmt(r[c], f))}</td>" for c, _, f in cols)
        reason = str(r.get(star.TF_EXCLUDE_REASON, "") or "")
        decision = ("<span class='bad'>excluded</span> " if ex else "kept ") + _e(reason)
        rows.append(f"<tr class='{'excluded' if ex else 'kept'}'>{cells}<td>{decision}</td></tr>")
    n_ex = int(t[star.TF_EXCLUDED].sum())
    return (f"<h3>Tilts ({n_ex} excluded of {len(t)}, acquisition order)</h3>"
            f"<table class='tilts'><tr>{head}</tr>{''.join(rows)}</table>")


def _read_image(path: Path | None) -> np.ndarray | None:
    if path is None:
        return None
    from tiltflow.io.mrc import MrcReader

    try:
        with MrcReader(path) as r:
            return r.section(0).astype(np.float32)
    except Exception:
        return None


def _thumb_images(data: SessionData, t: pd.DataFrame):
    if star.MICROGRAPH not in t or star.NOMINAL_TILT not in t:
        return []
    out = []
    for _, r in t.iterrows():
        img = _read_image(data.resolve(r[star.MICROGRAPH]))
        out.append((float(r[star.NOMINAL_TILT]), int(r[star.TF_ACQ_INDEX]), img, bool(r[star.TF_EXCLUDED]),
                    str(r.get(star.TF_EXCLUDE_REASON, "") or "")))
    return out if any(x[2] is not None for x in out) else []


def chosen_tilts(t: pd.DataFrame) -> list[int]:
    """Rows shown with spectrum and fit: the lowest tilt, the highest on each side, and the worst kept fit."""
    ang = _num(t, star.NOMINAL_TILT)
    if not ang.size:
        return []
    rows = {int(np.nanargmin(np.abs(ang))), int(np.nanargmax(ang)), int(np.nanargmin(ang))}
    res = _num(t, star.CTF_MAX_RES)
    if res.size:
        kept = ~t[star.TF_EXCLUDED].to_numpy(bool)
        r = np.where(kept & np.isfinite(res), res, -np.inf)
        if np.isfinite(r).any() and r.max() > -np.inf:
            rows.add(int(np.argmax(r)))
    return sorted(rows, key=lambda i: ang[i])


def _ctf_figures(data: SessionData, sd: SeriesData, t: pd.DataFrame, fig_dir: Path) -> str:
    if star.DEFOCUS_U not in t:
        return ""
    g = sd.globals
    o = star.optics_of(g)
    optics = (o.voltage, o.cs, o.amplitude_contrast)
    try:
        px = float(g.get(star.TS_PIXEL_SIZE) or g.get(star.ORIGINAL_PIXEL_SIZE))
    except (TypeError, ValueError):
        return ""
    figs = []
    for i in chosen_tilts(t):
        r = t.iloc[i]
        title = f"tilt {float(r[star.NOMINAL_TILT]):+.1f} (#{int(r[star.TF_ACQ_INDEX])})"
        diag = data.resolve(r.get(star.CTF_IMAGE)) if star.CTF_IMAGE in t else None
        if diag is not None:
            png = diag.with_name(diag.stem.removesuffix("_PS") + "_ctf.png")
            if not png.is_file():
                png = diag.with_suffix(".png")
            if png.is_file():
                figs.append(_img(png, f"{title}: CTF fit (ctf step's diagnostic)", "ctf diagnostic"))
                continue
        spec, spx = None, px
        if diag is not None and diag.suffix in (".mrc", ".ctf"):
            spec = _read_image(diag)
            spx = _spectrum_pixel(r, px)
        if spec is None and star.POWER_SPECTRUM in t:
            spec = _read_image(data.resolve(r.get(star.POWER_SPECTRUM)))
        if spec is None and star.MICROGRAPH in t:
            img = _read_image(data.resolve(r[star.MICROGRAPH]))
            if img is not None:
                spec, spx = plots.welch_spectrum(img), px
        if spec is None:
            continue
        defu, defv = float(r[star.DEFOCUS_U]), float(r.get(star.DEFOCUS_V, r[star.DEFOCUS_U]))
        ang = float(r.get(star.DEFOCUS_ANGLE, 0.0) or 0.0) if star.DEFOCUS_ANGLE in t else 0.0
        label = f"{title}: {star.angstrom_to_um(0.5 * (defu + defv)):.2f} um, res {_fmt(r.get(star.CTF_MAX_RES))} A"
        p = plots.spectrum_vs_ctf(spec, spx, defu, defv, ang, optics, label,
                                  fig_dir / f"ctf_{int(r[star.TF_ACQ_INDEX]):03d}.png")
        figs.append(_img(p, f"{title}: spectrum (left) and fitted CTF^2 (right)", "spectrum and ctf"))
    if not figs:
        return ""
    return "<h3>Power spectrum and fitted CTF</h3><div class='figs'>" + "".join(figs) + "</div>"


def _spectrum_pixel(r: pd.Series, px: float) -> float:
    """Pixel of a saved diagnostic spectrum: tfCtfPixelSize when the ctf step records it, else the image's."""
    v = r.get(star.TF_CTF_PIXEL_SIZE)
    try:
        return float(v) if v is not None and float(v) > 0 else px
    except (TypeError, ValueError):
        return px


def _tomogram(data: SessionData, sd: SeriesData, fig_dir: Path) -> str:
    tomo = sd.globals.get(star.TOMOGRAM)
    if not tomo:
        return "<div class='note'>No tomogram yet (reconstruct not run).</div>"
    path = data.resolve(tomo)
    if path is None:
        return f"<div class='warn'>Tomogram {_e(tomo)} is listed but not found.</div>"
    g = sd.globals
    unc = [_read_image(data.resolve(g.get(k))) for k in (star.TF_UNCORRECTED_XY, star.TF_UNCORRECTED_XZ)]
    uncorrected = (unc[0], unc[1]) if unc[0] is not None and unc[1] is not None else None
    try:
        p = plots.tomogram_slices(path, fig_dir / "tomogram.png", f"{sd.name}: {Path(str(tomo)).name}", uncorrected)
        ps = plots.tomogram_spectrum(path, fig_dir / "tomogram_spectrum.png", f"{sd.name}: power spectrum",
                                     None if uncorrected is None else uncorrected[0])
    except Exception as exc:
        return f"<div class='warn'>Tomogram {_e(tomo)} could not be read: {_e(exc)}</div>"
    return ("<h3>Tomogram</h3>" + _correction_note(sd) + "<div class='figs'>" + _img(p, f"{tomo}", "tomogram slices")
            + _img(ps, "radially averaged power spectrum", "tomogram power spectrum") + "</div>")


def _correction_note(sd: SeriesData) -> str:
    """What reconstruct corrected (tfCtfCorrection, tfDoseWeighting, per-tilt tfDoseHalfWeightAngst)."""
    g = sd.globals
    mode = g.get(star.TF_CTF_CORRECTION)
    if mode is None:
        return ""
    text = f"CTF correction: {_e(mode)}; exposure weighting: {'on' if int(g.get(star.TF_DOSE_WEIGHTING, 0)) else 'off'}"
    rec = sd.stars.get("reconstruct")
    t = rec.tilts if rec is not None else pd.DataFrame()
    if star.TF_DOSE_HALF_WEIGHT in t and star.PRE_EXPOSURE in t and len(t):
        half, pre = _num(t, star.TF_DOSE_HALF_WEIGHT), _num(t, star.PRE_EXPOSURE)
        i = int(np.nanargmax(pre))
        at = f"weight 0.5 at {half[i]:.1f} A" if half[i] > 0 else "weight above 0.5 at every resolution"
        text += f" (last tilt, {pre[i]:.0f} e/A^2: {at})"
    return f"<div class='note'>{text}.</div>"
