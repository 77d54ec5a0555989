"""tiltflow beside the field's programs on the same simulated session: accuracy, CPU and wall seconds, ratios.

    .venv/bin/python bench/peers.py                      # 11 tilts of 512^2 (test preset), 1 thread, minutes
    .venv/bin/python bench/peers.py --preset demo --tilt-step 3 --size 1024 --threads 2

Simulates one session, prepares the gain and imports it, then runs each built-in step and each peer found on
PATH at the same thread count, every one as a ``tiltflow <step> --backend <peer>`` command (tiltflow's own
wrappers: RELION 3.1.3's ``relion_run_motioncorr --use_own``, MotionCor2/3, CTFFIND4/5, AreTomo2/3, IMOD's
newstack), timed in a fresh process without its imports (bench/steptime.py). A peer runs in its own project
folder ``results/peers/<peer>/`` whose upstream step folders are links to tiltflow's, so it reads the same
inputs and ``simulate.compare`` scores it against the truth exactly as it scores tiltflow. Ratios are
tiltflow / peer (below 1: tiltflow cheaper), with tiltflow run again under the peer's options where the peer
needs some (RELION 3.1.3 writes no even/odd sums: both without). CPU includes the wrapped program's. The
machine may be shared: read the ratios, not the seconds.

Accuracy: motion = RMS px of drift error over all frames; defocus = RMS um over non-dark tilts (no exclusion
for either side); alignment = gauge-free shift RMS px; WBP = correlation with the phantom (higher is better).
IMOD's patch tracking (tiltxcorr/tiltalign) and ``tilt`` have no tiltflow wrapper yet: reported as such.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "python"))

from steptime import Timing, time_step  # noqa: E402  (bench/ is on sys.path when a bench script runs)

GAIN = ["--gain-rotate", "1", "--gain-flip", "2"]  # the simulated gain is stored turned, as in `make demo`


@dataclass(frozen=True)
class Step:
    """One pipeline step as a command, the accuracy metric that scores it and the step folders it reads."""

    name: str
    module: str
    args: tuple[str, ...]  # {ts} = series name
    metric: str | None  # SeriesComparison attribute
    upstream: tuple[str, ...]


STEPS = [
    Step("motioncor", "tiltflow.steps.motioncor",
         ("import/{ts}/{ts}.star", "--outdir", "motioncor", "--gain", "gain/gain.mrc", "--device", "cpu"),
         "motion_rms_px", ("gain", "import")),
    Step("ctf", "tiltflow.steps.ctf", ("motioncor/{ts}/{ts}.star", "--outdir", "ctf", "--device", "cpu"),
         "defocus_rms_um", ("gain", "import", "motioncor")),
    Step("exclude", "tiltflow.steps.exclude", ("ctf/{ts}/{ts}.star", "--outdir", "exclude"), None, ()),
    Step("stack", "tiltflow.steps.stack", ("exclude/{ts}/{ts}.star", "--outdir", "stack"), None,
         ("gain", "import", "motioncor", "ctf", "exclude")),
    Step("align", "tiltflow.steps.align", ("stack/{ts}/{ts}.star", "--outdir", "align", "--device", "cpu"),
         "shift_rms_px", ("gain", "import", "motioncor", "ctf", "exclude", "stack")),
    Step("reconstruct", "tiltflow.steps.reconstruct",
         ("align/{ts}/{ts}.star", "--outdir", "reconstruct", "--method", "wbp", "--device", "cpu"),
         "tomogram_correlation", ("gain", "import", "motioncor", "ctf", "exclude", "stack", "align")),
]


@dataclass(frozen=True)
class Peer:
    """A field program run through tiltflow's wrapper: ``tiltflow <step> --backend <backend>``."""

    step: str
    label: str
    backend: str
    programs: tuple[str, ...]  # any of these on PATH
    extra: tuple[str, ...] = ()
    drop: tuple[str, ...] = ()  # built-in-only options the backend refuses


