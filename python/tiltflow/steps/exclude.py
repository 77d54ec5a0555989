"""``tiltflow exclude``: decide which tilts to leave out (with reasons), and measure the defocus handedness.

Reads the ctf step's STAR (rows in acquisition order) and the motion-corrected micrographs it names;
writes ``<outdir>/<name>/``:

- ``<name>.star``: every row kept, with ``tfExcluded`` (0/1) and ``tfExcludeReason``, plus the image
  statistics behind the dark rule (``tfDarkRatio``, ``tfContrast``) and the measured defocus slope per tilt
  (``tfDefocusSlope``). ``stack`` drops the excluded rows, so the aligned series and RELION's files have
  them removed as RELION's ExcludeTiltImages does; ``rlnTomoHand`` in the global row is set from the
  measured handedness only when the measurement is confident (:mod:`tiltflow.qc.handedness` says what that
  means in numbers), otherwise the imported (user's) value stays and a warning says so; RELION itself never
  changes rlnTomoHand. Globals: ``tfHandScale``, ``tfHandZ``, ``tfHandAgreement``, ``tfHandMeasured`` (the
  confident call, 0 if none) and ``tfHandSource`` (where rlnTomoHand comes from: ``measured``,
  ``imported`` or ``--hand``);
- ``exclusions.tsv``: one line per tilt: acquisition index, tilt angle, decision, who decided, reason;
- ``<name>_hand.json``: the strip defoci behind the handedness call (for the report).

Why handedness runs here: this step already reads every micrograph and knows the CTF of each tilt and
which tilts are usable, and it runs once per series both in ``tiltflow run`` and in Nextflow.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from tiltflow import star
from tiltflow.atomic import write_json, write_text
from tiltflow.columns import (
    TF_ACQ_INDEX,
    TF_CONTRAST,
    TF_DARK_RATIO,
    TF_DEFOCUS_SLOPE,
    TF_EXCLUDE_REASON,
    TF_EXCLUDED,
    TF_HAND_AGREEMENT,
    TF_HAND_MEASURED,
    TF_HAND_SCALE,
    TF_HAND_SOURCE,
    TF_HAND_Z,
)
from tiltflow.errors import TiltflowError
from tiltflow.parallel import map_ordered, workers_for
from tiltflow.qc.exclusion import Decision, Thresholds, TiltMeasures, check_indices, decide, parse_tilt_list
from tiltflow.qc.handedness import HandOptions, HandResult
from tiltflow.steps.common import option

log = logging.getLogger("tiltflow.exclude")


HAND_MODES = ("auto", "keep", "1", "-1")


_INDEX_HELP = ("Tilt indices are the 0-based ACQUISITION index (tfAcquisitionIndex: the order SerialEM took "
               "the images, as `tiltflow inspect` lists them; for a stack mdoc the ZValue). Syntax "
               "'TS_01:3,4;TS_02:7-9'; entries for other series are ignored by this step.")


def _off(v: float) -> float | None:
    """The CLI's 0 (or less) switches a limit off: :class:`Thresholds` says it with None."""
    return v if v > 0 else None


@dataclass(frozen=True)
class Options:
    """The exclude step's options (``tiltflow exclude``): rules, user overrides (strings as given on the command
    line) and the handedness mode.

    ``hand``: ``auto`` measures and sets rlnTomoHand (keeps the imported value when the measurement is
    inconclusive), ``keep`` leaves it, ``1``/``-1`` force it.
    """

    exclude_tilts: str | None = option(None, "Tilts to exclude. " + _INDEX_HELP)
    keep_tilts: str | None = option(None, "Tilts to keep even if a rule excludes them. Same syntax.")
    max_motion: float = option(60.0, "Exclude tilts whose total motion exceeds this (A, rlnAccumMotionTotal); "
                                     "0 switches the rule off.", "A")
    max_early_motion: float = option(30.0, "Limit on rlnAccumMotionEarly (A); 0 = off.", "A")
    min_ctf_resolution: float = option(20.0, "Worst acceptable CTF fit resolution (A, rlnCtfMaxResolution); "
                                             "0 = off.", "A")
    min_ctf_score: float = option(0.0, "Exclude CTF fits scoring below this (rlnCtfFigureOfMerit); negative = off.")
    dark_tol: float = option(0.7, "AreTomo's DarkTol: dark when |mean|/std <= dark-tol x that of the lowest tilt "
                                  "(0 or 1 = off).")
    blank_tol: float = option(0.3, "Blank when specimen contrast < blank-tol x the series median (0 = off).")
    min_intensity: float = option(0.2, "WarpTools' rule: dark when the mean is below this x cos(tilt) x the lowest "
                                       "tilt's mean (0 = off).")
    hand: str = option("auto", "Defocus handedness (rlnTomoHand): auto (measure from the defocus gradient), keep "
                               "(as imported), 1 or -1.")
    hand_tilts: int = option(HandOptions.max_tilts, "Most kept tilts measured for the handedness (the highest first).",
                             min=2)  # the default is the handedness module's own (one source)
    device: str = option("auto", "auto, cpu, cuda or cuda:N.")

    @property
    def thresholds(self) -> Thresholds:
        """The exclusion thresholds, with those switched off (negative) as None."""
        return Thresholds(max_motion=_off(self.max_motion), max_early_motion=_off(self.max_early_motion),
                          min_ctf_resolution=_off(self.min_ctf_resolution),
                          min_ctf_score=self.min_ctf_score if self.min_ctf_score >= 0 else None,
                          dark_tol=self.dark_tol, blank_tol=self.blank_tol, min_intensity=self.min_intensity)

    @property
    def hand_options(self) -> HandOptions:
        """The options the handedness check takes."""
        return HandOptions(max_tilts=self.hand_tilts)

    def validate(self) -> None:
        """Reject an unknown hand mode and malformed tilt lists before any image is read."""
        if str(self.hand) not in HAND_MODES:
            raise TiltflowError(f"--hand must be one of {', '.join(HAND_MODES)}, got {self.hand!r}")
        if self.hand_tilts < 2:
            raise TiltflowError(f"--hand-tilts must be at least 2, got {self.hand_tilts}")
        parse_tilt_list(self.exclude_tilts, "--exclude-tilts")
        parse_tilt_list(self.keep_tilts, "--keep-tilts")


