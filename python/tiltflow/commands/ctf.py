"""``tiltflow ctf``: option parsing only; the work is in ``tiltflow.steps.ctf``."""

from __future__ import annotations

from pathlib import Path

import typer


def main(
    in_star: Path = typer.Argument(..., help="The tilt series' STAR file (from motioncor)."),
    outdir: Path = typer.Option(Path("ctf"), "--outdir", help="Step folder: writes OUTDIR/<name>/<name>.star."),
    backend: str = typer.Option("builtin", "--backend", help="builtin (torch, CPU or GPU), ctffind4 or ctffind5."),
    executable: str | None = typer.Option(
        None, "--executable", help="CTFFIND program (default: $TILTFLOW_CTFFIND, $RELION_CTFFIND_EXECUTABLE, PATH)."),
    box: int = typer.Option(512, "--box", help="Spectrum box in pixels (at the fitting pixel)."),
    res_min: float = typer.Option(30.0, "--res-min", help="Lowest resolution fitted (A)."),
    res_max: float = typer.Option(5.0, "--res-max", help="Highest resolution fitted (A) at zero dose."),
    defocus_range: float = typer.Option(
        2.0, "--defocus-range", help="Search half-width around each tilt's nominal defocus (um)."),
    defocus_step: float = typer.Option(100.0, "--defocus-step", help="Defocus search step (A)."),
    astigmatism_restraint: float | None = typer.Option(
        None, "--astigmatism-restraint", help="Expected astigmatism (A): larger values are penalised."),
    phase_shift: bool = typer.Option(
        False, "--phase-shift/--no-phase-shift", help="Also fit a phase shift (phase-plate data)."),
    slow_search: bool = typer.Option(
        False, "--slow-search/--fast-search", help="CTFFIND's slower, exhaustive 2-D initial search."),
    dose_res_factor: float = typer.Option(
        100.0, "--dose-res-factor",
        help="Highest resolution fitted = res-max * exp(pre-exposure / this) (e/A^2); 0 = off."),
    series_prior: float = typer.Option(
        0.05, "--series-prior",
        help="Spread (s.d., um) of each exposure's defocus about a smooth trend through the acquisition: "
             "tilts without clear rings follow the trend (built-in backend); 0 = every tilt on its own, as "
             "RELION's CtfFind."),
    astigmatism: str = typer.Option(
        "series", "--astigmatism",
        help="series: one astigmatism (from the best tilts) for all tilts, as it is a property of the "
             "microscope; per-tilt: fitted on every tilt, as CTFFIND does (built-in backend)."),
    png: str = typer.Option("all", "--png", help="Diagnostic PNGs: all, none, or tilt numbers like 1,5,9."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N (built-in backend)."),
    extra_args: str = typer.Option("", "--extra-args", help="Passed verbatim to CTFFIND's command line."),
) -> None:
    """Estimate defocus, astigmatism and fit resolution of every tilt (as RELION's CtfFind job).

    Writes <outdir>/<name>/<name>.star with rlnDefocusU/V, rlnDefocusAngle, rlnCtfAstigmatism,
    rlnCtfFigureOfMerit, rlnCtfMaxResolution, rlnCtfImage; per tilt <root>_PS.ctf (diagnostic MRC),
    <root>_ctf.png, and CTFFIND's <root>_PS.txt and _avrot.txt in <outdir>/<name>/frames/.
    """
    from tiltflow.steps.ctf import CtfOptions, run_from_star

    options = CtfOptions(
        backend=backend, executable=executable, box=box, res_min=res_min, res_max=res_max,
        defocus_range=defocus_range, defocus_step=defocus_step, astigmatism_restraint=astigmatism_restraint,
        phase_shift=phase_shift, slow_search=slow_search, dose_res_factor=dose_res_factor,
        series_prior=series_prior, astigmatism=astigmatism, png=png,
        device=device, extra_args=extra_args,
    )
    out = run_from_star(in_star, outdir, options)
    typer.echo(str(out))