PEERS = [
    # RELION 3.1.3 cannot write even/odd sums (no --even_odd_split): both sides asked for the sum only
    Peer("motioncor", "RELION (own)", "relion", ("relion_run_motioncorr",), ("--no-even-odd",), ("--device", "cpu")),
    Peer("motioncor", "MotionCor2", "motioncor2", ("MotionCor2",), (), ("--device", "cpu")),
    Peer("motioncor", "MotionCor3", "motioncor3", ("MotionCor3",), (), ("--device", "cpu")),
    Peer("ctf", "CTFFIND5", "ctffind5", ("ctffind5", "ctffind"), (), ("--device", "cpu")),
    Peer("ctf", "CTFFIND4", "ctffind4", ("ctffind4",), (), ("--device", "cpu")),
    Peer("stack", "IMOD newstack", "imod", ("newstack",)),
    Peer("align", "AreTomo2", "aretomo2", ("AreTomo2", "AreTomo"), (), ("--device", "cpu")),
    Peer("align", "AreTomo3", "aretomo3", ("AreTomo3",), (), ("--device", "cpu")),
]

#: peers that tiltflow has no wrapper for yet (named so the table says so instead of leaving them out)
UNWRAPPED = [("align", "IMOD tiltxcorr/tiltalign", ("tiltxcorr", "tiltalign")), ("reconstruct", "IMOD tilt", ("tilt",))]


def _backends(step: str) -> tuple[str, ...]:
    """The backends this tiltflow's step accepts (RELION's arrives with tiltflow.backends.relion)."""
    import importlib

    try:
        return tuple(getattr(importlib.import_module(f"tiltflow.steps.{step}"), "BACKENDS", ()))
    except ImportError:
        return ()


def _drop(args: list[str], unwanted: tuple[str, ...]) -> list[str]:
    """``args`` without the option/value pairs named in ``unwanted`` (given as a flat option, value list)."""
    pairs = set(zip(unwanted[::2], unwanted[1::2], strict=True))
    out, i = [], 0
    while i < len(args):
        if tuple(args[i:i + 2]) in pairs:
            i += 2
            continue
        out.append(args[i])
        i += 1
    return out


def _score(session: Path, root: Path, metric: str | None) -> float | None:
    if metric is None:
        return None
    from tiltflow.simulate.compare import compare

    value = getattr(compare(session, root, with_tomogram=metric == "tomogram_correlation")[0], metric)
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def _peer_root(results: Path, peer: Peer, upstream: tuple[str, ...]) -> Path:
    """``results/peers/<backend>``: links to tiltflow's upstream step folders, nothing else."""
    root = results / "peers" / peer.backend
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    for name in upstream:
        os.symlink(results / name, root / name)
    return root


