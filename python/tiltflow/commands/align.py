"""``tiltflow align``: option parsing only; the work is in ``tiltflow.steps.align``."""

from __future__ import annotations

from pathlib import Path

import typer


def main(
    in_star: Path = typer.Argument(..., help="Per-tilt-series STAR file from the stack step."),
    outdir: Path = typer.Option(Path("align"), "--outdir", help="Step folder; writes <outdir>/<name>/."),
    backend: str = typer.Option("builtin", "--backend", help="builtin, aretomo2 or aretomo3."),
    executable: str = typer.Option(None, "--executable", help="AreTomo2/3 executable (default: on PATH)."),
    thickness: float = typer.Option(300.0, "--thickness", min=1.0, help="Specimen thickness in nm (AlignZ)."),
    tilt_axis: float = typer.Option(None, "--tilt-axis", help="Starting tilt-axis angle (deg); default: the mdoc's."),
    refine_axis: bool = typer.Option(True, "--refine-axis/--no-refine-axis", help="Refine the tilt-axis angle."),
    dark_tol: float = typer.Option(0.7, "--dark-tol", help="AreTomo's DarkTol (<=0 or >=1: keep dark tilts)."),
    bin: float = typer.Option(None, "--bin", help="Binning of the stack for the final refinement (AreTomo: -OutBin)."),
    patches: tuple[int, int] = typer.Option((0, 0), "--patches", help="Local alignment patches X Y (AreTomo)."),
    gpu: str = typer.Option("0", "--gpu", help="GPU ids for AreTomo, e.g. '0 1'."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N (builtin)."),
    extra_args: str = typer.Option("", "--extra-args", help="Passed verbatim to AreTomo."),
) -> None:
    """Align the tilt series: shifts, tilt axis and tilt offset in RELION 5's model.

    Writes <name>.aln (AreTomo), <name>.xf/.tlt (IMOD) and <name>.star with rlnTomoXTilt, rlnTomoYTilt,
    rlnTomoZRot, rlnTomoXShiftAngst and rlnTomoYShiftAngst; dark tilts are dropped.
    """
    from tiltflow.steps.align import AlignOptions, run

    opts = AlignOptions(
        backend=backend, executable=executable, thickness_nm=thickness, tilt_axis=tilt_axis,
        refine_axis=refine_axis, dark_tol=dark_tol, bin=bin,
        patches=None if tuple(patches) == (0, 0) else (int(patches[0]), int(patches[1])),
        gpu=gpu, device=device, extra_args=extra_args,
    )
    typer.echo(str(run(in_star, outdir, opts)))
