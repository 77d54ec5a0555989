"""``tiltflow exclude``: option parsing only; the work is in ``tiltflow.steps.exclude``."""

from __future__ import annotations

from pathlib import Path

import typer

_INDEX_HELP = ("Tilt indices are the 0-based ACQUISITION index (tfAcquisitionIndex: the order SerialEM took "
               "the images, as `tiltflow inspect` lists them; for a stack mdoc the ZValue). Syntax "
               "'TS_01:3,4;TS_02:7-9'; entries for other series are ignored by this step.")


def main(
    in_star: Path = typer.Argument(..., help="Per-tilt-series STAR file from the ctf step."),
    outdir: Path = typer.Option(Path("exclude"), "--outdir", help="Step folder; writes <outdir>/<name>/."),
    exclude_tilts: str = typer.Option(None, "--exclude-tilts", help="Tilts to exclude. " + _INDEX_HELP),
    keep_tilts: str = typer.Option(None, "--keep-tilts",
                                   help="Tilts to keep even if a rule excludes them. Same syntax."),
    max_motion: float = typer.Option(60.0, "--max-motion", help="Exclude tilts whose total motion exceeds "
                                     "this (A, rlnAccumMotionTotal); 0 switches the rule off."),
    max_early_motion: float = typer.Option(30.0, "--max-early-motion",
                                           help="Limit on rlnAccumMotionEarly (A); 0 = off."),
    min_ctf_resolution: float = typer.Option(20.0, "--min-ctf-resolution", help="Worst acceptable CTF fit "
                                             "resolution (A, rlnCtfMaxResolution); 0 = off."),
    min_ctf_score: float = typer.Option(0.0, "--min-ctf-score", help="Exclude CTF fits scoring below this "
                                        "(rlnCtfFigureOfMerit); negative = off."),
    dark_tol: float = typer.Option(0.7, "--dark-tol", help="AreTomo's DarkTol: dark when |mean|/std <= "
                                   "dark-tol x that of the lowest tilt (0 or 1 = off)."),
    blank_tol: float = typer.Option(0.3, "--blank-tol", help="Blank when specimen contrast < blank-tol x the "
                                    "series median (0 = off)."),
    min_intensity: float = typer.Option(0.2, "--min-intensity", help="WarpTools' rule: dark when the mean is "
                                        "below this x cos(tilt) x the lowest tilt's mean (0 = off)."),
    hand: str = typer.Option("auto", "--hand", help="Defocus handedness (rlnTomoHand): auto (measure from the "
                             "defocus gradient), keep (as imported), 1 or -1."),
    hand_tilts: int = typer.Option(12, "--hand-tilts", min=2, help="Highest tilts measured for the handedness."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
) -> None:
    """Exclude bad tilts (dark, blank, motion, CTF fit) with a reason for each, and set the handedness.

    Writes <name>.star with tfExcluded/tfExcludeReason per tilt (stack drops excluded rows, as RELION's
    ExcludeTiltImages does) and rlnTomoHand, exclusions.tsv and <name>_hand.json.
    """
    from tiltflow.qc.exclusion import Thresholds
    from tiltflow.qc.handedness import HandOptions
    from tiltflow.steps.exclude import ExcludeOptions, run

    def off(v: float) -> float | None:
        return v if v > 0 else None

    th = Thresholds(max_motion=off(max_motion), max_early_motion=off(max_early_motion),
                    min_ctf_resolution=off(min_ctf_resolution), min_ctf_score=min_ctf_score if min_ctf_score >= 0 else None,
                    dark_tol=dark_tol, blank_tol=blank_tol, min_intensity=min_intensity)
    opts = ExcludeOptions(thresholds=th, exclude_tilts=exclude_tilts, keep_tilts=keep_tilts, hand=hand,
                          hand_options=HandOptions(max_tilts=hand_tilts), device=device)
    typer.echo(str(run(in_star, outdir, opts)))
