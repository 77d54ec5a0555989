"""``tiltflow gain GAIN``: prepare the gain reference (orientation, counting size, bad pixels)."""

from __future__ import annotations

from pathlib import Path

import typer


def main(
    gain: Path = typer.Argument(..., help="Gain reference: MRC, TIFF, EER .gain or DM4 (K2/K3)."),
    outdir: Path = typer.Option(Path("gain"), "--outdir", help="Output folder; writes OUTDIR/gain.mrc."),
    rotate: int = typer.Option(
        0, "--rotate", min=0, max=3, help="Rotate counter-clockwise by N*90 deg (MotionCor -RotGain)."
    ),
    flip: int = typer.Option(
        0, "--flip", min=0, max=2, help="Then flip: 1 upside down, 2 left-right (MotionCor -FlipGain)."
    ),
    serialem_rf: int | None = typer.Option(
        None,
        "--serialem-rf",
        min=0,
        max=7,
        help="SerialEM r/f value (frame title 'r/f N', mdoc RotationAndFlip) instead of --rotate/--flip.",
    ),
    movie: Path | None = typer.Option(
        None,
        "--movie",
        help="One movie of the session: checks the shape, decides --counting, checks orientation.",
    ),
    counting: bool | None = typer.Option(
        None,
        "--counting/--no-counting",
        help="Bin a super-resolution (K3) gain 2x2 to counting size. Default: decide from --movie.",
    ),
    invert: bool = typer.Option(
        False, "--invert/--no-invert", help="Use mean/gain (divide-type references; MotionCor -InvGain)."
    ),
) -> None:
    """Prepare the gain reference: orient it like the movies, bin K3 super-resolution, fix bad pixels.

    Writes OUTDIR/gain.mrc (float32, multiplicative: corrected = raw * gain, like MotionCor's -Gain),
    gain.json, defects.mrc when there were bad pixels, and console.log/error.log.
    """
    from tiltflow.steps.gain import prepare_gain

    res = prepare_gain(
        gain,
        outdir,
        rotate=rotate,
        flip=flip,
        serialem_rf=serialem_rf,
        movie=movie,
        counting=counting,
        invert=invert,
    )
    typer.echo(res.output)
