"""``ground_truth.json``: what the simulator did, for tests and benchmarks of every later step.

The key names are a contract (other steps' tests read them); new keys may be added, none renamed.
Paths inside are relative to the folder holding the JSON. :func:`load_truth` returns typed dataclasses
and ignores keys it does not know, so older readers keep working on newer files.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from tiltflow.atomic import write_json
from tiltflow.errors import TiltflowError

VERSION = 1

#: written into the JSON so that nobody has to guess a sign
CONVENTIONS = {
    "geometry": "image pixel p = Rz(tilt_axis) Ry(tilt_angle) Rx(0) (X - c_tomo) + shift_px + c_img (RELION 5, "
                "tiltflow.geometry.project_points); c = int(size/2); X in bin-1 movie pixels, x fastest; "
                "images img[y, x] as the field's readers hold them: MRC rows as stored, TIFF rows reversed "
                "(SerialEM's TIFF rows, IMOD/MotionCor/RELION read order)",
    "shift_px": "RELION rlnTomoX/YShiftAngst / pixel_size, movie pixels (x, y), added after the rotation",
    "frame_shifts_px": "frame i = tilt image translated by +frame_shifts_px[i] (x, y movie pixels); the shifts of "
                       "one movie sum to zero; aligning frame i needs -frame_shifts_px[i]",
    "defocus": "defocus_u/v in A, positive = underfocus, at the point where the tomogram centre projects; "
               "defocus_angle in degrees from the image x axis (RELION rlnDefocusU/V/Angle, tiltflow.ctfmodel)",
    "hand": "defocus at specimen point X = defocus_tilt + hand * pixel_size * (R (X - c_tomo))_z with R = "
            "Rz(tilt_axis) Ry(tilt_angle): RELION Tomogram::getCtf with rlnTomoHand = hand; on the slab "
            "mid-plane this is defocus_tilt - hand * tan(tilt_angle) * q_x * pixel_size, q = Rz(-tilt_axis) "
            "(p - c_img - shift_px)",
    "dose": "dose and pre_exposure in e/A^2 (incident); pre_exposure = dose received by earlier acquisitions",
    "counts": "movie counts ~ Poisson(dose/frames * pixel_size^2 * transmission * sensitivity * relative "
              "intensity); dark tilts keep 2% of their counts",
    "gain": "gain file = 1/sensitivity stored in camera orientation: orient_gain(gain, rotate, flip) (MotionCor "
            "-RotGain rotate -FlipGain flip) matches the movies; corrected = counts * oriented gain",
    "phantom": "density in rad of phase per movie pixel of path (0 = ice), volume[z, y, x]; voxel i covers bin-1 "
               "pixels [b*i, b*i + b) with b = phantom_binning, i.e. centre b*i + (b-1)/2 - c_tomo",
    "positions": "particle/object positions in bin-1 movie pixels relative to c_tomo = int(tomogram_size/2)",
    "not_in_phantom": "each tilt also carries an amorphous-ice phase texture drawn independently per tilt (white, "
                      "CTF-filtered at its depth), the Grant & Grigorieff exposure filter at pre_exposure + dose/2, "
                      "a B-factor envelope, energy-filter loss (transmission) and gold absorption",
}


@dataclass
class TiltTruth:
    """One tilt, in acquisition order (``z_value`` = ``acquisition_index``, as SerialEM's stack mdoc)."""

    z_value: int
    acquisition_index: int
    movie: str
    nominal_tilt_angle: float  # TiltAngle in the mdoc (stage readout)
    tilt_angle: float  # true angle used for the projection
    shift_px: list[float]
    defocus_u: float
    defocus_v: float
    defocus_angle: float
    dose: float
    pre_exposure: float
    frame_shifts_px: list[list[float]]
    dark: bool = False
    transmission: float = 1.0
    target_defocus_um: float = 0.0  # SerialEM sign: negative = underfocus
    date_time: str = ""


@dataclass
class SeriesTruth:
    """One simulated tilt series: its geometry, specimen, dose scheme and tilts."""

    name: str
    mdoc: str
    tilt_axis: float
    hand: int
    thickness_nm: float
    phantom: str
    phantom_pixel_size: float
    tomogram_size_xyz: list[int]
    dose_per_tilt: float
    scheme: str
    tilts: list[TiltTruth]
    phantom_binning: int = 1
    group_size: int = 2
    frames: int = 1
    tilt_offset: float = 0.0
    particles: list[dict] = field(default_factory=list)
    vesicles: list[dict] = field(default_factory=list)
    gold: list[dict] = field(default_factory=list)
    filaments: list[dict] = field(default_factory=list)

    @property
    def angles(self) -> np.ndarray:
        """True tilt angles in acquisition order."""
        return np.array([t.tilt_angle for t in self.tilts])

    @property
    def nominal_angles(self) -> np.ndarray:
        """Nominal tilt angles in acquisition order."""
        return np.array([t.nominal_tilt_angle for t in self.tilts])

    @property
    def shifts(self) -> np.ndarray:
        """(n, 2) RELION shifts in movie pixels, acquisition order."""
        return np.array([t.shift_px for t in self.tilts], dtype=np.float64).reshape(-1, 2)

    def by_angle(self) -> list[TiltTruth]:
        """Tilts ordered by nominal angle (RELION's order after ``stack``)."""
        return sorted(self.tilts, key=lambda t: t.nominal_tilt_angle)

    def tilt_for_movie(self, movie: str) -> TiltTruth:
        """The tilt whose movie has the same file name as ``movie`` (``KeyError`` if none)."""
        name = Path(movie).name
        for t in self.tilts:
            if Path(t.movie).name == name:
                return t
        raise KeyError(movie)


@dataclass
class GainTruth:
    """The gain file the simulator wrote, and the MotionCor rotate and flip that bring it onto the movies."""

    file: str
    rotate: int
    flip: int


@dataclass
class GroundTruth:
    """What the simulator made (``ground_truth.json``): optics, gain, every series and tilt, to compare results with."""

    version: int
    pixel_size: float
    voltage: float
    cs: float
    amplitude_contrast: float
    gain: GainTruth
    series: list[SeriesTruth]
    movie_format: str = "tiff"
    image_size: list[int] = field(default_factory=list)  # width, height
    frames: int = 1
    seed: int = 0
    species: list[dict] = field(default_factory=list)
    conventions: dict = field(default_factory=dict)
    root: Path = field(default=Path("."), repr=False)

    def path(self, relative: str) -> Path:
        """Absolute path of a file named in the truth."""
        return self.root / relative

    def series_named(self, name: str) -> SeriesTruth:
        """The series called ``name`` (``KeyError`` if there is none)."""
        for s in self.series:
            if s.name == name:
                return s
        raise KeyError(name)

    def to_dict(self) -> dict:
        """The truth as JSON values (``root`` is where it was read, not part of it)."""
        d = asdict(self)
        d.pop("root")
        return d


def write_truth(path: str | Path, truth: GroundTruth) -> Path:
    """Write ``truth`` as JSON to ``path``."""
    return write_json(path, truth.to_dict())


def _build(cls, data: dict):
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})


def load_truth(path: str | Path) -> GroundTruth:
    """Read ``ground_truth.json`` (or the folder holding it)."""
    path = Path(path)
    if path.is_dir():
        path = path / "ground_truth.json"
    if not path.is_file():
        raise TiltflowError("ground truth file not found", path)
    try:
        data = json.loads(path.read_text())
        series = []
        for s in data["series"]:
            s = dict(s)
            s["tilts"] = [_build(TiltTruth, t) for t in s["tilts"]]
            series.append(_build(SeriesTruth, s))
        data = dict(data)
        data["series"] = series
        data["gain"] = _build(GainTruth, data["gain"])
        truth = _build(GroundTruth, data)
    except (KeyError, TypeError, ValueError) as exc:
        raise TiltflowError(f"not a tiltflow ground-truth file ({type(exc).__name__}: {exc})", path) from exc
    truth.root = path.parent
    return truth