def acquisition_indices(ts: star.TiltSeriesStar) -> list[int]:
    """The 0-based acquisition index of every row (``tfAcquisitionIndex``, else the row order)."""
    if TF_ACQ_INDEX in ts.tilts:
        vals = pd.to_numeric(ts.tilts[TF_ACQ_INDEX], errors="coerce")
        if vals.notna().all():
            return [int(v) for v in vals]
    return list(range(len(ts.tilts)))


def _col(tilts: pd.DataFrame, name: str) -> list[float | None]:
    if name not in tilts:
        return [None] * len(tilts)
    return [None if pd.isna(v) else float(v) for v in pd.to_numeric(tilts[name], errors="coerce")]


def measure(ts: star.TiltSeriesStar, root: Path) -> list[TiltMeasures]:
    """Collect what earlier steps measured per tilt, plus the micrograph statistics (dark/blank)."""
    from tiltflow.qc.imagestats import micrograph_stats

    tilts = ts.tilts
    if star.NOMINAL_TILT not in tilts:
        raise TiltflowError(f"tilt series {ts.name} has no {star.NOMINAL_TILT} column",
                            ts.globals.get(star.TS_STAR_FILE))
    idx = acquisition_indices(ts)
    angles = _col(tilts, star.NOMINAL_TILT)
    from tiltflow.steps.motioncor import movie_problems

    problems = movie_problems(tilts)
    out = []
    for i in range(len(tilts)):
        ratio = contrast = mean = None
        if star.MICROGRAPH in tilts and not problems[i]:
            path = star.resolve(str(tilts[star.MICROGRAPH].iloc[i]), root)
            if not path.is_file():
                raise TiltflowError(f"tilt series {ts.name}: micrograph not found", path)
            st = micrograph_stats(path)
            ratio, contrast, mean = st.ratio, st.contrast, st.mean
        out.append(TiltMeasures(
            index=idx[i], tilt_angle=float(angles[i] or 0.0),
            motion_total=_col(tilts, star.MOTION_TOTAL)[i], motion_early=_col(tilts, star.MOTION_EARLY)[i],
            ctf_resolution=_ctf_res(tilts, i), ctf_score=_col(tilts, star.CTF_FOM)[i],
            dark_ratio=ratio, contrast=contrast, mean_intensity=mean, no_image=problems[i],
        ))
    if star.MICROGRAPH not in tilts:
        log.warning("tilt series %s has no %s column: dark and blank images cannot be detected",
                    ts.name, star.MICROGRAPH)
    return out


def _ctf_res(tilts: pd.DataFrame, i: int) -> float | None:
    """Fit resolution; a present-but-missing value (no rings) counts as infinitely bad, absent column as unknown."""
    if star.CTF_MAX_RES not in tilts:
        return None
    v = pd.to_numeric(tilts[star.CTF_MAX_RES], errors="coerce").iloc[i]
    return math.inf if pd.isna(v) else float(v)


