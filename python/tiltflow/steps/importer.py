"""The import step: a SerialEM/Tomo5 session -> the initial tomogram set (what RELION's ImportTomo writes).

Output, for every tilt series ``<name>``::

    OUT/<name>/<name>.star     data_global (the series' row) + data_<name> (tilts in ACQUISITION order)
    OUT/<name>/movies.txt      the movie files the series needs (absolute paths, one a line)
    OUT/<name>/console.log     what was found, and error.log with the warnings
    OUT/tomograms.star         the global table of all series (rlnTomoTiltSeriesStarFile -> the files above)

Everything is checked before anything is written, so bad input leaves no output. ``rlnTomoHand``
defaults to -1: RELION's ImportTomo GUI default ("invert defocus handedness: Yes", correct for
EMPIAR-10164 and most Krios/SerialEM setups); it must be confirmed per microscope (``tiltflow``'s
defocus-handedness check, or RELION's).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from tiltflow import star
from tiltflow.atomic import write_text
from tiltflow.columns import TF_ACQ_INDEX, TF_DATE_TIME, TF_DOSE, TF_EXPOSURE_TIME, TF_MDOC, TF_Z_VALUE
from tiltflow.errors import TiltflowError
from tiltflow.metadata.models import Session, TiltSeries
from tiltflow.metadata.session import load_session
from tiltflow.metadata.summary import skipped_lines
from tiltflow.steplog import step_logs
from tiltflow.steps.common import at_root, option, root_relative_logs, series_dir, series_star

log = logging.getLogger("tiltflow.import")

DEFAULT_CS = star.DEFAULT_OPTICS.cs
DEFAULT_AMP_CONTRAST = star.DEFAULT_OPTICS.amplitude_contrast
DEFAULT_HAND = -1
DEFAULT_OPTICS_GROUP = "optics1"

#: per series: the movie files it needs, one absolute path a line (what Nextflow stages for MOTIONCOR)
MOVIE_LIST = "movies.txt"


@dataclass
class ImportResult:
    """What the import step wrote."""

    tomograms: Path
    series_stars: list[Path] = field(default_factory=list)
    session: Session | None = None


def _check_options(kv: float | None, cs: float, amp_contrast: float, hand: int) -> None:
    if kv is not None and not 10 <= kv <= 1000:
        raise TiltflowError(f"--kv {kv}: expected an accelerating voltage in kV (e.g. 300)")
    if not 0 <= cs <= 100:
        raise TiltflowError(f"--cs {cs}: expected the spherical aberration in mm (e.g. 2.7)")
    if not 0 <= amp_contrast < 1:
        raise TiltflowError(f"--amp-contrast {amp_contrast}: expected a fraction in [0, 1) (e.g. 0.1)")
    if hand not in (-1, 1):
        raise TiltflowError(f"--hand {hand}: expected -1 or 1")


def _check_spelling(paths: str | Path | Iterable[str | Path], frames_dir: str | Path | None) -> None:
    """The mdoc and movie paths go into STAR files: one that no STAR quote can hold is refused before any work."""
    from tiltflow import startext

    given = [paths] if isinstance(paths, (str, Path)) else list(paths)
    for p in [*given, *([frames_dir] if frames_dir else [])]:
        full = str(Path(p).resolve())
        startext.check(full, p)


def check_importable(ts: TiltSeries) -> None:
    """Raise a one-line error when ``ts`` cannot become a RELION tilt series."""
    if not ts.tilts:
        raise TiltflowError("no tilts left after removing retakes", ts.mdoc)
    if not ts.has_dose:
        missing = [t.z_value for t in ts.tilts if not t.dose]
        which = "any tilt" if len(missing) == len(ts.tilts) else f"{len(missing)} of {len(ts.tilts)} tilts"
        raise TiltflowError(
            f"tilt series {ts.name}: no dose for {which} (ExposureDose 0 or absent, no FrameDosesAndNumber or "
            "DoseRate); give --dose-per-tilt E_PER_A2",
            ts.mdoc,
        )
    if ts.tilt_axis is None:
        raise TiltflowError(f"tilt series {ts.name}: no tilt-axis angle in the mdoc; give --tilt-axis DEG", ts.mdoc)
    no_path = [t.z_value for t in ts.tilts if not t.sub_frame_path]
    if no_path:
        raise TiltflowError(
            f"tilt series {ts.name}: no SubFramePath for ZValue {', '.join(map(str, no_path[:10]))}: "
            "the movies cannot be named",
            ts.mdoc,
        )


def series_to_star(
    ts: TiltSeries,
    kv: float | None = None,
    cs: float = DEFAULT_CS,
    amp_contrast: float = DEFAULT_AMP_CONTRAST,
    hand: int = DEFAULT_HAND,
    optics_group: str = DEFAULT_OPTICS_GROUP,
    *,
    root: Path,
) -> tuple[star.TiltSeriesStar, list[str]]:
    """The STAR form of one tilt series (rows in acquisition order) and the import's own warnings."""
    notes: list[str] = []
    defoci = [t.target_defocus for t in ts.tilts if t.target_defocus is not None]
    fill_defocus = sorted(defoci)[len(defoci) // 2] if defoci else None
    if defoci and len(defoci) < len(ts.tilts):
        notes.append(f"TargetDefocus missing for {len(ts.tilts) - len(defoci)} tilts: using {fill_defocus:g} um")
    if not defoci:
        notes.append("no TargetDefocus in the mdoc: rlnTomoNominalDefocus not written")
    no_frames = [t.z_value for t in ts.tilts if not t.frame_count]
    if no_frames:
        notes.append(f"frame count unknown for {len(no_frames)} tilts (written as 0; motioncor reads the movie)")
    rows = []
    for t in ts.tilts:
        movie = star.relative_to_root(t.movie, root) if t.movie is not None else (t.movie_name or "")
        row = {
            star.MOVIE: movie,
            star.FRAME_COUNT: int(t.frame_count or 0),
            star.NOMINAL_TILT: float(t.tilt_angle),
            star.NOMINAL_AXIS: float(ts.tilt_axis if ts.tilt_axis is not None else math.nan),
            star.PRE_EXPOSURE: float(t.pre_exposure if t.pre_exposure is not None else math.nan),
        }
        if fill_defocus is not None:
            row[star.NOMINAL_DEFOCUS] = float(t.target_defocus if t.target_defocus is not None else fill_defocus)
        row.update(
            {
                TF_Z_VALUE: int(t.z_value),
                TF_ACQ_INDEX: int(t.acquisition_index),
                TF_DOSE: float(t.dose or 0.0),
                TF_EXPOSURE_TIME: float(t.exposure_time) if t.exposure_time is not None else 0.0,
                TF_DATE_TIME: t.date_time.isoformat() if t.date_time else "unknown",
            }
        )
        rows.append(row)
    voltage = float(kv) if kv is not None else float(ts.voltage)
    if kv is not None and ts.voltage_from_mdoc and abs(kv - ts.voltage) > 1:
        notes.append(f"--kv {kv:g} overrides the mdoc's Voltage = {ts.voltage:g}")
    globals_ = {
        star.TOMO_NAME: ts.name,
        star.VOLTAGE: voltage,
        star.CS: float(cs),
        star.AMP_CONTRAST: float(amp_contrast),
        star.ORIGINAL_PIXEL_SIZE: float(ts.pixel_size),
        star.HAND: int(hand),
        star.OPTICS_GROUP: optics_group,
        TF_MDOC: star.relative_to_root(ts.mdoc, root),
    }
    return star.TiltSeriesStar(name=ts.name, globals=globals_, tilts=pd.DataFrame(rows)), notes


@dataclass(frozen=True)
class Options:
    """The import step's options (``tiltflow import``): what the mdoc may lack or the user overrides."""

    kv: float | None = option(None, "Voltage in kV (default: mdoc Voltage, else 300).", "kV")
    cs: float = option(DEFAULT_CS, "Spherical aberration in mm.", "mm")
    amp_contrast: float = option(DEFAULT_AMP_CONTRAST, "Amplitude contrast (fraction).")
    tilt_axis: float | None = option(None, "Tilt-axis angle in degrees (overrides the mdoc).", "deg")
    dose_per_tilt: float | None = option(None, "Dose per tilt in e/A^2 (overrides the mdoc).", "e/A^2")
    hand: int = option(DEFAULT_HAND, "rlnTomoHand: -1 (RELION's GUI default, EMPIAR-10164) or 1.")
    frames: Path | None = option(None, "Folder holding the movies (default: next to the mdoc).")
    optics_group: str = option(DEFAULT_OPTICS_GROUP, "rlnOpticsGroupName for every series.")
    pixel_size: float | None = option(None, "Movie pixel size in A (default: mdoc PixelSpacing / Binning).", "A")
    expected_tilts: int | None = option(None, "Tilts per series; fewer sections means the mdoc is incomplete.")
    skip_incomplete: bool = option(False, "Skip incomplete or unusable mdocs instead of failing.",
                                   flag="--skip-incomplete")

    def validate(self) -> None:
        """Reject impossible optics, hand and optics-group names before any mdoc is read."""
        _check_options(self.kv, self.cs, self.amp_contrast, self.hand)
        if not self.optics_group or any(c.isspace() for c in self.optics_group):
            raise TiltflowError(f"--optics-group {self.optics_group!r}: expected a name without spaces")


def run_session(paths: str | Path | Iterable[str | Path], outdir: str | Path, options: Options,
                root: str | Path) -> ImportResult:
    """Import every tilt series under ``paths`` into ``outdir`` (see the module docstring); relative paths
    are relative to the project ``root``, and the STAR files name the movies relative to it.

    Raises :class:`TiltflowError` (one line naming the file) before writing anything when a file is
    incomplete or unusable (unless ``skip_incomplete``), when no tilt series is found, or when a
    series has no dose (give ``dose_per_tilt``) or no tilt axis (give ``tilt_axis``).
    """
    options.validate()
    o = options
    root = Path(root).absolute()
    given = [paths] if isinstance(paths, (str, Path)) else list(paths)
    paths = [at_root(p, root) for p in given]
    frames_dir = at_root(o.frames, root) if o.frames is not None else None
    _check_spelling(paths, frames_dir)
    session = load_session(paths, frames_dir, o.tilt_axis, o.dose_per_tilt, o.pixel_size, o.expected_tilts)
    problems = [s for s in session.skipped if s.is_problem]
    if problems and not o.skip_incomplete:
        p = problems[0]
        more = f" (and {len(problems) - 1} more; --skip-incomplete imports the rest)" if len(problems) > 1 else ""
        raise TiltflowError(f"{p.reason}{more}", p.path)
    if not session.series:
        where = ", ".join(map(str, given))
        kinds: dict[str, int] = {}
        for s in session.skipped:
            kinds[s.kind] = kinds.get(s.kind, 0) + 1
        aside = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
        raise TiltflowError(f"no tilt-series mdoc found{f' (set aside: {aside})' if aside else ''}", where)
    prepared = []
    for ts in session.series:
        check_importable(ts)
        prepared.append((ts, *series_to_star(ts, o.kv, o.cs, o.amp_contrast, o.hand, o.optics_group, root=root)))

    rel_out = Path(outdir)  # as given: rlnTomoTiltSeriesStarFile names it so
    outdir = at_root(outdir, root)
    result = ImportResult(tomograms=outdir / "tomograms.star", session=session)
    written: list[star.TiltSeriesStar] = []
    for ts, tss, notes in prepared:
        out = series_star(outdir, ts.name)
        with step_logs("import", series_dir(outdir, ts.name), ts.name) as logger, root_relative_logs(root):
            _report(logger, ts)
            for w in ts.warnings + notes:
                logger.warning("%s: %s", ts.name, w)
            tss.globals[star.TS_STAR_FILE] = str(series_star(rel_out, ts.name))
            # the movies this series needs, one absolute path a line: Nextflow stages exactly these into
            # the series' MOTIONCOR task (main.nf), instead of the whole session folder
            write_text(series_dir(outdir, ts.name) / MOVIE_LIST,
                       "".join(f"{t.movie.resolve()}\n" for t in ts.tilts if t.movie is not None))
            star.write_tilt_series(tss, out)
        result.series_stars.append(out)
        written.append(tss)
    for path, _, reason in skipped_lines(session):
        log.info("skipped %s: %s", path, reason)
    star.write_tomograms(written, result.tomograms)
    log.info("imported %d tilt series into %s", len(written), result.tomograms)
    return result


def _report(logger: logging.Logger, ts: TiltSeries) -> None:
    lo, hi = ts.angle_range
    total = ts.total_dose
    logger.info(
        "%s: %s, %d tilts %.1f..%.1f deg, %s, order from %s, tilt axis %.2f deg (%s), pixel %.4g A, %g kV",
        ts.name, ts.mdoc, ts.n_tilts, lo, hi, ts.scheme, ts.order_source, ts.tilt_axis or 0.0,
        ts.tilt_axis_source, ts.pixel_size, ts.voltage,
    )
    dose = ts.tilts[0].dose or 0.0
    logger.info(
        "%s: dose %.3g e/A^2 per tilt (%s), total %.4g e/A^2, %d/%d movies found",
        ts.name, dose, ts.tilts[0].dose_source or "none", total or 0.0,
        sum(t.movie_found for t in ts.tilts), ts.n_tilts,
    )
