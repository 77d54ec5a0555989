"""The live page ``OUT/live/index.html``: each series' progress, per-tilt motion, defocus and fit resolution
as they come, thumbnails, finished tomograms and the warnings that need a person.

Why a second page beside ``report/report.html``: the report step describes finished series and is
rewritten when one finishes; the live page is cheap enough to rewrite every few seconds and reloads
itself in the browser (or is served on 127.0.0.1 with ``--serve PORT``). It uses the report's template,
style sheet and plots (:mod:`tiltflow.qc.report`), and links images as files beside it instead of
embedding them, so that a reload every few seconds stays light.
"""

from __future__ import annotations

import datetime
import html
import math
from dataclasses import dataclass, field
from pathlib import Path
from string import Template

import pandas as pd

from tiltflow import __version__, star
from tiltflow.atomic import write_text
from tiltflow.errors import TiltflowError
from tiltflow.live import state as st
from tiltflow.live.tasks import LIVE, tilt_star

PAGE = "index.html"
REFRESH_S = 5
#: warning thresholds (per tilt, from the CTF preview and the motion correction)
LOW_TILT = 20.0  # deg: tilts where thick ice shows as a poor CTF fit
ICE_RES = 15.0  # A: CTF fit resolution worse than this at a low tilt
MOTION_A = 30.0  # A: total beam-induced motion
DOSE_SPREAD = 0.2  # relative: a tilt's dose off the series' median by more than this
RESIDUAL_PX = 3.0  # px: mean alignment residual above which tracking is suspect
_REPORT = Path(__file__).resolve().parents[1] / "qc" / "report"


@dataclass
class _Figures:
    """Per series: what the figures were last drawn from (done tilts), so unchanged series are not redrawn."""

    done: frozenset = frozenset()
    table: pd.DataFrame = field(default_factory=pd.DataFrame)


_CACHE: dict[tuple[str, str], _Figures] = {}


def _e(x) -> str:
    return html.escape(str(x), quote=True)


def tilt_table(root: Path, track: st.SeriesTrack) -> pd.DataFrame:
    """The done tilts' CTF-preview rows (motion and CTF columns), in acquisition order."""
    rows = []
    for t in track.tilts.values():
        if t.state != st.DONE:
            continue
        try:
            rows.append(star.read_tilt_series(root / tilt_star(track.name, t.root, "ctf")).tilts)
        except TiltflowError:
            continue
    if not rows:
        return pd.DataFrame()
    table = pd.concat(rows, ignore_index=True)
    if star.TF_ACQ_INDEX in table:
        table = table.sort_values(star.TF_ACQ_INDEX, kind="stable").reset_index(drop=True)
    table[star.TF_EXCLUDED] = 0
    return table


def warnings_for(track: st.SeriesTrack, table: pd.DataFrame, residual_px: float | None) -> list[str]:
    """What a person should look at now: ice, motion, dose, tracking, failures, the mdoc's own warnings."""
    out = [f"from the mdoc: {w}" for w in track.warnings]
    if track.problem:
        out.append(f"cannot import yet: {track.problem}")
    out += [f"tilt {t.root} failed: {t.error}" for t in track.tilts.values() if t.state == st.TILT_FAILED]
    if track.error:
        out.append(f"series {track.error}")
    if not table.empty:
        angle = pd.to_numeric(table.get(star.NOMINAL_TILT), errors="coerce")
        res = pd.to_numeric(table.get(star.CTF_MAX_RES), errors="coerce")
        low = (angle.abs() <= LOW_TILT) & (res > ICE_RES)
        if low.any():
            out.append(f"ice too thick? CTF fit only to {res[low].min():.0f}-{res[low].max():.0f} A on "
                       f"{int(low.sum())} tilt(s) within {LOW_TILT:g} deg")
        motion = pd.to_numeric(table.get(star.MOTION_TOTAL), errors="coerce")
        big = motion > MOTION_A
        if big.any():
            out.append(f"large beam-induced motion: {motion[big].max():.0f} A on {int(big.sum())} tilt(s)")
        dose = pd.to_numeric(table.get(star.TF_DOSE), errors="coerce")
        if dose.notna().sum() >= 3:
            med = float(dose.median())
            off = (dose - med).abs() > DOSE_SPREAD * med
            if off.any():
                out.append(f"dose off: {int(off.sum())} tilt(s) differ from the median {med:.2f} e/A^2 by more "
                           f"than {DOSE_SPREAD:.0%}")
    if residual_px is not None and residual_px > RESIDUAL_PX:
        out.append(f"tracking lost? mean alignment residual {residual_px:.1f} px")
    if track.state == st.INCOMPLETE:
        out.append(f"incomplete: {track.sections} section(s) in the mdoc, not processed as a series")
    return out


