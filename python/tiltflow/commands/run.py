"""``tiltflow run``: option parsing only; the work is in ``tiltflow.runner``.

Every option is ``None`` unless given, so that a params file (Nextflow's keys) fills what the command line
leaves out; see ``tiltflow.runner.params``.
"""

from __future__ import annotations

from pathlib import Path

import typer


def main(
    session: Path = typer.Argument(None, help="SerialEM session folder (its *.mdoc), one mdoc or a quoted mdoc glob; default: params 'input'."),
    outdir: Path = typer.Option(None, "--outdir", "-o", help="Results folder (default: params 'outdir', else results)."),
    params_file: Path = typer.Option(None, "--params-file", help="YAML/JSON with Nextflow's parameter names."),
    jobs: int = typer.Option(1, "--jobs", "-j", min=1, help="Tilt series in parallel on the CPU (GPU: one per GPU)."),
    force: str = typer.Option(None, "--force", help="Re-run this step (and every later one) even if up to date."),
    gain: Path = typer.Option(None, "--gain", help="Gain reference (MRC, TIFF, EER .gain, DM4)."),
    gain_rotate: int = typer.Option(None, "--gain-rotate", min=0, max=3, help="Rotate the gain N*90 deg (-RotGain)."),
    gain_flip: int = typer.Option(None, "--gain-flip", min=0, max=2, help="Flip: 1 upside down, 2 left-right."),
    gain_serialem_rf: int = typer.Option(None, "--gain-serialem-rf", min=0, max=7, help="SerialEM r/f value."),
    frames: Path = typer.Option(None, "--frames", help="Folder holding the movies (default: the session)."),
    device: str = typer.Option(None, "--device", help="auto, cpu, cuda or cuda:N."),
    motioncor_backend: str = typer.Option(None, "--motioncor-backend", help="builtin, motioncor2 or motioncor3."),
    ctf_backend: str = typer.Option(None, "--ctf-backend", help="builtin, ctffind4 or ctffind5."),
    align_backend: str = typer.Option(None, "--align-backend", help="builtin, aretomo2 or aretomo3."),
    stack_backend: str = typer.Option(None, "--stack-backend", help="builtin or imod."),
    kv: float = typer.Option(None, "--kv", help="Voltage in kV (default: the mdoc's Voltage, else 300)."),
    cs: float = typer.Option(None, "--cs", help="Spherical aberration in mm (default 2.7)."),
    amp_contrast: float = typer.Option(None, "--amp-contrast", help="Amplitude contrast (default 0.1)."),
    tilt_axis: float = typer.Option(None, "--tilt-axis", help="Tilt-axis angle in degrees (overrides the mdoc)."),
    dose_per_tilt: float = typer.Option(None, "--dose-per-tilt", help="Dose per tilt in e/A^2 (overrides the mdoc)."),
    hand: int = typer.Option(None, "--hand", help="rlnTomoHand: -1 (default) or 1."),
    exclude_tilts: str = typer.Option(None, "--exclude-tilts", help="Tilts to drop, e.g. 'TS_01:3,4'."),
    keep_tilts: str = typer.Option(None, "--keep-tilts", help="Tilts to keep despite the automatic checks."),
    thickness: float = typer.Option(None, "--thickness", help="Specimen/tomogram thickness in nm (default 300)."),
    rec_pixel_size: float = typer.Option(None, "--rec-pixel-size", help="Tomogram pixel size in A (default 10)."),
    rec_method: str = typer.Option(None, "--rec-method", help="wbp or sirt."),
    rec_ctf_correction: str = typer.Option(
        None, "--rec-ctf-correction", help="none, phaseflip (default), wiener or 3d."),
    rec_dose_weighting: bool = typer.Option(
        None, "--rec-dose-weighting/--no-rec-dose-weighting", help="Exposure weighting per tilt (default on)."),
    mc_throw: int = typer.Option(None, "--mc-throw", help="Drop the first N frames of each movie."),
    mc_trunc: int = typer.Option(None, "--mc-trunc", help="Drop the last N frames of each movie."),
    mc_bin: float = typer.Option(None, "--mc-bin", help="Motion-correction binning (default 1)."),
    mc_patches: str = typer.Option(None, "--mc-patches", help="Local motion patches 'X Y'."),
    even_odd: bool = typer.Option(None, "--even-odd/--no-even-odd", help="Even/odd sums and half tomograms."),
    mc_skip_bad_movies: bool = typer.Option(
        None, "--skip-bad-movies/--no-skip-bad-movies",
        help="A missing, truncated or unreadable movie excludes its tilt instead of stopping the series."),
    stack_bin: int = typer.Option(None, "--stack-bin", help="Stack binning (default 1)."),
) -> None:
    """Run the whole pipeline on one machine: the same steps and layout as the Nextflow pipeline, with resume.

    Settings: defaults < --params-file (Nextflow's keys, e.g. mc_throw: 1) < these options. A step is
    skipped when its outputs are complete and its inputs and options are unchanged.
    """
    params = run_params(dict(locals()))
    from rich.console import Console

    from tiltflow.runner.pipeline import run_pipeline

    console = Console(stderr=True)
    if not console.is_terminal:  # a log file: room for the summary table's paths
        console = Console(stderr=True, width=160)
    result = run_pipeline(params.input, params.outdir, params, jobs=jobs, force=force, console=console)
    if result.failures:
        for line in result.failures:
            typer.echo(f"tiltflow run: {line}", err=True)
        typer.echo(f"tiltflow run: {len(result.failures)} failure(s); results in {result.root}", err=True)
        raise typer.Exit(1)
    typer.echo(str(result.root / "relion" / "tomograms.star"))


#: the options of main() that are not run parameters
_NOT_PARAMS = ("session", "outdir", "params_file", "jobs", "force")


def run_params(opts: dict, not_params: tuple[str, ...] = _NOT_PARAMS):
    """RunParams from main()'s options (also ``tiltflow watch``'s): defaults < params file < options."""
    from tiltflow.errors import TiltflowError
    from tiltflow.runner.params import load_params

    given = {k: v for k, v in opts.items() if k not in not_params}
    for key in ("gain", "frames"):
        given[key] = str(Path(given[key]).resolve()) if given.get(key) else None
    session, outdir = opts.get("session"), opts.get("outdir")
    given.update(input=str(session) if session else None, outdir=str(outdir) if outdir else None)
    params = load_params(opts.get("params_file"), given)
    if not params.input:
        raise TiltflowError("no session given: pass SESSION or set 'input' in the params file")
    return params
