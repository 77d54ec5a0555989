"""``tiltflow reconstruct``: option parsing only; the work is in ``tiltflow.steps.reconstruct``."""

from __future__ import annotations

from pathlib import Path

import typer


def main(
    in_star: Path = typer.Argument(..., help="Per-tilt-series STAR file from the align step."),
    outdir: Path = typer.Option(Path("reconstruct"), "--outdir", help="Step folder; writes <outdir>/<name>/."),
    pixel_size: float = typer.Option(10.0, "--pixel-size", min=0.01, help="Tomogram pixel size in A (RELION's binned_angpix)."),
    thickness: float = typer.Option(300.0, "--thickness", min=1.0, help="Tomogram thickness in nm."),
    method: str = typer.Option("wbp", "--method", help="wbp, sirtlike (WBP with the SIRT-like filter) or sirt."),
    iterations: int = typer.Option(10, "--iterations", min=1, help="Iterations for sirt and sirtlike."),
    halves: bool = typer.Option(True, "--halves/--no-halves", help="Half tomograms from the even/odd stacks."),
    slab: int = typer.Option(64, "--slab", min=1, help="z-planes reconstructed at a time (bounds memory)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
) -> None:
    """Reconstruct the tomogram (weighted back-projection or SIRT) at the target pixel size.

    Writes rec_<name>.mrc (+ _half1/_half2 from even/odd stacks) and <name>.star with RELION 5's
    rlnTomoReconstructedTomogram, rlnTomoSizeX/Y/Z, rlnTomoTomogramBinning and rlnCtfScalefactor.
    """
    from tiltflow.steps.reconstruct import ReconstructOptions, run

    opts = ReconstructOptions(pixel_size=pixel_size, thickness_nm=thickness, method=method,
                              iterations=iterations, halves=halves, slab=slab, device=device)
    typer.echo(str(run(in_star, outdir, opts)))