def _fmt(v, spec: str) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return "-"
    return format(f, spec) if math.isfinite(f) else "-"


def _series_block(root: Path, page_dir: Path, track: st.SeriesTrack) -> tuple[str, str]:
    """(summary row, section) of one series."""
    from tiltflow.qc.report import plots
    from tiltflow.runner.summary import series_summary

    figs = _CACHE.setdefault((str(root), track.name), _Figures())
    done = frozenset(t.root for t in track.tilts.values() if t.state == st.DONE)
    fig_dir = page_dir / track.name
    if done != figs.done:
        figs.done, figs.table = done, tilt_table(root, track)
        if not figs.table.empty:
            plots.motion_per_tilt(figs.table, fig_dir / "motion.png")
            plots.ctf_vs_tilt(figs.table, fig_dir / "ctf_vs_tilt.png")
            plots.thumbnails(_thumbnails(root, figs.table), fig_dir / "tilts.png")
    t = figs.table
    summary = series_summary(root, track.name) if track.state == st.FINISHED else None
    residual = summary.residual_px if summary else None
    waiting = [x for x in track.tilts.values() if x.state == st.WAITING and x.why]
    state = track.state + (f" ({waiting[0].why})" if waiting and track.state == st.COLLECTING else "")
    tomo = summary.tomogram if summary and summary.tomogram else "-"
    row = (f"<tr class='{_e(track.state)}'><td><a href='#series-{_e(track.name)}'>{_e(track.name)}</a></td>"
           f"<td class='state'>{_e(state)}</td><td>{track.sections}</td><td>{track.tilts_done} / {len(track.tilts)}</td>"
           f"<td>{_e(tomo)}</td></tr>")
    parts = [f"<h2 id='series-{_e(track.name)}'>{_e(track.name)}: {_e(track.state)}</h2>"]
    for w in warnings_for(track, t, residual):
        parts.append(f"<div class='warn'>{_e(w)}</div>")
    images = [(fig_dir / "motion.png", "Motion per tilt"), (fig_dir / "ctf_vs_tilt.png", "Defocus and CTF fit resolution"),
              (fig_dir / "tilts.png", "Motion-corrected tilts by angle")]
    latest = _latest_ctf_png(root, track, t)
    if latest is not None:
        images.append((latest, "CTF fit of the latest tilt"))
    tomo_png = root / "report" / track.name / "tomogram.png"
    if track.state == st.FINISHED and tomo_png.is_file():
        images.append((tomo_png, f"Tomogram {tomo}"))
    shown = [f"<figure><img src='{_e(_rel(p, page_dir))}' alt='{_e(c)}'><figcaption>{_e(c)}</figcaption></figure>"
             for p, c in images if p.is_file()]
    if shown:
        parts.append("<div class='figs'>" + "".join(shown) + "</div>")
    if not t.empty:
        parts.append(_tilt_rows(t))
    return row, "\n".join(parts)


def _thumbnails(root: Path, t: pd.DataFrame) -> list:
    """(angle, acquisition index, image, excluded, reason) of every processed tilt, for plots.thumbnails."""
    from tiltflow.qc.report.render import _read_image

    if star.MICROGRAPH not in t or star.NOMINAL_TILT not in t:
        return []
    return [(float(r[star.NOMINAL_TILT]), int(r.get(star.TF_ACQ_INDEX, i)),
             _read_image(star.resolve(r[star.MICROGRAPH], root)), False, "") for i, r in t.iterrows()]


