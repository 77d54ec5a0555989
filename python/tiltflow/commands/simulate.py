"""``tiltflow simulate OUT``: write a synthetic SerialEM session with its ground truth (option parsing only)."""

from __future__ import annotations

from pathlib import Path

import typer

_P = "Preset values are used for options not given (see tiltflow.simulate.config.PRESETS)."


def main(
    out: Path = typer.Argument(..., help="Folder to write the session into (movies, mdocs, gain, ground truth)."),
    preset: str = typer.Option("demo", "--preset", help="demo (41 x 1024^2, 8 frames), demo-ctf (the demo at 6-8 um defocus), test (21 x 256^2) or tiny (11 x 128^2)."),
    n_series: int | None = typer.Option(None, "--n-series", help="Number of tilt series."),
    tilt_min: float | None = typer.Option(None, "--tilt-min", help="Lowest tilt angle (degrees)."),
    tilt_max: float | None = typer.Option(None, "--tilt-max", help="Highest tilt angle (degrees)."),
    tilt_step: float | None = typer.Option(None, "--tilt-step", help="Tilt increment (degrees)."),
    scheme: str | None = typer.Option(None, "--scheme", help="dose-symmetric, bidirectional or unidirectional."),
    group_size: int | None = typer.Option(None, "--group-size", help="Hagen group size (dose-symmetric)."),
    start_angle: float | None = typer.Option(None, "--start-angle", help="First tilt of dose-symmetric/bidirectional schemes."),
    size: str | None = typer.Option(None, "--size", help="Movie size in pixels: N or WxH."),
    frames: int | None = typer.Option(None, "--frames", help="Frames per movie."),
    dose_per_tilt: float | None = typer.Option(None, "--dose-per-tilt", help="Dose per tilt (e/A^2)."),
    pixel_size: float | None = typer.Option(None, "--pixel-size", help="Movie pixel size (A)."),
    movie_format: str | None = typer.Option(None, "--movie-format", help="tiff or mrc."),
    tiff_compression: str | None = typer.Option(None, "--tiff-compression", help="lzw (SerialEM's default), zlib or none."),
    gain_rotate: int | None = typer.Option(None, "--gain-rotate", help="MotionCor -RotGain the written gain needs (0-3)."),
    gain_flip: int | None = typer.Option(None, "--gain-flip", help="MotionCor -FlipGain the written gain needs (0-2)."),
    tilt_axis: float | None = typer.Option(None, "--tilt-axis", help="Tilt-axis angle (degrees, RELION rlnTomoZRot)."),
    tilt_offset: float | None = typer.Option(None, "--tilt-offset", help="Constant true-minus-nominal angle (degrees)."),
    tilt_error: float | None = typer.Option(None, "--tilt-error", help="S.d. of random true-minus-nominal angle errors (degrees)."),
    defocus_min: float | None = typer.Option(None, "--defocus-min", help="Least underfocus (um)."),
    defocus_max: float | None = typer.Option(None, "--defocus-max", help="Most underfocus (um)."),
    astigmatism: float | None = typer.Option(None, "--astigmatism", help="Astigmatism |U - V| (um)."),
    thickness: float | None = typer.Option(None, "--thickness", help="Specimen slab thickness (nm)."),
    hand: int | None = typer.Option(None, "--hand", help="Sense of the defocus gradient, 1 or -1 (RELION rlnTomoHand)."),
    seed: int | None = typer.Option(None, "--seed", help="Random seed: the same seed gives the same bytes."),
    dark_tilts: int | None = typer.Option(None, "--dark-tilts", help="Make the last N acquired tilts nearly black."),
    shift_sigma: float | None = typer.Option(None, "--shift-sigma", help="S.d. of per-tilt specimen shifts (pixels)."),
    drift: float | None = typer.Option(None, "--drift", help="Typical drift path within one movie (pixels)."),
    bfactor: float | None = typer.Option(None, "--bfactor", help="B-factor envelope (A^2)."),
    damage: bool | None = typer.Option(None, "--damage/--no-damage", help="Apply the exposure (radiation damage) filter."),
    mean_free_path: float | None = typer.Option(None, "--mean-free-path", help="Inelastic mean free path (nm); 0 = no loss."),
    contrast: float | None = typer.Option(None, "--contrast", help="Multiplies the specimen's phase contrast."),
    ice: float | None = typer.Option(None, "--ice", help="Multiplies the amorphous-ice texture (0 = none)."),
    crowding: float | None = typer.Option(None, "--crowding", help="Volume fraction of small background proteins."),
    particles: int | None = typer.Option(None, "--particles", help="Particles in the tomogram box (default: typical density)."),
    vesicles: int | None = typer.Option(None, "--vesicles", help="Lipid vesicles in the tomogram box."),
    filaments: int | None = typer.Option(None, "--filaments", help="Actin-like filaments in the tomogram box."),
    gold: int | None = typer.Option(None, "--gold", help="10 nm gold beads in the tomogram box."),
    bad_pixels: int | None = typer.Option(None, "--bad-pixels", help="Detector pixels of low sensitivity."),
    frames_subdir: str | None = typer.Option(None, "--frames-subdir", help="Write movies into OUT/NAME instead of OUT."),
    session_name: str | None = typer.Option(None, "--session-name", help="Session folder name in SubFramePath (default: OUT's name)."),
    threads: int | None = typer.Option(None, "--threads", help="Tilts rendered in parallel (0 = up to 4 cores)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a session simulated earlier into OUT."),
    playback: bool = typer.Option(False, "--playback", help="Write the session as SerialEM does while collecting."),
    pace: float = typer.Option(10.0, "--pace", min=0, help="With --playback: seconds between images (a series gets one every N x pace with --interleave N)."),
    interleave: int = typer.Option(1, "--interleave", min=1, help="With --playback: series collected together (PACEtomo)."),
) -> None:
    """Write a synthetic SerialEM session (movies, mdocs, gain) with ground truth.

    The specimen (particles, filaments, vesicles, gold, ice) is projected analytically with RELION 5's
    geometry, imaged through a depth-dependent CTF, split into drifting frames and counted with Poisson
    noise through a detector whose gain reference is written next to the movies. ``ground_truth.json``
    records every angle, shift, defocus and drift. Preset values are used for options not given.

    With --playback the files appear in real-time order (movie, then its mdoc section; --interleave N
    series in turn, as PACEtomo collects), --pace seconds apart, for ``tiltflow watch``.
    """
    import time

    from tiltflow.errors import TiltflowError
    from tiltflow.simulate import make_config, simulate_session
    from tiltflow.simulate.session import prepare_output

    cfg = make_config(
        preset, n_series=n_series, tilt_min=tilt_min, tilt_max=tilt_max, tilt_step=tilt_step, scheme=scheme,
        group_size=group_size, start_angle=start_angle, size=size, frames=frames, dose_per_tilt=dose_per_tilt,
        pixel_size=pixel_size, movie_format=movie_format, tiff_compression=tiff_compression, gain_rotate=gain_rotate,
        gain_flip=gain_flip, tilt_axis=tilt_axis, tilt_offset=tilt_offset, tilt_error=tilt_error,
        defocus_min=defocus_min, defocus_max=defocus_max, astigmatism=astigmatism, thickness=thickness, hand=hand,
        seed=seed, dark_tilts=dark_tilts, shift_sigma=shift_sigma, drift=drift, bfactor=bfactor, damage=damage,
        mean_free_path=mean_free_path, contrast=contrast, ice=ice, crowding=crowding, particles=particles,
        vesicles=vesicles, filaments=filaments, gold=gold, bad_pixels=bad_pixels, frames_subdir=frames_subdir,
        session_name=session_name, threads=threads,
    )
    if out.exists() and not out.is_dir():
        raise TiltflowError("output exists and is not a folder", out)
    prepare_output(out, overwrite)
    t0 = time.perf_counter()
    if playback:
        from tiltflow.simulate.playback import simulate_playback

        truth = simulate_playback(cfg, out, pace=pace, interleave=interleave)
    else:
        truth = simulate_session(cfg, out)
    n = sum(len(s.tilts) for s in truth.series)
    typer.echo(f"simulated {len(truth.series)} tilt series ({n} movies of {cfg.width}x{cfg.height} x {cfg.frames} "
               f"frames, {cfg.pixel_size:g} A/px) in {time.perf_counter() - t0:.1f} s -> {out}")
