"""RELION's per-movie motion STAR file (``rlnMicrographMetadata``): write it and read it back.

Layout (RELION ``Micrograph::write``): ``data_general`` (key-value: movie size and name, gain, binning,
movie pixel size, dose per frame, pre-exposure, voltage, first frame used, motion model version),
``data_global_shift`` (``rlnMicrographFrameNumber`` 1-based, ``rlnMicrographShiftX/Y`` in movie pixels for
every frame, -9999 for frames not used) and, with local motion, ``data_local_motion_model``
(``rlnMotionModelCoeffsIdx``/``rlnMotionModelCoeff``: 18 x coefficients then 18 y). Both backends write
it, so downstream code (and RELION's polishing) reads one format whatever corrected the movie.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tiltflow import star
from tiltflow.errors import TiltflowError
from tiltflow.motion.trajectory import Trajectory

NOT_OBSERVED = -9999.0  # RELION's Micrograph::NOT_OBSERVED
MOTION_MODEL_NULL, MOTION_MODEL_THIRD_ORDER_POLYNOMIAL = 0, 1


@dataclass(frozen=True)
class MovieInfo:
    """The ``data_general`` facts about a movie."""

    movie: str
    width: int
    height: int
    n_frames: int
    pixel_size: float  # movie (rendered) pixel, A
    binning: float = 1.0
    gain: str | None = None
    dose_per_frame: float | None = None
    pre_exposure: float | None = None
    voltage: float | None = None


def write_motion_star(path: str | Path, traj: Trajectory, info: MovieInfo) -> Path:
    """Atomically write RELION's per-movie STAR file for ``traj``."""
    general: dict[str, object] = {
        star.IMAGE_SIZE_X: int(info.width),
        star.IMAGE_SIZE_Y: int(info.height),
        star.IMAGE_SIZE_Z: int(info.n_frames),
        star.MOVIE: str(info.movie),
    }
    if info.gain:
        general[star.GAIN_NAME] = str(info.gain)
    general[star.MOVIE_BINNING] = float(info.binning)
    general[star.ORIGINAL_PIXEL_SIZE] = float(info.pixel_size)
    if info.dose_per_frame is not None:
        general[star.DOSE_RATE] = float(info.dose_per_frame)
    if info.pre_exposure is not None:
        general[star.PRE_EXPOSURE] = float(info.pre_exposure)
    if info.voltage is not None:
        general[star.VOLTAGE] = float(info.voltage)
    general[star.START_FRAME] = traj.first_frame
    general[star.MOTION_MODEL_VERSION] = (
        MOTION_MODEL_THIRD_ORDER_POLYNOMIAL if traj.local_model is not None else MOTION_MODEL_NULL
    )
    shifts = np.where(np.isfinite(traj.shifts), traj.shifts, NOT_OBSERVED)
    blocks: dict[str, object] = {
        "general": general,
        "global_shift": pd.DataFrame({
            star.FRAME_NUMBER: np.arange(1, traj.n_frames + 1),
            star.SHIFT_X: shifts[:, 0],
            star.SHIFT_Y: shifts[:, 1],
        }),
    }
    if traj.local_model is not None:
        coeffs = np.asarray(traj.local_model, dtype=float)
        blocks["local_motion_model"] = pd.DataFrame({
            star.MOTION_COEFF_INDEX: np.arange(coeffs.size),
            star.MOTION_COEFF: coeffs,
        })
    return star.write_blocks(path, blocks)  # type: ignore[arg-type]


def read_motion_star(path: str | Path) -> tuple[Trajectory, dict]:
    """Read a per-movie STAR file (ours or RELION's); return the trajectory and the ``general`` block."""
    blocks = star.read_blocks(path)
    if "global_shift" not in blocks or "general" not in blocks:
        raise TiltflowError("not a RELION per-movie motion file (no data_general/data_global_shift)", path)
    general = blocks["general"]
    if isinstance(general, pd.DataFrame):
        general = general.iloc[0].to_dict()
    table = blocks["global_shift"]
    n = int(general.get(star.IMAGE_SIZE_Z, len(table)))
    shifts = np.full((n, 2), np.nan)
    frames = table[star.FRAME_NUMBER].to_numpy(int) - 1
    xy = table[[star.SHIFT_X, star.SHIFT_Y]].to_numpy(float)
    xy[(xy == NOT_OBSERVED).any(axis=1)] = np.nan
    shifts[frames] = xy
    model = None
    if "local_motion_model" in blocks:
        t = blocks["local_motion_model"]
        model = np.zeros(36)
        model[t[star.MOTION_COEFF_INDEX].to_numpy(int)] = t[star.MOTION_COEFF].to_numpy(float)
    return Trajectory(shifts, model), dict(general)