def run_series(ts: star.TiltSeriesStar, out_dir: Path, opts: Options, root: str | Path) -> star.TiltSeriesStar:
    """Decide, measure the hand, and write the side files; return the annotated series."""
    root = Path(root)
    exclude = parse_tilt_list(opts.exclude_tilts, "--exclude-tilts")
    keep = parse_tilt_list(opts.keep_tilts, "--keep-tilts")
    idx = acquisition_indices(ts)
    for flag, lists in (("--exclude-tilts", exclude), ("--keep-tilts", keep)):
        if ts.name in lists:
            check_indices(ts.name, lists[ts.name], idx, flag)
        others = sorted(set(lists) - {ts.name})
        if others:
            log.info("%s: entries for %s are for other tilt series", flag, ", ".join(others))
    measures = measure(ts, root)
    decisions = decide(measures, ctf_limit_for(ts, opts.thresholds), exclude.get(ts.name, ()), keep.get(ts.name, ()))
    new = ts.copy()
    new.tilts[TF_EXCLUDED] = [int(d.excluded) for d in decisions]
    new.tilts[TF_EXCLUDE_REASON] = [d.reason for d in decisions]
    new.tilts[TF_DARK_RATIO] = [np.nan if m.dark_ratio is None else m.dark_ratio for m in measures]
    new.tilts[TF_CONTRAST] = [np.nan if m.contrast is None else m.contrast for m in measures]
    _log_decisions(ts.name, decisions)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text(out_dir / "exclusions.tsv", exclusions_tsv(decisions))

    hand = _handedness(new, out_dir, opts, decisions, root)
    if hand is not None:
        slopes = {t.index: t.slope for t in hand.tilts}
        new.tilts[TF_DEFOCUS_SLOPE] = [slopes.get(i, np.nan) for i in idx]
    return new


#: the default CTF-resolution rule in units of the series' pixel: Thon rings can only be followed to Nyquist
#: (2 px), so the default limit finer than 5 px would exclude every tilt of coarsely sampled data (the
#: simulated 8 A sessions); a limit the user gives is used as given
CTF_LIMIT_PIXELS = 5.0


def ctf_limit_for(ts: star.TiltSeriesStar, t: Thresholds) -> Thresholds:
    """``t`` with the default CTF-resolution limit no finer than ``CTF_LIMIT_PIXELS`` pixels of this series."""
    if t.min_ctf_resolution is None or t.min_ctf_resolution != Thresholds().min_ctf_resolution:
        return t
    floor = CTF_LIMIT_PIXELS * ts.pixel_size
    if floor <= t.min_ctf_resolution:
        return t
    log.info("tilt series %s: CTF-resolution limit %.0f A (%.0f x the %.2f A pixel) instead of %.0f A, which no fit "
             "can reach at this sampling", ts.name, floor, CTF_LIMIT_PIXELS, ts.pixel_size, t.min_ctf_resolution)
    return replace(t, min_ctf_resolution=floor)


def exclusions_tsv(decisions: list[Decision]) -> str:
    """The decisions as a tab-separated table (one header line, one line per tilt)."""
    lines = ["acquisition_index\ttilt_angle\texcluded\tdecided_by\treason"]
    for d in decisions:
        reason = d.reason.replace("\t", " ").replace("\n", " ")
        lines.append(f"{d.index}\t{d.tilt_angle:.2f}\t{int(d.excluded)}\t{d.source}\t{reason}")
    return "\n".join(lines) + "\n"


def _log_decisions(name: str, decisions: list[Decision]) -> None:
    n_ex = sum(d.excluded for d in decisions)
    log.info("tilt series %s: %d of %d tilts excluded, %d kept", name, n_ex, len(decisions), len(decisions) - n_ex)
    for d in decisions:
        if d.excluded or d.source != "auto":
            log.info("  tilt %d (%.1f deg): %s", d.index, d.tilt_angle, d.reason)
    kept = len(decisions) - n_ex
    if kept < 5:
        log.warning("tilt series %s keeps only %d tilts; stacking needs at least 5 (see --keep-tilts)", name, kept)


