"""Prepare the gain reference once per session: orientation, K3 counting size, bad pixels, shape check.

Output ``<outdir>/gain.mrc``: float32, multiplicative (``corrected = raw * gain``, as MotionCor's -Gain),
already in the movies' orientation, so motion correction (built-in or MotionCor with no -RotGain/-FlipGain)
uses it as is. Also ``gain.json`` (what was done, for the report), ``defects.mrc`` (1 = pixel that had no
usable gain; only when there were any) and ``console.log``/``error.log``.

Bad pixels: zero, negative and non-finite values are counted and replaced by the median of the valid
pixels (of every k-th row when there are over 4 M pixels: the exact median of a K3 reference takes 6 s). A dead pixel then stays zero after correction (0 * median); RELION and MotionCor treat such pixels
as defects, so ``defects.mrc`` lists them for the motion-correction step (MotionCor's -DefectMap format).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from tiltflow.atomic import write_json
from tiltflow.errors import TiltflowError
from tiltflow.io import gain as G
from tiltflow.io.mrc import write_mrc
from tiltflow.steplog import step_logs
from tiltflow.steps.common import at_root, option, root_relative_logs

log = logging.getLogger("tiltflow.gain")

#: z-score above which the movie clearly shows which orientation of the gain is right
ORIENTATION_Z = 8.0
#: frames summed from ``--movie`` for the orientation check (bounded time and memory)
CHECK_FRAMES = 40


@dataclass
class GainResult:
    """What the gain step did (also written to ``gain.json``)."""

    input: str
    input_format: str
    input_shape: tuple[int, int]  # (h, w) as read
    rotate: int
    flip: int
    serialem_rf: int | None
    inverted: bool
    counting_shrink: bool
    output: str
    output_shape: tuple[int, int]
    n_zero: int
    n_negative: int
    n_nonfinite: int
    replacement: float
    mean: float
    min: float
    max: float
    pixel_size: float
    movie: str | None = None
    movie_shape: tuple[int, int] | None = None
    orientation_scores: list[tuple[int, int, float]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def n_bad(self) -> int:
        """Gain pixels that are zero, negative or not finite."""
        return self.n_zero + self.n_negative + self.n_nonfinite

    def summary(self) -> str:
        """One line for the log."""
        h, w = self.output_shape
        ih, iw = self.input_shape
        parts = [f"gain {Path(self.input).name} ({self.input_format} {iw}x{ih})"]
        parts.append(f"rotate {self.rotate} flip {self.flip}")
        if self.serialem_rf is not None:
            parts.append(f"(SerialEM r/f {self.serialem_rf})")
        if self.counting_shrink:
            parts.append("binned 2x2 to counting size")
        if self.inverted:
            parts.append("inverted")
        parts.append(f"-> {w}x{h} mean {self.mean:.4g} [{self.min:.4g}, {self.max:.4g}]")
        parts.append(
            f"bad pixels {self.n_bad} (zero {self.n_zero}, negative {self.n_negative}, "
            f"non-finite {self.n_nonfinite}) replaced by {self.replacement:.4g}"
        )
        return ", ".join(parts)


@dataclass(frozen=True)
class Options:
    """The gain step's options (``tiltflow gain``): MotionCor's gain codes, or SerialEM's r/f value."""

    rotate: int = option(0, "Rotate counter-clockwise by N*90 deg (MotionCor -RotGain).", min=0, max=3)
    flip: int = option(0, "Then flip: 1 upside down, 2 left-right (MotionCor -FlipGain).", min=0, max=2)
    serialem_rf: int | None = option(
        None, "SerialEM r/f value (frame title 'r/f N', mdoc RotationAndFlip) instead of --rotate/--flip.",
        min=0, max=7)
    movie: Path | None = option(None, "One movie of the session: checks the shape, decides --counting, checks "
                                      "orientation.")
    counting: bool | None = option(None, "Bin a super-resolution (K3) gain 2x2 to counting size. Default: decide "
                                         "from --movie.", flag="--counting/--no-counting")
    invert: bool = option(False, "Use mean/gain (divide-type references; MotionCor -InvGain).")
    #: super-resolution shapes recognised without a movie (K3; tests pass a small analogue)
    superres_shapes: tuple[tuple[int, int], ...] = G.K3_SUPERRES_SHAPES

    def validate(self) -> None:
        """Reject gain codes MotionCor does not have before the gain is read."""
        if self.rotate not in (0, 1, 2, 3):
            raise TiltflowError(f"--rotate must be 0-3, got {self.rotate}")
        if self.flip not in (0, 1, 2):
            raise TiltflowError(f"--flip must be 0-2, got {self.flip}")
        if self.serialem_rf is not None and not 0 <= self.serialem_rf <= 7:
            raise TiltflowError(f"--serialem-rf must be 0-7, got {self.serialem_rf}")