def _fmt(x: float | None, spec: str = ".3f") -> str:
    return "-" if x is None else format(x, spec)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="test", choices=("tiny", "test", "demo"))
    ap.add_argument("--size", type=int, default=512, help="movie size in pixels (square)")
    ap.add_argument("--tilt-step", type=float, default=12.0)
    ap.add_argument("--threads", type=int, default=1, help="threads for tiltflow and every peer")
    ap.add_argument("--workdir", type=Path, default=None, help="keep the session and results here")
    a = ap.parse_args(argv)
    work = a.workdir or Path(tempfile.mkdtemp(prefix="tiltflow-peers-"))
    session, results = work / "session", work / "results"
    results.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, TILTFLOW_THREADS=str(a.threads))
    tf = [sys.executable, "-m", "tiltflow"]
    if not (session / "ground_truth.json").is_file():
        subprocess.run(tf + ["simulate", str(session), "--preset", a.preset, "--size", str(a.size), "--tilt-step",
                             str(a.tilt_step), *GAIN, "--overwrite"], check=True, env=env, capture_output=True)
    subprocess.run(tf + ["gain", str(session / "gain.mrc"), "--outdir", "gain", "--rotate", "1", "--flip", "2"],
                   check=True, env=env, capture_output=True, cwd=results)
    subprocess.run(tf + ["import", str(session), "--outdir", "import"], check=True, env=env, capture_output=True,
                   cwd=results)
    ts = sorted(p.name for p in (results / "import").iterdir() if p.is_dir())[0]

    # step, program, accuracy, timing, note, tiltflow's (accuracy, timing) with the peer's options
    rows: list[tuple[str, str, float | None, Timing | None, str, tuple[float | None, Timing] | None]] = []
    own: dict[str, tuple[float | None, Timing]] = {}
    for step in STEPS:
        args = [step.name] + [x.format(ts=ts) for x in step.args]
        timing = time_step(results, step.module, args, a.threads)
        own[step.name] = (_score(session, results, step.metric), timing)
        accepted = _backends(step.name)
        for peer in (p for p in PEERS if p.step == step.name):
            found = next((shutil.which(p) for p in peer.programs if shutil.which(p)), None)
            if found is None:
                rows.append((step.name, peer.label, None, None, "not installed", None))
                continue
            if peer.backend not in accepted:
                rows.append((step.name, peer.label, None, None,
                             f"installed ({found}), but this tiltflow has no --backend {peer.backend}", None))
                continue
            root = _peer_root(results, peer, step.upstream)
            peer_args = _drop(args, peer.drop) + ["--backend", peer.backend, *peer.extra]
            t = time_step(root, step.module, peer_args, a.threads)
            mine = own[step.name]
            if peer.extra:  # the same options for tiltflow (e.g. no even/odd sums): a fair ratio
                same = _peer_root(results, Peer(step.name, "", f"builtin-as-{peer.backend}", ()), step.upstream)
                t_same = time_step(same, step.module, args + list(peer.extra), a.threads)
                mine = (_score(session, same, step.metric), t_same)
            rows.append((step.name, peer.label, _score(session, root, step.metric), t, found, mine))
        for s, label, programs in UNWRAPPED:
            if s == step.name:
                on_path = any(shutil.which(p) for p in programs)
                rows.append((s, label, None, None, "no tiltflow wrapper yet" + (" (installed)" if on_path else
                                                                                  " (not installed)"), None))

    print(f"bench/peers.py: preset {a.preset}, {a.size}^2, tilt step {a.tilt_step:g} deg, series {ts}, "
          f"{a.threads} thread(s) each; load average {os.getloadavg()[0]:.1f}; work dir {work}")
    head = (f"{'step':<12}{'program':<26}{'accuracy':>9}{'tiltflow':>9}{'CPU s':>8}{'tf CPU s':>9}{'CPU ratio':>10}"
            f"{'wall s':>8}{'tf wall':>8}{'wall ratio':>11}  note")
    print(head)
    print("-" * len(head))
    for step in STEPS:
        acc, t = own[step.name]
        print(f"{step.name:<12}{'tiltflow (built-in)':<26}{_fmt(acc):>9}{'':>9}{t.cpu:>8.2f}{'':>9}{'':>10}"
              f"{t.wall:>8.2f}{'':>8}{'':>11}  {step.metric or ''}")
        for s, label, pacc, pt, note, mine in rows:
            if s != step.name:
                continue
            if pt is None or mine is None:
                print(f"{s:<12}{label:<26}{'':>9}{'':>9}{'':>8}{'':>9}{'':>10}{'':>8}{'':>8}{'':>11}  {note}")
                continue
            macc, mt = mine
            print(f"{s:<12}{label:<26}{_fmt(pacc):>9}{_fmt(macc):>9}{pt.cpu:>8.2f}{mt.cpu:>9.2f}"
                  f"{mt.cpu / pt.cpu:>10.2f}{pt.wall:>8.2f}{mt.wall:>8.2f}{mt.wall / pt.wall:>11.2f}  {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
