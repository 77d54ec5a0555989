"""``tiltflow align``: option parsing only; the work is in ``tiltflow.steps.align``."""

from __future__ import annotations

from pathlib import Path

import typer

from tiltflow.commands.options import build, option, project_root, root_option, shown
from tiltflow.steps.align import Options
from tiltflow.steps.common import run_star_step


def main(
    in_star: Path = typer.Argument(..., help="Per-tilt-series STAR file from the stack step."),
    outdir: Path = typer.Option(Path("align"), "--outdir", help="Step folder; writes <outdir>/<name>/."),
    root: Path | None = root_option(),
    backend: str = option(Options, "backend"),
    executable: str | None = option(Options, "executable"),
    thickness: float = option(Options, "thickness"),
    tilt_axis: float | None = option(Options, "tilt_axis"),
    refine_axis: bool = option(Options, "refine_axis"),
    dark_tol: float = option(Options, "dark_tol"),
    bin: float | None = option(Options, "bin"),
    patches: tuple[int, int] | None = option(Options, "patches"),
    gpu: str = option(Options, "gpu"),
    device: str = option(Options, "device"),
    extra_args: str = option(Options, "extra_args"),
) -> None:
    """Align the tilt series: shifts, tilt axis and tilt offset in RELION 5's model.

    Writes <name>.aln (AreTomo), <name>.xf/.tlt (IMOD) and <name>.star with rlnTomoXTilt, rlnTomoYTilt,
    rlnTomoZRot, rlnTomoXShiftAngst and rlnTomoYShiftAngst; dark tilts are dropped.
    """
    root = project_root(root)
    typer.echo(shown(run_star_step("align", in_star, outdir, build(Options, locals()), root), root))
