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
    ctf_correction: str = typer.Option(
        "phaseflip", "--ctf-correction",
        help="none, phaseflip (strips along the tilt axis, as IMOD ctfphaseflip), wiener (Wiener-like filter) "
             "or 3d (each z-slab at its own defocus, as novaCTF/Warp)."),
    dose_weighting: bool = typer.Option(
        True, "--dose-weighting/--no-dose-weighting",
        help="Weight each tilt by RELION's critical-exposure curve at its rlnMicrographPreExposure."),
    defocus_step: float = typer.Option(
        0.0, "--defocus-step", min=0.0,
        help="Largest defocus change (A) between corrected strips/slabs; 0 = automatic (pi/4 at Nyquist)."),
    wiener_snr: float = typer.Option(100.0, "--wiener-snr", min=1e-6, help="wiener: SNR at low resolution."),
    wiener_falloff: float = typer.Option(
        100.0, "--wiener-falloff", min=0.0, help="wiener: SNR(k) = snr * exp(-falloff * k), falloff in A."),
) -> None:
    """Reconstruct the tomogram (weighted back-projection or SIRT) at the target pixel size.

    Writes rec_<name>.mrc (+ _half1/_half2 from even/odd stacks) and <name>.star with RELION 5's
    rlnTomoReconstructedTomogram, rlnTomoSizeX/Y/Z, rlnTomoTomogramBinning and rlnCtfScalefactor.
    The images are CTF-corrected (default: phase flipping) and exposure-weighted first.
    """
    from tiltflow.steps.reconstruct import ReconstructOptions, run

    opts = ReconstructOptions(pixel_size=pixel_size, thickness_nm=thickness, method=method,
                              iterations=iterations, halves=halves, slab=slab, device=device,
                              ctf_correction=ctf_correction, dose_weighting=dose_weighting,
                              defocus_step=defocus_step, wiener_snr=wiener_snr, wiener_falloff=wiener_falloff)
    typer.echo(str(run(in_star, outdir, opts)))