def _handedness(ts: star.TiltSeriesStar, out_dir: Path, opts: Options, decisions: list[Decision],
                root: Path) -> HandResult | None:
    mode = str(opts.hand)
    if mode in ("1", "-1"):
        ts.globals[star.HAND] = int(mode)
        ts.globals[TF_HAND_MEASURED] = 0
        ts.globals[TF_HAND_SOURCE] = "--hand"
        log.info("tilt series %s: rlnTomoHand set to %s by --hand", ts.name, mode)
        return None
    ts.globals[TF_HAND_SOURCE] = "imported"
    if mode == "keep":
        return None
    result = measure_hand(ts, [not d.excluded for d in decisions], opts, root)
    if result is None:
        return None
    old = ts.globals.get(star.HAND)
    ts.globals[TF_HAND_MEASURED] = result.hand
    if result.tilts:
        ts.globals[TF_HAND_SCALE] = round(result.scale, 4)
        ts.globals[TF_HAND_Z] = round(min(result.z, 1e6), 3)
        ts.globals[TF_HAND_AGREEMENT] = round(result.agreement, 4)
    if result.determined:
        ts.globals[star.HAND] = result.hand
        ts.globals[TF_HAND_SOURCE] = "measured"
        if old is not None and int(float(old)) != result.hand:
            log.warning("tilt series %s: measured defocus handedness %+d replaces the imported rlnTomoHand %s",
                        ts.name, result.hand, old)
        log.info("tilt series %s: %s", ts.name, result.describe())
    else:
        log.warning("tilt series %s: %s; rlnTomoHand stays %s (imported; set it with --hand 1 or -1 if known)",
                    ts.name, result.describe(), "unset" if old is None else old)
    o = opts.hand_options
    write_json(out_dir / f"{ts.name}_hand.json", {
        "hand": result.hand, "measured": result.measured, "confident": result.determined, "scale": result.scale,
        "z": result.z, "agreement": result.agreement, "note": result.note,
        "limits": {"min_z": o.min_z, "min_agreement": o.min_agreement, "min_tilts": o.min_tilts},
        "imported": old, star.HAND: ts.globals.get(star.HAND), "source": ts.globals[TF_HAND_SOURCE],
        "tilts": [{"acquisition_index": t.index, "tilt_angle": t.tilt_angle, "slope": t.slope,
                   "positions_A": t.positions, "defoci_A": t.defoci, "scores": t.scores} for t in result.tilts],
    })
    return result


def measure_hand(ts: star.TiltSeriesStar, usable: list[bool], opts: Options, root: Path) -> HandResult | None:
    """Measure the defocus gradient on the chosen tilts of ``ts``; None when there is nothing to measure."""
    from tiltflow.device import get_device
    from tiltflow.io.mrc import MrcReader
    from tiltflow.qc.handedness import choose_tilts, combine, tilt_gradient

    tilts = ts.tilts
    if star.MICROGRAPH not in tilts:
        log.warning("tilt series %s: no micrographs, handedness not measured", ts.name)
        return None
    angles = [float(a) for a in pd.to_numeric(tilts[star.NOMINAL_TILT], errors="coerce").fillna(0.0)]
    rows = choose_tilts(angles, usable, opts.hand_options)
    axis = _first(tilts, star.NOMINAL_AXIS)
    if axis is None:
        axis = float(ts.globals.get(star.Z_ROT, 0.0) or 0.0)
        log.warning("tilt series %s: no %s; handedness measured with a tilt axis of %.1f deg",
                    ts.name, star.NOMINAL_AXIS, axis)
    optics = ts.optics
    idx = acquisition_indices(ts)
    device = get_device(opts.device)

    def one(r: int):
        defocus = _defocus(tilts, r)
        if defocus is None:
            return None
        with MrcReader(star.resolve(str(tilts[star.MICROGRAPH].iloc[r]), root)) as mrc:
            img = mrc.section(0).astype(np.float32)
        gr = tilt_gradient(img, ts.pixel_size, angles[r], axis, defocus, optics, opts.hand_options, idx[r], device)
        if gr is not None:
            log.debug("tilt %d (%.1f deg): defocus slope %.3f across the axis", idx[r], angles[r], gr.slope)
        return gr

    # tilts side by side, each on one torch thread (tiltflow.parallel): the measured slope does not depend on
    # the thread count (with the process' threads it did, in the 4th decimal: Nextflow's task.cpus 1 and
    # `tiltflow run`'s 2 threads wrote different tfHandScale)
    grads = [g for g in map_ordered(one, rows, workers_for(len(rows), device)) if g is not None]
    return combine(grads, opts.hand_options)


def _first(tilts: pd.DataFrame, col: str) -> float | None:
    if col not in tilts:
        return None
    v = pd.to_numeric(tilts[col], errors="coerce").dropna()
    return float(v.iloc[0]) if len(v) else None


def _defocus(tilts: pd.DataFrame, r: int) -> float | None:
    """Mean defocus (A) from the ctf step, else SerialEM's target defocus (um, negative = underfocus)."""
    if star.DEFOCUS_U in tilts and star.DEFOCUS_V in tilts:
        u = pd.to_numeric(tilts[star.DEFOCUS_U], errors="coerce").iloc[r]
        v = pd.to_numeric(tilts[star.DEFOCUS_V], errors="coerce").iloc[r]
        if pd.notna(u) and pd.notna(v) and u > 0:
            return 0.5 * float(u + v)
    if star.NOMINAL_DEFOCUS in tilts:
        return star.nominal_defocus_angstrom(tilts[star.NOMINAL_DEFOCUS].iloc[r])
    return None
