"""``tiltflow ctf``: option parsing only; the work is in ``tiltflow.steps.ctf``."""

from __future__ import annotations

from pathlib import Path

import typer

from tiltflow.commands.options import build, option, project_root, root_option, shown
from tiltflow.steps.common import run_star_step
from tiltflow.steps.ctf import Options


def main(
    in_star: Path = typer.Argument(..., help="The tilt series' STAR file (from motioncor)."),
    outdir: Path = typer.Option(Path("ctf"), "--outdir", help="Step folder: writes OUTDIR/<name>/<name>.star."),
    root: Path | None = root_option(),
    backend: str = option(Options, "backend"),
    executable: str | None = option(Options, "executable"),
    box: int = option(Options, "box"),
    res_min: float = option(Options, "res_min"),
    res_max: float = option(Options, "res_max"),
    defocus_range: float = option(Options, "defocus_range"),
    defocus_step: float = option(Options, "defocus_step"),
    astigmatism_restraint: float | None = option(Options, "astigmatism_restraint"),
    phase_shift: bool = option(Options, "phase_shift"),
    slow_search: bool = option(Options, "slow_search"),
    dose_res_factor: float = option(Options, "dose_res_factor"),
    series_prior: float = option(Options, "series_prior"),
    astigmatism: str = option(Options, "astigmatism"),
    png: str = option(Options, "png"),
    device: str = option(Options, "device"),
    extra_args: str = option(Options, "extra_args"),
) -> None:
    """Estimate defocus, astigmatism and fit resolution of every tilt (as RELION's CtfFind job).

    Writes <outdir>/<name>/<name>.star with rlnDefocusU/V, rlnDefocusAngle, rlnCtfAstigmatism,
    rlnCtfFigureOfMerit, rlnCtfMaxResolution, rlnCtfImage; per tilt <root>_PS.ctf (diagnostic MRC),
    <root>_ctf.png, and CTFFIND's <root>_PS.txt and _avrot.txt in <outdir>/<name>/frames/.
    """
    root = project_root(root)
    typer.echo(shown(run_star_step("ctf", in_star, outdir, build(Options, locals()), root), root))
