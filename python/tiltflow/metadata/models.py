"""The session model: tilts, tilt series and sessions as read from SerialEM/Tomo5 mdocs.

Every value keeps its unit in the name or docstring (Å, e/Å², µm, degrees) because the sources mix
them; the raw section keys are kept in ``Tilt.keys`` so that nothing the microscope wrote is lost.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path


@dataclass
class Tilt:
    """One tilt image: a ``[ZValue = n]`` section of a tilt-series mdoc."""

    z_value: int
    tilt_angle: float  # nominal stage tilt, degrees
    acquisition_index: int = -1  # 0-based position in acquisition order (after ordering)
    sub_frame_path: str | None = None  # SubFramePath as written on the microscope PC
    movie: Path | None = None  # resolved movie file, None if not found
    frame_count: int | None = None  # NumSubFrames (or the frame count in FrameDosesAndNumber)
    dose: float | None = None  # e/Å² received during this exposure
    dose_source: str = ""  # which key (or "user") the dose came from
    pre_exposure: float | None = None  # e/Å² received before this exposure
    prior_record_dose: float | None = None  # SerialEM PriorRecordDose (cross-check only)
    target_defocus: float | None = None  # µm, negative = underfocus
    exposure_time: float | None = None  # s
    date_time: datetime | None = None
    date_time_text: str = ""  # DateTime as written
    keys: dict[str, str] = field(default_factory=dict)  # every key of the section, as text

    @property
    def movie_name(self) -> str | None:
        """Basename of the movie (from SubFramePath, Windows/UNC separators understood)."""
        from tiltflow.metadata.movies import windows_basename

        return windows_basename(self.sub_frame_path) if self.sub_frame_path else None

    @property
    def movie_found(self) -> bool:
        """Whether the tilt's movie was found."""
        return self.movie is not None


@dataclass
class TiltSeries:
    """One tilt series: the global keys of its mdoc and its tilts in acquisition order."""

    name: str
    mdoc: Path
    pixel_size: float  # Å, movie pixel (rlnMicrographOriginalPixelSize)
    image_pixel_size: float  # Å, PixelSpacing of the saved image (may be binned)
    binning: float
    voltage: float  # kV
    voltage_from_mdoc: bool
    image_size: tuple[int, int] | None
    data_mode: int | None
    tilt_axis: float | None  # degrees
    tilt_axis_source: str  # "user", "title", "RotationAngle - 90", ""
    writer: str  # "SerialEM", "Tomo5" or "unknown"
    serialem_version: str | None
    titles: list[str] = field(default_factory=list)
    header: dict[str, str] = field(default_factory=dict)
    tilts: list[Tilt] = field(default_factory=list)  # acquisition order, retakes removed
    dropped: list[Tilt] = field(default_factory=list)  # retakes replaced by a newer image
    order_source: str = ""  # "DateTime", "TimeStamp" or "ZValue"
    scheme: str = ""  # "dose-symmetric", "bidirectional", "unidirectional", "single", "irregular"
    warnings: list[str] = field(default_factory=list)

    @property
    def n_tilts(self) -> int:
        """Number of tilts kept (retakes dropped)."""
        return len(self.tilts)

    @property
    def angle_range(self) -> tuple[float, float]:
        """Lowest and highest nominal tilt angle (nan when there are no tilts)."""
        angles = [t.tilt_angle for t in self.tilts]
        return (min(angles), max(angles)) if angles else (float("nan"), float("nan"))

    @property
    def by_angle(self) -> list[Tilt]:
        """Tilts ordered by nominal angle (how stacks are ordered later)."""
        return sorted(self.tilts, key=lambda t: t.tilt_angle)

    @property
    def has_dose(self) -> bool:
        """Whether every tilt has a positive dose, so that dose weighting can use them."""
        return all(t.dose is not None and t.dose > 0 for t in self.tilts) and bool(self.tilts)

    @property
    def total_dose(self) -> float | None:
        """e/Å² over every exposure of the series, retakes included (they irradiated the sample)."""
        doses = [t.dose for t in self.tilts + self.dropped]
        if not doses or any(d is None for d in doses):
            return None
        return float(sum(d for d in doses if d is not None))

    @property
    def missing_movies(self) -> list[str]:
        """The movies not found, by name (or by ZValue when the mdoc names none)."""
        return [t.movie_name or f"(no SubFramePath, ZValue {t.z_value})" for t in self.tilts if t.movie is None]


@dataclass
class Skipped:
    """A file that is not read as a tilt series, and why.

    ``kind``: ``frames`` (per-movie FrameSet mdoc), ``frame-series`` (one movie split into tilts),
    ``montage``, ``override`` (Tomo5 duplicate), ``duplicate`` (same tilt-series name), ``empty``,
    ``incomplete`` (still being written), ``invalid`` or ``output`` (tiltflow's own, in a results folder inside the
    session). ``duplicate``, ``incomplete`` and ``invalid`` are errors at import: two series of one name would
    write the same outputs, so one would silently be lost.
    """

    path: Path
    kind: str
    reason: str

    @property
    def is_problem(self) -> bool:
        """Whether the file is an error at import, not just set aside."""
        return self.kind in ("duplicate", "incomplete", "invalid")


@dataclass
class Session:
    """What ``load_session`` found: tilt series (sorted by name) and the files set aside."""

    series: list[TiltSeries] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    def get(self, name: str) -> TiltSeries:
        """The tilt series called ``name`` (``KeyError`` if there is none)."""
        for ts in self.series:
            if ts.name == name:
                return ts
        raise KeyError(name)
