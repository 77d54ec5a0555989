"""Gain references: orientation (MotionCor's -RotGain/-FlipGain), reading and the prepared gain.

Why our own code: no package provides it; it is a multiply plus the conventions below, which must match
MotionCor2/3 exactly so that a user passes the same ``--rotate``/``--flip`` to tiltflow as to MotionCor.

Array convention. Every image array in tiltflow is indexed ``img[y, x]`` in the orientation the field's
programs hold it in memory (see :mod:`tiltflow.io.movies`): MRC rows in file order, TIFF rows reversed
(movies and gain references alike: MotionCor3 reads TIFF gains with the same ``CLoadTiffImage`` as TIFF
frames, ``DataUtil/CLoadRefs.cpp``), DM4 as IMOD's ``dm2mrc`` writes it. MotionCor's ``-RotGain/-FlipGain``
act on that array, so they mean the same here for every movie format. MRC viewers (IMOD 3dmod,
MotionCor's own notion of "counter-clockwise") display row 0 at the BOTTOM (y axis pointing up). numpy's
``rot90`` is "counter-clockwise" for a y-down display, so a CCW turn in the MRC (y-up) display is
``np.rot90(img, k=-1)`` here.

EPU's EER ``.gain`` (a TIFF) is read as MotionCor3 reads it (rows reversed). RELION reads it back into
file order (``src/renderEER.h``, ``loadEERGain``), so RELION's ``--gain_rot/--gain_flip`` for a ``.gain``
differ from MotionCor's: see :func:`relion_gain_codes`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tiltflow.errors import TiltflowError


def _check_rotate_flip(rotate: int, flip: int) -> None:
    if int(rotate) not in (0, 1, 2, 3):
        raise TiltflowError(f"gain rotation must be 0-3 (multiples of 90 deg), got {rotate}")
    if int(flip) not in (0, 1, 2):
        raise TiltflowError(f"gain flip must be 0 (none), 1 (upside down) or 2 (left-right), got {flip}")


def orient_gain(gain: np.ndarray, rotate: int, flip: int) -> np.ndarray:
    """Apply MotionCor2/3's ``-RotGain rotate -FlipGain flip`` to ``gain`` (2-D, ``gain[y, x]``).

    Taken from MotionCor3 ``CLoadRefs::PostProcess``: rotate first, then flip.

    * Rotation (``MrcUtil/G90Rotate2D.cu``) turns the image counter-clockwise by ``rotate * 90`` degrees
      as displayed with y up. For ``rotate = 1`` and an input of height ``H`` and width ``W`` the output
      has shape ``(W, H)`` and ``out[y, x] = gain[H - 1 - x, y]``, i.e. ``np.rot90(gain, k=-1)``;
      ``rotate = 2``: ``out[y, x] = gain[H-1-y, W-1-x]``; ``rotate = 3``: ``out[y, x] = gain[x, W-1-y]``.
    * Flip (``MrcUtil/GFlip2D.cu``): 1 = ``Vertical`` (upside down, about the horizontal axis):
      ``out[y, x] = img[H-1-y, x]``; 2 = ``Horizontal`` (left-right): ``out[y, x] = img[y, W-1-x]``.

    The result is the gain in the movie's orientation (a new contiguous array).
    """
    return np.ascontiguousarray(_oriented_view(gain, rotate, flip))


def _oriented_view(gain: np.ndarray, rotate: int, flip: int) -> np.ndarray:
    """:func:`orient_gain` as a strided view (no copy), for checks on crops of large references."""
    _check_rotate_flip(rotate, flip)
    arr = np.asarray(gain)
    if arr.ndim != 2:
        raise TiltflowError(f"a gain reference must be one 2-D image, got shape {arr.shape}")
    out = np.rot90(arr, k=-int(rotate))
    if flip == 1:
        out = out[::-1, :]
    elif flip == 2:
        out = out[:, ::-1]
    return out


def unorient_gain(gain_in_movie_orientation: np.ndarray, rotate: int, flip: int) -> np.ndarray:
    """Exact inverse of :func:`orient_gain`: ``unorient_gain(orient_gain(g, r, f), r, f) == g``.

    Used by the simulator to write a gain file that needs ``--rotate r --flip f`` (as MotionCor would).
    """
    _check_rotate_flip(rotate, flip)
    out = np.asarray(gain_in_movie_orientation)
    if out.ndim != 2:
        raise TiltflowError(f"a gain reference must be one 2-D image, got shape {out.shape}")
    if flip == 1:
        out = out[::-1, :]
    elif flip == 2:
        out = out[:, ::-1]
    return np.ascontiguousarray(np.rot90(out, k=int(rotate)))


def serialem_rf_to_rotate_flip(code: int) -> tuple[int, int]:
    """Convert SerialEM's ``r/f`` value (title ``r/f v``, mdoc ``RotationAndFlip``) to MotionCor's pair.

    SerialEM (``about_camera.htm``): ``v = CCW rotation / 90 + 4`` if the image was flipped about the Y axis
    (mirrored in x, left-right) BEFORE the rotation; that operation applied to the gain reference (as IMOD
    reads it) brings it into the frames' orientation (as IMOD reads them). MotionCor rotates first and flips
    after. With ``R`` a CCW turn and ``Fx`` the left-right mirror, ``R^k . Fx = Fx . R^-k``, so ``v = k + 4``
    becomes ``rotate = -k mod 4, flip = 2``; ``v < 4`` is ``rotate = k, flip = 0``. tiltflow reads gains
    and frames of every format as IMOD does, so the pair is the same for TIFF and MRC frames.
    """
    v = int(code)
    if v not in range(8):
        raise TiltflowError(f"SerialEM r/f value must be 0-7, got {code}")
    k = v % 4
    return (k, 0) if v < 4 else ((-k) % 4, 2)


def relion_gain_codes(rotate: int, flip: int, gain_path: str | Path) -> tuple[int, int]:
    """RELION's ``--gain_rot/--gain_flip`` that do what MotionCor's ``-RotGain rotate -FlipGain flip`` do.

    RELION's gain flags are MotionCor's operation (``--gain_rot`` help: "same as MotionCor2's RotGain";
    ``motioncorr_runner.cpp::prepareGainReference``) on the gain as RELION holds it: the same array as
    MotionCor's for MRC gains. An EPU EER ``.gain`` differs: with codes 0 0 RELION reads it through
    ``EERRenderer::loadEERGain`` (``src/renderEER.h``), which puts it back into file order, i.e. MotionCor's
    array upside down (``Fy``); any other codes send it through ``prepareGainReference``, whose rotated
    ``gain.mrc`` loadEERGain then takes for a count-style gain and inverts. So for a ``.gain`` only the
    operations equal to ``Fy`` ((0, 1) and (2, 2)) have a RELION equivalent (0, 0); others raise.
    """
    _check_rotate_flip(rotate, flip)
    r, f = int(rotate), int(flip)
    if Path(gain_path).suffix.lower() != ".gain":
        return r, f
    if (r, f) in ((0, 1), (2, 2)):
        return 0, 0
    raise TiltflowError(
        f"RELION cannot apply MotionCor's -RotGain {r} -FlipGain {f} to an EER .gain (it turns only MRC gains and "
        "then inverts them for EER movies); prepare the gain with `tiltflow gain` and use --backend relion",
        gain_path,
    )


#: the 8 distinct orientations as MotionCor (rotate, flip) pairs (flip 2 = flip 1 after 180 degrees)
ALL_ORIENTATIONS: tuple[tuple[int, int], ...] = tuple((r, f) for f in (0, 1) for r in range(4))

#: K3 super-resolution gain shapes (h, w) in either orientation; the counting size is half of each
K3_SUPERRES_SHAPES: tuple[tuple[int, int], ...] = ((8184, 11520), (11520, 8184))

GAIN_SUFFIXES = (".mrc", ".mrcs", ".tif", ".tiff", ".gain", ".dm4")


@dataclass(frozen=True)
class GainImage:
    """A gain reference as read from its file (float32 ``data[y, x]``, no orientation applied)."""

    data: np.ndarray
    pixel_size: float | None
    path: Path
    format: str  # "mrc", "tiff" or "dm4"


def read_gain_file(path: str | Path) -> GainImage:
    """Read a gain reference: MRC, TIFF (including EER ``.gain``) or DM4; one 2-D image.

    MRC rows in file order, TIFF rows reversed (EER ``.gain`` included), as MotionCor2/3 read them
    (``DataUtil/CLoadRefs.cpp`` -> ``TiffUtil/CLoadTiffImage.cpp``); DM4 as IMOD's dm2mrc writes it (see
    :mod:`tiltflow.io.dm4`).
    """
    path = Path(path)
    if not path.is_file():
        raise TiltflowError("gain reference not found", path)
    sfx = path.suffix.lower()
    with open(path, "rb") as fh:
        head = fh.read(4)
    if sfx == ".dm4" or head == b"\x00\x00\x00\x04":
        from tiltflow.io.dm4 import read_dm4

        img = read_dm4(path)
        data, pixel, fmt = img.data, img.pixel_size, "dm4"
    elif sfx in (".tif", ".tiff", ".gain") or head[:2] in (b"II", b"MM"):
        data, pixel, fmt = _read_tiff_gain(path), None, "tiff"
    else:
        from tiltflow.io.mrc import read_mrc

        data, pixel = read_mrc(path)
        fmt = "mrc"
    data = np.asarray(data)
    if data.ndim == 3 and data.shape[0] == 1:
        data = data[0]
    if data.ndim != 2:
        raise TiltflowError(
            f"a gain reference must be one 2-D image, the file holds shape {data.shape}", path
        )
    if np.iscomplexobj(data):
        raise TiltflowError("a gain reference cannot be complex", path)
    return GainImage(data.astype(np.float32, copy=False), pixel or None, path, fmt)


def _read_tiff_gain(path: Path) -> np.ndarray:
    import tifffile

    from tiltflow.io.movies import tiff_rows

    try:
        with tifffile.TiffFile(path) as tif:
            if len(tif.pages) != 1:
                raise TiltflowError(
                    f"a gain reference TIFF must hold one page, it has {len(tif.pages)}", path
                )
            return tiff_rows(tif.pages.first.asarray())
    except TiltflowError:
        raise
    except Exception as exc:
        raise TiltflowError(
            f"not a readable TIFF gain reference ({' '.join(str(exc).split())[:200]})", path
        ) from exc


def shrink2(gain: np.ndarray) -> np.ndarray:
    """2x2 binning by averaging (K3 super-resolution -> counting size, like IMOD ``newstack -shrink 2``)."""
    h, w = gain.shape
    if h % 2 or w % 2:
        raise TiltflowError(f"cannot bin a {w}x{h} gain reference by 2 (odd size)")
    g = np.asarray(gain, dtype=np.float32)
    out = g[0::2, 0::2] + g[1::2, 0::2]
    out += g[0::2, 1::2]
    out += g[1::2, 1::2]
    out *= np.float32(0.25)
    return out


def match_gain_to_frame(
    gain: np.ndarray, frame_shape: tuple[int, int], path: str | Path | None = None
) -> np.ndarray:
    """Bring a prepared gain to the frame size: equal, or an integer multiple (EER 8k/16k rendering).

    A 4k gain on an 8k-rendered EER frame is repeated 2x2, as MotionCor (``AugmentRefs``) and RELION
    (``loadEERGain``) do. Any other mismatch raises a TiltflowError saying what would fit.
    """
    gh, gw = gain.shape
    fh, fw = frame_shape
    if (gh, gw) == (fh, fw):
        return gain
    if fh % gh == 0 and fw % gw == 0 and fh // gh == fw // gw:
        k = fh // gh
        return np.repeat(np.repeat(gain, k, axis=0), k, axis=1)
    hint = shape_hint((gh, gw), (fh, fw))
    raise TiltflowError(f"gain reference is {gw}x{gh} but movie frames are {fw}x{fh}{hint}", path)


def shape_hint(gain_shape: tuple[int, int], frame_shape: tuple[int, int], rotate: int = 0) -> str:
    """A short suggestion for a gain/frame shape mismatch ('' when nothing obvious fits)."""
    gh, gw = gain_shape
    fh, fw = frame_shape
    if (gw, gh) == (fh, fw):
        return f": it fits only after a 90-degree turn, use --rotate {(rotate + 1) % 4} or --rotate {(rotate + 3) % 4}"
    if (gh, gw) == (2 * fh, 2 * fw):
        return ": the gain is super-resolution and the movies counting mode, use --counting"
    if (gw, gh) == (2 * fh, 2 * fw):
        return (
            f": the gain is super-resolution and turned by 90 degrees, use --counting and --rotate "
            f"{(rotate + 1) % 4} or {(rotate + 3) % 4}"
        )
    return ""


def load_prepared_gain(path: str | Path, frame_shape: tuple[int, int] | None = None) -> np.ndarray:
    """Load the gain written by ``tiltflow gain`` (multiplicative: ``corrected = raw * gain``).

    Checks that it is one finite, positive 2-D image; with ``frame_shape`` also that it fits the frames
    (or an integer multiple of them, see :func:`match_gain_to_frame`).
    """
    from tiltflow.io.mrc import read_mrc

    path = Path(path)
    if not path.is_file():
        raise TiltflowError("gain reference not found (prepare it with `tiltflow gain`)", path)
    data, _ = read_mrc(path)
    if data.ndim != 2:
        raise TiltflowError(f"prepared gain must be one 2-D image, got shape {data.shape}", path)
    data = data.astype(np.float32, copy=False)
    bad = int(np.count_nonzero(~np.isfinite(data) | (data <= 0)))
    if bad:
        raise TiltflowError(
            f"gain has {bad} zero, negative or non-finite pixels; prepare it with `tiltflow gain` first", path
        )
    if frame_shape is not None:
        data = match_gain_to_frame(data, (int(frame_shape[0]), int(frame_shape[1])), path)
    return data


def orientation_scores(
    gain: np.ndarray, movie_sum: np.ndarray, max_size: int = 1024
) -> list[tuple[int, int, float]]:
    """How well each orientation of ``gain`` flattens ``movie_sum``: (rotate, flip, z-score), best first.

    Raw counts are ``dose / gain`` (multiplicative gain), so the fine pixel pattern of the summed movie
    correlates with ``1/gain`` in the right orientation and not in the others. Both are high-passed (5x5
    box) so the specimen does not count; the score is the correlation times sqrt(pixels), ~N(0,1) when
    unrelated. Only a central ``max_size`` square is compared (a 1024^2 crop is plenty and keeps a K3
    reference cheap). Orientations whose shape does not fit the movie are skipped.
    """
    h, w = movie_sum.shape
    ch, cw = min(h, max_size), min(w, max_size)
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    crop = (slice(y0, y0 + ch), slice(x0, x0 + cw))
    s = _highpass(np.asarray(movie_sum[crop], dtype=np.float64))
    out = []
    valid = np.isfinite(gain) & (gain > 0)
    inv = np.ones(gain.shape, np.float32)
    np.divide(1.0, gain, out=inv, where=valid)
    if not valid.all():
        inv[~valid] = np.median(inv[valid]) if valid.any() else 1.0
    for r, f in ALL_ORIENTATIONS:
        g = _oriented_view(inv, r, f)
        if g.shape != movie_sum.shape:
            continue
        gh = _highpass(np.asarray(g[crop], dtype=np.float64))
        den = np.sqrt((s * s).sum() * (gh * gh).sum())
        corr = float((s * gh).sum() / den) if den > 0 else 0.0
        out.append((r, f, corr * np.sqrt(s.size)))
    return sorted(out, key=lambda t: -t[2])


def _highpass(img: np.ndarray, box: int = 5) -> np.ndarray:
    """``img`` minus its ``box``-pixel running mean (edge-padded), with numpy only."""
    pad = box // 2
    p = np.pad(img, pad, mode="edge")
    c = np.cumsum(np.cumsum(p, axis=0), axis=1)
    c = np.pad(c, ((1, 0), (1, 0)))
    h, w = img.shape
    tot = c[box : box + h, box : box + w] - c[:h, box : box + w] - c[box : box + h, :w] + c[:h, :w]
    return img - tot / (box * box)