def _latest_ctf_png(root: Path, track: st.SeriesTrack, t: pd.DataFrame) -> Path | None:
    if t.empty or star.MICROGRAPH not in t:
        return None
    stem = Path(str(t.iloc[-1][star.MICROGRAPH])).stem
    p = root / LIVE / track.name / "ctf" / "frames" / f"{stem}_ctf.png"
    return p if p.is_file() else None


def _tilt_rows(t: pd.DataFrame) -> str:
    cols = [(star.TF_ACQ_INDEX, "#", "d"), (star.NOMINAL_TILT, "tilt", "+.1f"), (star.MOTION_TOTAL, "motion (A)", ".1f"),
            (star.DEFOCUS_U, "defocus U (um)", ".2f"), (star.CTF_MAX_RES, "CTF res. (A)", ".1f")]
    cols = [c for c in cols if c[0] in t]
    head = "".join(f"<th>{_e(h)}</th>" for _, h, _ in cols)
    body = []
    for _, r in t.iterrows():
        cells = []
        for c, _, f in cols:
            v = star.angstrom_to_um(r[c]) if c == star.DEFOCUS_U else r[c]
            cells.append(f"<td>{_e(_fmt(v, 'g' if f == 'd' else f) if f != 'd' else str(int(v)))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<h3>Tilts processed ({len(t)}, acquisition order)</h3><table class='tilts'><tr>{head}</tr>{''.join(body)}</table>"


def _rel(path: Path, base: Path) -> str:
    import os

    return os.path.relpath(path, base).replace(os.sep, "/")


def write_live_page(root: Path, session: Path, series: dict[str, st.SeriesTrack], settings, final: bool = False,
                    stopped_by: str | None = None) -> Path:
    """Write ``OUT/live/index.html`` (atomically) and its figures."""
    page_dir = root / LIVE
    rows, sections = [], []
    for name in sorted(series):
        row, section = _series_block(root, page_dir, series[name])
        rows.append(row)
        sections.append(section)
    now = datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
    status = f"stopped ({stopped_by})" if final else f"watching; this page reloads every {REFRESH_S} s"
    head = [f"<p id='status' data-final='{int(final)}'>{_e(status)} - updated {_e(now)}</p>"]
    report = root / "report" / "report.html"
    if report.is_file():
        head.append(f"<p>Full report of the finished series: <a href='{_e(_rel(report, page_dir))}'>report.html</a></p>")
    relion = root / "relion" / "tomograms.star"
    if relion.is_file():
        head.append(f"<p>RELION 5 input: <code>{_e(relion)}</code></p>")
    if rows:
        head.append("<table id='progress'><tr><th>series</th><th>state</th><th>sections</th><th>tilts processed</th>"
                    "<th>tomogram</th></tr>" + "".join(rows) + "</table>")
    else:
        head.append("<div class='note'>No tilt-series mdoc in the session folder yet.</div>")
    script = "" if final else (f"<script>setTimeout(function () {{ location.reload(); }}, {REFRESH_S * 1000});</script>")
    page = Template((_REPORT / "template.html").read_text()).substitute(
        title=_e(f"tiltflow live: {session.name}"),
        meta=_e(f"session {session} - results {root} - tiltflow {__version__}"),
        css=(_REPORT / "report.css").read_text(),
        body="\n".join(head + sections) + script,
    )
    return write_text(page_dir / PAGE, page)


def serve(root: Path, port: int):
    """Serve ``root`` on 127.0.0.1:``port`` in a background thread (the page is ``/live/index.html``)."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:  # requests are not news on the terminal
            pass

    try:
        server = ThreadingHTTPServer(("127.0.0.1", port), functools.partial(Quiet, directory=str(root)))
    except OSError as exc:
        raise TiltflowError(f"--serve {port}: cannot listen on 127.0.0.1:{port} ({exc.strerror or exc})") from None
    threading.Thread(target=server.serve_forever, name="tiltflow-live-page", daemon=True).start()
    return server


__all__ = ["serve", "write_live_page"]
