"""``tiltflow reconstruct``: option parsing only; the work is in ``tiltflow.steps.reconstruct``."""

from __future__ import annotations

from pathlib import Path

import typer

from tiltflow.commands.options import build, option, project_root, root_option, shown
from tiltflow.steps.common import run_star_step
from tiltflow.steps.reconstruct import Options


def main(
    in_star: Path = typer.Argument(..., help="Per-tilt-series STAR file from the align step."),
    outdir: Path = typer.Option(Path("reconstruct"), "--outdir", help="Step folder; writes <outdir>/<name>/."),
    root: Path | None = root_option(),
    pixel_size: float = option(Options, "pixel_size"),
    thickness: float = option(Options, "thickness"),
    method: str = option(Options, "method"),
    iterations: int = option(Options, "iterations"),
    halves: bool = option(Options, "halves"),
    slab: int = option(Options, "slab"),
    device: str = option(Options, "device"),
    ctf_correction: str = option(Options, "ctf_correction"),
    dose_weighting: bool = option(Options, "dose_weighting"),
    defocus_step: float = option(Options, "defocus_step"),
    wiener_snr: float = option(Options, "wiener_snr"),
    wiener_falloff: float = option(Options, "wiener_falloff"),
) -> None:
    """Reconstruct the tomogram (weighted back-projection or SIRT) at the target pixel size.

    Writes rec_<name>.mrc (+ _half1/_half2 from even/odd stacks) and <name>.star with RELION 5's
    rlnTomoReconstructedTomogram, rlnTomoSizeX/Y/Z, rlnTomoTomogramBinning and rlnCtfScalefactor.
    The images are CTF-corrected (default: phase flipping) and exposure-weighted first.
    """
    root = project_root(root)
    typer.echo(shown(run_star_step("reconstruct", in_star, outdir, build(Options, locals()), root), root))
