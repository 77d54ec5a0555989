"""What ``tiltflow watch`` runs in its worker processes: one tilt, one finished series, the session files.

Why outputs equal a batch run's: a tilt's motion correction is the motioncor step's own ``run`` on a
one-row table, written straight into ``motioncor/<TS>/frames/`` where the batch step puts it (motion
correction of a movie depends on nothing else in the series). When the series is complete, the import
step runs as in ``tiltflow run`` and :func:`adopt_motioncor` assembles the series' motioncor STAR from
the per-tilt results (a tilt whose import row changed, e.g. after a retake, is corrected again) and
writes the runner's resume record, so the later steps, and a later ``tiltflow run``, see exactly what a
batch run leaves. CTF, exclusion, stack, alignment and reconstruction then run through the runner's
:func:`~tiltflow.runner.execute.run_step`. The per-tilt CTF fit is a preview for the live report
(``live/<TS>/ctf``): the ctf step's series pass (one handedness, a smooth defocus path, one
astigmatism) needs the whole series and refits every tilt whose value moves, so the step runs again on
it. The preview is the step's first pass on the same inputs (bench/bench_live.py compares them), which
the step could take instead of fitting each tilt again.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tiltflow import star
from tiltflow.columns import TF_DOSE
from tiltflow.errors import TiltflowError
from tiltflow.runner import plan, resume
from tiltflow.runner.execute import SeriesOutcome, StepOutcome, expected_record, run_step
from tiltflow.runner.options import step_options
from tiltflow.runner.params import RunParams

log = logging.getLogger("tiltflow.live")

LIVE = "live"  # OUT/live/<TS>/: the partial import, per-tilt results, CTF previews
IMPORT_LOCK = ".tiltflow-import.lock"
#: the import columns a tilt's motion correction reads (steps/motioncor.py _resolve_tilts)
MOTION_INPUTS = (star.MOVIE, star.FRAME_COUNT, star.PRE_EXPOSURE, TF_DOSE)


@dataclass
class TiltResult:
    """One tilt's per-tilt results as the live report shows them."""

    series: str
    root: str
    seconds: float = 0.0
    error: str | None = None


def live_dir(name: str) -> Path:
    """``live/<TS>``: the folder a series' live results go to."""
    return Path(LIVE) / name


def tilt_star(name: str, root: str, kind: str) -> Path:
    """``live/<TS>/tilts/<root>.<kind>.star``: a tilt's one-row result of the motioncor or ctf step."""
    return live_dir(name) / "tilts" / f"{root}.{kind}.star"


def one_row(ts: star.TiltSeriesStar, i: int) -> star.TiltSeriesStar:
    """Row ``i`` of ``ts`` as a series of its own (same name and globals), for processing one tilt."""
    return star.TiltSeriesStar(ts.name, dict(ts.globals), ts.tilts.iloc[[i]].reset_index(drop=True))


def movie_root_of(row_movie: str) -> str:
    """The movie root (motioncor's output name) of a STAR row's movie."""
    from tiltflow.steps.motioncor import movie_root

    return movie_root(str(row_movie))


def _text(v) -> str:
    """A STAR value as the writer prints it (floats to 6 decimals), for comparing rows."""
    return f"{v:.6f}" if isinstance(v, float) else str(v)


def same_motion_inputs(a: star.TiltSeriesStar, b: star.TiltSeriesStar) -> bool:
    """Whether two one-row tables give the same motion correction (same movie, frames, dose, pixel)."""
    for col in MOTION_INPUTS:
        if (col in a.tilts) != (col in b.tilts):
            return False
        if col in a.tilts and _text(a.tilts.iloc[0][col]) != _text(b.tilts.iloc[0][col]):
            return False
    keys = (star.ORIGINAL_PIXEL_SIZE, star.VOLTAGE)
    return all(_text(a.globals.get(k)) == _text(b.globals.get(k)) for k in keys)


def process_tilt(root: str, ts: star.TiltSeriesStar, params: RunParams, has_gain: bool) -> TiltResult:
    """Motion correction (into the batch step's folder) and a CTF preview of the one tilt in ``ts``."""
    from tiltflow.steplog import step_logs
    from tiltflow.steps import ctf, motioncor

    rootp = Path(root)  # every path below is under the project root (the working directory is not used)
    name = ts.name
    mroot = movie_root_of(ts.tilts.iloc[0][star.MOVIE])
    t0, cpu0 = time.perf_counter(), time.process_time()
    try:
        with step_logs("live", rootp / live_dir(name), name):
            mc = motioncor.run_series(ts, rootp / "motioncor" / name,
                                      step_options("motioncor", params, has_gain, name), root)
            star.write_tilt_series(mc, rootp / tilt_star(name, mroot, "mc"))
            preview = ctf.run_series(star.read_tilt_series(rootp / tilt_star(name, mroot, "mc")),
                                     rootp / live_dir(name) / "ctf", step_options("ctf", params, has_gain, name), root)
            star.write_tilt_series(preview, rootp / tilt_star(name, mroot, "ctf"))
            # CPU seconds (all threads) beside the wall time: on a shared machine they say what the work costs
            log.info("%s: %s motion + CTF preview: cpu %.1f s", name, mroot, time.process_time() - cpu0)
    except TiltflowError as exc:
        return TiltResult(name, mroot, time.perf_counter() - t0, str(exc))
    except Exception as exc:  # a bug or a resource problem: one line, the traceback is in live/<TS>/error.log
        return TiltResult(name, mroot, time.perf_counter() - t0, f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}")
    return TiltResult(name, mroot, time.perf_counter() - t0)


