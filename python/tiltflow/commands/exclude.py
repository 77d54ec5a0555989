"""``tiltflow exclude``: option parsing only; the work is in ``tiltflow.steps.exclude``."""

from __future__ import annotations

from pathlib import Path

import typer

from tiltflow.commands.options import build, option, project_root, root_option, shown
from tiltflow.steps.common import run_star_step
from tiltflow.steps.exclude import Options


def main(
    in_star: Path = typer.Argument(..., help="Per-tilt-series STAR file from the ctf step."),
    outdir: Path = typer.Option(Path("exclude"), "--outdir", help="Step folder; writes <outdir>/<name>/."),
    root: Path | None = root_option(),
    exclude_tilts: str | None = option(Options, "exclude_tilts"),
    keep_tilts: str | None = option(Options, "keep_tilts"),
    max_motion: float = option(Options, "max_motion"),
    max_early_motion: float = option(Options, "max_early_motion"),
    min_ctf_resolution: float = option(Options, "min_ctf_resolution"),
    min_ctf_score: float = option(Options, "min_ctf_score"),
    dark_tol: float = option(Options, "dark_tol"),
    blank_tol: float = option(Options, "blank_tol"),
    min_intensity: float = option(Options, "min_intensity"),
    hand: str = option(Options, "hand"),
    hand_tilts: int = option(Options, "hand_tilts"),
    device: str = option(Options, "device"),
) -> None:
    """Exclude bad tilts (dark, blank, motion, CTF fit) with a reason for each, and set the handedness.

    Writes <name>.star with tfExcluded/tfExcludeReason per tilt (stack drops excluded rows, as RELION's
    ExcludeTiltImages does) and rlnTomoHand, exclusions.tsv and <name>_hand.json.
    """
    root = project_root(root)
    typer.echo(shown(run_star_step("exclude", in_star, outdir, build(Options, locals()), root), root))
