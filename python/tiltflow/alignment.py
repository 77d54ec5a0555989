"""A tilt series' alignment in RELION 5's projection model, whatever produced it.

The built-in aligner and the AreTomo/IMOD wrappers all return a :class:`TiltSeriesAlignment`;
the align step turns it into STAR columns, an AreTomo ``.aln`` and IMOD ``.xf``/``.tlt``.
Arrays are in stack order (tilt-angle order) over the tilts that were kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from tiltflow import star


@dataclass
class TiltSeriesAlignment:
    """Per-tilt geometry (see ``geometry.py``): p = Rz(z_rot) Ry(y_tilt) Rx(x_tilt) X + shift + c."""

    y_tilt: np.ndarray  # deg, refined tilt angles (nominal + offset + refinement)
    z_rot: np.ndarray  # deg, tilt-axis angle from the image y axis
    shifts_px: np.ndarray  # (n, 2) x, y in pixels of the stack that was aligned
    pixel_size: float  # A per pixel of that stack
    x_tilt: np.ndarray | None = None  # deg, 0 unless a specimen x-tilt is modelled
    residual_px: np.ndarray | None = None  # per-tilt alignment residual (pixels), when measured
    excluded: dict[int, str] = field(default_factory=dict)  # stack index -> reason (dark, ...)
    tilt_offset: float = 0.0  # deg, added to the nominal angles
    axis_score: float | None = None  # e.g. AreTomo's "Best tilt axis" score

    def __post_init__(self) -> None:
        n = len(self.y_tilt)
        self.y_tilt = np.asarray(self.y_tilt, float).reshape(n)
        self.z_rot = np.broadcast_to(np.asarray(self.z_rot, float), (n,)).copy()
        self.shifts_px = np.asarray(self.shifts_px, float).reshape(n, 2)
        self.x_tilt = np.zeros(n) if self.x_tilt is None else np.asarray(self.x_tilt, float).reshape(n)

    @property
    def shifts_angst(self) -> np.ndarray:
        """(n, 2) shifts in Angstrom: what RELION stores as rlnTomoX/YShiftAngst."""
        return self.shifts_px * self.pixel_size

    def to_star_columns(self, tilts: pd.DataFrame) -> pd.DataFrame:
        """Return ``tilts`` (same length and order as this alignment) with RELION's alignment columns."""
        out = tilts.copy()
        out[star.X_TILT] = self.x_tilt
        out[star.Y_TILT] = self.y_tilt
        out[star.Z_ROT] = self.z_rot
        out[star.X_SHIFT] = self.shifts_angst[:, 0]
        out[star.Y_SHIFT] = self.shifts_angst[:, 1]
        return out

    @classmethod
    def from_star(cls, tilts: pd.DataFrame, pixel_size: float) -> TiltSeriesAlignment:
        """Read RELION's alignment columns back; shifts are expressed in pixels of ``pixel_size``."""
        shifts = tilts[[star.X_SHIFT, star.Y_SHIFT]].to_numpy(float) / pixel_size
        return cls(
            y_tilt=tilts[star.Y_TILT].to_numpy(float),
            z_rot=tilts[star.Z_ROT].to_numpy(float),
            shifts_px=shifts,
            pixel_size=pixel_size,
            x_tilt=tilts[star.X_TILT].to_numpy(float) if star.X_TILT in tilts else None,
        )

    def rebinned(self, pixel_size: float) -> TiltSeriesAlignment:
        """The same alignment with shifts expressed in pixels of another pixel size."""
        return TiltSeriesAlignment(
            y_tilt=self.y_tilt.copy(), z_rot=self.z_rot.copy(),
            shifts_px=self.shifts_angst / pixel_size, pixel_size=pixel_size, x_tilt=self.x_tilt.copy(),
            residual_px=None if self.residual_px is None else self.residual_px * self.pixel_size / pixel_size,
            excluded=dict(self.excluded), tilt_offset=self.tilt_offset, axis_score=self.axis_score,
        )