@contextlib.contextmanager
def import_lock(root: Path) -> Iterator[None]:
    """The import step rewrites ``import/``: one series at a time imports and reads its import STAR."""
    with open(root / IMPORT_LOCK, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def complete_mdocs(root: Path, mdoc: str) -> list[Path]:
    """Add ``mdoc`` to ``live/complete.txt`` (the mdocs of every series found complete on this outdir, over
    restarts too) and return them all: the import step rewrites ``import/`` for exactly the mdocs it is
    given, so each import must name every complete series. Called under :func:`import_lock`.
    """
    from tiltflow.atomic import write_text

    path = root / LIVE / "complete.txt"
    known = set(path.read_text().split("\n")) if path.is_file() else set()
    known = {m for m in known | {str(mdoc)} if m}
    write_text(path, "\n".join(sorted(known)) + "\n")
    return [Path(m) for m in sorted(known)]


def finish_series(root: str, name: str, params: RunParams, has_gain: bool, mdoc: str) -> SeriesOutcome:
    """A complete series: import (every complete series' mdoc), motioncor from the per-tilt results, then
    ctf .. reconstruct as ``tiltflow run`` runs them. Stops at the first failing step.
    """
    rootp = Path(root)
    result = SeriesOutcome(name)
    with import_lock(rootp):
        result.steps.append(run_step(rootp, plan.import_call(params, complete_mdocs(rootp, mdoc)), False))
        if result.failed:
            return result
        result.steps.append(adopt_motioncor(rootp, name, params, has_gain))
    for step in plan.SERIES_STEPS[1:]:
        if result.failed:
            break
        try:
            call = plan.series_call(step, name, params, has_gain)
        except TiltflowError as exc:
            result.steps.append(StepOutcome(step, name, "failed", error=str(exc), user_error=True))
            break
        result.steps.append(run_step(rootp, call, False))
    return result


def adopt_motioncor(root: Path, name: str, params: RunParams, has_gain: bool) -> StepOutcome:
    """The series' motioncor STAR and resume record from the per-tilt results (see the module docstring)."""
    from tiltflow.steps.common import execute_series_step

    t0 = time.perf_counter()
    call = plan.series_call("motioncor", name, params, has_gain)
    try:
        expected = expected_record(root, call)  # the same record `tiltflow run` expects (raw movies included)
        ok, why = resume.up_to_date(root, call.step, call.folder, expected)
        if ok:
            return StepOutcome(call.step, name, "skipped", time.perf_counter() - t0, why)
        (root / call.folder / resume.RECORD).unlink(missing_ok=True)
        _, in_star, step_dir, options = call.args
        execute_series_step("motioncor", in_star, step_dir, lambda ts, out: _assemble(ts, Path(out), options, root),
                            root)
        resume.write_record(root, call.folder, call.step, name, expected)
    except TiltflowError as exc:
        return StepOutcome(call.step, name, "failed", time.perf_counter() - t0, error=str(exc), user_error=True)
    except Exception as exc:
        return StepOutcome(call.step, name, "failed", time.perf_counter() - t0,
                           error=f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}")
    return StepOutcome(call.step, name, "ran", time.perf_counter() - t0, why)


def _assemble(ts: star.TiltSeriesStar, out_dir: Path, options, root: Path) -> star.TiltSeriesStar:
    """``ts`` (the import table) with the motioncor columns of every tilt's one-row result."""
    from tiltflow.steps import motioncor

    rows, roots = [], set()
    for i in range(len(ts.tilts)):
        one = one_row(ts, i)
        mroot = movie_root_of(one.tilts.iloc[0][star.MOVIE])
        roots.add(mroot)
        path = Path(root) / tilt_star(ts.name, mroot, "mc")
        done = star.read_tilt_series(path) if path.is_file() else None
        if done is None or not same_motion_inputs(done, one):
            log.info("%s: %s corrected again (no per-tilt result for this import row)", ts.name, mroot)
            star.write_tilt_series(motioncor.run_series(one, out_dir, options, root), path)
            done = star.read_tilt_series(path)
        rows.append(done)
    _drop_other_tilts(out_dir / "frames", roots, Path(root) / live_dir(ts.name) / "tilts")
    new = ts.copy()
    added = [c for c in rows[0].tilts.columns if c not in ts.tilts.columns]
    for col in added:
        new.tilts[col] = [r.tilts.iloc[0][col] for r in rows]
    new.globals[star.TS_PIXEL_SIZE] = rows[0].globals[star.TS_PIXEL_SIZE]
    return new


def _drop_other_tilts(frames: Path, keep: set[str], tilts: Path) -> None:
    """Remove per-tilt files of tilts the import no longer lists (a retaken image), as a batch run
    (which starts from an empty folder) would not have them.
    """
    if not tilts.is_dir():
        return
    for f in tilts.glob("*.mc.star"):
        old = f.name[: -len(".mc.star")]
        if old in keep:
            continue
        for p in frames.glob(f"{old}*"):
            stem = p.name[len(old):]
            if stem.startswith((".", "_EVN.", "_ODD.", "_PS.")):
                p.unlink()


def session_files(root: str, names: list[str]) -> list[StepOutcome]:
    """``relion/tomograms.star`` of the finished series, then the report, as ``tiltflow run`` ends."""
    rootp = Path(root)
    return [run_step(rootp, plan.export_call(names), False), run_step(rootp, plan.report_call(names), False)]