def run_session(gain_path: str | Path, outdir: str | Path, options: Options, root: str | Path) -> GainResult:
    """Run the gain step with logs in ``outdir`` (relative paths relative to ``root``); return what was done.

    ``counting``: True bins 2x2, False never, None decides: bin when ``movie`` frames are half the
    oriented gain in both axes; without a movie, keep the size and warn for a known super-resolution
    shape (``superres_shapes``).
    """
    options.validate()
    o = options
    movie = at_root(o.movie, root) if o.movie is not None else None
    with step_logs("gain", at_root(outdir, root)), root_relative_logs(root):
        res = _prepare(at_root(gain_path, root), Path(outdir), Path(root), o.rotate, o.flip, o.serialem_rf, movie,
                       o.counting, o.invert, o.superres_shapes)
        log.info("%s", res.summary())
    return res


def _prepare(
    gain_path, named_outdir, root, rotate, flip, serialem_rf, movie, counting, invert, superres_shapes
) -> GainResult:
    """``named_outdir`` as given (relative to ``root`` or absolute): gain.json names the output with it."""
    outdir = at_root(named_outdir, root)
    warnings: list[str] = []
    movie_path = Path(movie) if movie is not None else None
    movie_shape = None
    movie_pixel = None
    if movie_path is not None:
        from tiltflow.io.movies import open_movie

        with open_movie(movie_path) as m:
            movie_shape, movie_pixel = m.shape, m.pixel_size
        log.info(
            "movie %s: %d frames of %dx%d (%s)", movie_path, m.n_frames, m.shape[1], m.shape[0], m.format
        )

    if serialem_rf is not None:
        if rotate or flip:
            raise TiltflowError("give either --serialem-rf or --rotate/--flip, not both", gain_path)
        rotate, flip = G.serialem_rf_to_rotate_flip(serialem_rf)
        log.info("SerialEM r/f %d = MotionCor -RotGain %d -FlipGain %d", serialem_rf, rotate, flip)

    img = G.read_gain_file(gain_path)
    raw = img.data
    log.info(
        "read %s gain %s: %dx%d, pixel size %s",
        img.format,
        gain_path,
        raw.shape[1],
        raw.shape[0],
        f"{img.pixel_size:.4g} A" if img.pixel_size else "not recorded",
    )

    # bad pixels, counted on the input and replaced before any averaging
    nonfinite = ~np.isfinite(raw)
    zero = raw == 0
    negative = raw < 0
    bad = nonfinite | zero | negative
    n_bad = int(bad.sum())
    if n_bad == raw.size:
        raise TiltflowError("gain reference has no positive finite pixel", gain_path)
    replacement = _median_of_valid(raw, bad)
    data = raw.copy()
    data[bad] = np.float32(replacement)
    if n_bad:
        msg = (
            f"{n_bad} bad gain pixels ({int(zero.sum())} zero, {int(negative.sum())} negative, "
            f"{int(nonfinite.sum())} non-finite) replaced by the median {replacement:.4g}"
        )
        log.warning("%s", msg)
        warnings.append(msg)

    input_shape = tuple(raw.shape)
    in_format, in_pixel = img.format, img.pixel_size
    del raw, img  # a K3 super-resolution reference is 377 MB: keep one copy
    if invert:
        data = (np.float32(data.mean()) / data).astype(np.float32)
        log.info("inverted the gain (mean/gain, as RELION does for divide-type references)")

    unoriented = data
    data = G.orient_gain(unoriented, rotate, flip)
    bad_oriented = G.orient_gain(bad, rotate, flip)

    shrink = _decide_shrink(data.shape, movie_shape, counting, superres_shapes, warnings, gain_path)
    if shrink:
        data = G.shrink2(data)
        bh, bw = bad_oriented.shape
        bad_oriented = bad_oriented.reshape(bh // 2, 2, bw // 2, 2).any(axis=(1, 3))
        log.info("binned the super-resolution gain 2x2 (mean) to %dx%d", data.shape[1], data.shape[0])

    scores: list[tuple[int, int, float]] = []
    if movie_path is not None:
        if data.shape != movie_shape:
            scores = _scores_for(unoriented, shrink, movie_path, movie_shape)
            raise TiltflowError(_mismatch_message(data.shape, movie_shape, rotate, scores), gain_path)
        scores = _scores_for(unoriented, shrink, movie_path, movie_shape)
        _check_orientation(scores, rotate, flip, warnings)

    mean = float(data.mean())
    if not 0.05 < mean < 20:
        msg = (
            f"gain mean is {mean:.4g}: a multiplicative gain is normally ~1; if this is a flat field "
            "(counts) rather than a gain, use --invert"
        )
        log.warning("%s", msg)
        warnings.append(msg)

    pixel = movie_pixel or ((in_pixel * (2 if shrink else 1)) if in_pixel else 0.0)
    out = outdir / "gain.mrc"
    if bad_oriented.any():
        write_mrc(outdir / "defects.mrc", bad_oriented.astype(np.int8), pixel)
    write_mrc(out, data, pixel, dtype=np.float32)
    res = GainResult(
        input=str(gain_path),
        input_format=in_format,
        input_shape=input_shape,
        rotate=rotate,
        flip=flip,
        serialem_rf=serialem_rf,
        inverted=invert,
        counting_shrink=shrink,
        output=str(named_outdir / "gain.mrc"),
        output_shape=tuple(data.shape),
        n_zero=int((zero & ~nonfinite).sum()),
        n_negative=int(negative.sum()),
        n_nonfinite=int(nonfinite.sum()),
        replacement=replacement,
        mean=mean,
        min=float(data.min()),
        max=float(data.max()),
        pixel_size=float(pixel),
        movie=str(movie_path) if movie_path else None,
        movie_shape=movie_shape,
        orientation_scores=scores,
        warnings=warnings,
    )
    write_json(outdir / "gain.json", asdict(res))
    return res


def _median_of_valid(img: np.ndarray, bad: np.ndarray, max_pixels: int = 1 << 22) -> float:
    """Median of the valid pixels; of every k-th row for references over ``max_pixels`` (K3: 94 M pixels)."""
    step = max(1, int(np.ceil(img.size / max_pixels)))
    return float(np.median(img[::step][~bad[::step]]))


def _decide_shrink(shape, movie_shape, counting, superres_shapes, warnings, path) -> bool:
    h, w = shape
    if counting is False:
        return False
    if counting is True:
        if h % 2 or w % 2:
            raise TiltflowError(f"--counting: cannot bin a {w}x{h} gain reference by 2 (odd size)", path)
        return True
    if movie_shape is not None:
        return (h, w) == (2 * movie_shape[0], 2 * movie_shape[1])
    if (h, w) in superres_shapes:
        msg = (
            f"gain is super-resolution size {w}x{h}; kept as is. If the movies are counting mode "
            f"({w // 2}x{h // 2}) pass --counting, or --movie to decide from a movie"
        )
        log.warning("%s", msg)
        warnings.append(msg)
    return False


def _scores_for(g, shrink, movie_path, movie_shape) -> list[tuple[int, int, float]]:
    """Orientation scores of the (cleaned, not yet oriented) gain against the sum of the movie's first frames."""
    from tiltflow.io.movies import open_movie

    if shrink or (
        g.shape[0] % 2 == 0
        and g.shape[1] % 2 == 0
        and sorted(g.shape) == sorted((2 * movie_shape[0], 2 * movie_shape[1]))
    ):
        g = G.shrink2(g)
    if sorted(g.shape) != sorted(movie_shape):
        return []
    with open_movie(movie_path) as m:
        # EER: about 256 fractions are enough signal (decoding costs ~0.05 s per 4k fraction)
        limit = CHECK_FRAMES if m.format != "eer" else max(1, 256 // m.group_size)
        total = m.sum(0, min(m.n_frames, limit))
    scores = G.orientation_scores(g, total)
    log.info(
        "orientation check on %s (z-scores, >%g is clear): %s",
        Path(movie_path).name,
        ORIENTATION_Z,
        ", ".join(f"rotate {r} flip {f}: {z:.1f}" for r, f, z in scores),
    )
    return scores


def _check_orientation(scores, rotate, flip, warnings) -> None:
    if not scores:
        return
    best_r, best_f, best_z = scores[0]
    chosen = G.orient_gain(np.arange(12.0).reshape(3, 4), rotate, flip)
    best = G.orient_gain(np.arange(12.0).reshape(3, 4), best_r, best_f)
    if best_z > ORIENTATION_Z and not np.array_equal(chosen, best):
        mine = next(
            (
                z
                for r, f, z in scores
                if np.array_equal(G.orient_gain(np.arange(12.0).reshape(3, 4), r, f), chosen)
            ),
            float("nan"),
        )
        msg = (
            f"the movie matches the gain best with --rotate {best_r} --flip {best_f} (z {best_z:.1f}), "
            f"not with the chosen --rotate {rotate} --flip {flip} (z {mine:.1f})"
        )
        log.warning("%s", msg)
        warnings.append(msg)


def _mismatch_message(shape, movie_shape, rotate, scores) -> str:
    gh, gw = shape
    fh, fw = movie_shape
    text = f"prepared gain is {gw}x{gh} but the movie frames are {fw}x{fh}"
    if scores and scores[0][2] > ORIENTATION_Z and (gw, gh) == (fh, fw):
        r, f, z = scores[0]
        return (
            text + f": it fits after a 90-degree turn; the movie says use --rotate {r} --flip {f} (z {z:.1f})"
        )
    return text + (G.shape_hint(shape, movie_shape, rotate) or ": check the gain file and the movie")
