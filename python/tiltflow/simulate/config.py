"""What to simulate: one dataclass of acquisition, optics, detector and specimen settings, plus presets.

Why presets: every later step is tested and benchmarked on simulated sessions, so the sizes used by unit
tests (``tiny``), integration tests (``test``) and the demo (``demo``) are named once here. Values given
explicitly (``None`` means "not given") override the preset.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

from tiltflow.errors import TiltflowError

SCHEMES = ("dose-symmetric", "bidirectional", "unidirectional")
MOVIE_FORMATS = ("tiff", "mrc")

#: Named sizes. ``demo``: 41 tilts of 1024x1024 at 3 A (a 307 nm field, 120 nm slab, Nyquist 6 A), so that
#: vesicles, filaments, 25 nm particles and gold beads are resolvable in a 10 A tomogram and Thon rings
#: reach about 9 A at low tilt; about 50 CPU-seconds, i.e. under a minute on 2 cores (tilts in parallel).
#: ``tiny`` (8 A pixels, 4 frames) and ``test`` (5 A pixels, 6 frames) are for unit and integration tests.
#: ``demo-ctf``: the demo at 6-8 um underfocus (``make demo-ctf``), so that the first CTF zero of the
#: highest-defocus tilt (39 A) lies well inside the 24 A Nyquist of the 12 A phantom and the 10 A tomogram:
#: the shells where uncorrected contrast reverses, and phase flipping must restore it, are measurable.
PRESETS: dict[str, dict[str, object]] = {
    "tiny": dict(size=(128, 128), tilt_min=-50.0, tilt_max=50.0, tilt_step=10.0, frames=4, pixel_size=8.0,
                 thickness=60.0, dose_per_tilt=3.0, n_series=1),
    "test": dict(size=(256, 256), tilt_min=-60.0, tilt_max=60.0, tilt_step=6.0, frames=6, pixel_size=5.0,
                 thickness=80.0, dose_per_tilt=3.0, n_series=1),
    "demo": dict(size=(1024, 1024), tilt_min=-60.0, tilt_max=60.0, tilt_step=3.0, frames=8, pixel_size=3.0,
                 thickness=120.0, dose_per_tilt=3.0, n_series=1),
}
PRESETS["demo-ctf"] = dict(PRESETS["demo"], defocus_min=6.0, defocus_max=8.0)


@dataclass(frozen=True)
class SimulationConfig:
    """All settings of one simulated session (units in the names or comments)."""

    n_series: int = 1
    tilt_min: float = -60.0  # degrees
    tilt_max: float = 60.0
    tilt_step: float = 3.0
    scheme: str = "dose-symmetric"
    group_size: int = 2  # Hagen groups (dose-symmetric)
    start_angle: float = 0.0  # first tilt of dose-symmetric and bidirectional schemes
    size: tuple[int, int] = (1024, 1024)  # movie width, height (pixels)
    frames: int = 8
    dose_per_tilt: float = 3.0  # e/A^2 on the specimen per tilt
    pixel_size: float = 3.0  # A per movie pixel
    voltage: float = 300.0  # kV
    cs: float = 2.7  # mm
    amplitude_contrast: float = 0.1
    movie_format: str = "tiff"
    tiff_compression: str = "lzw"  # SerialEM's default for frames; "zlib" or "none" also work
    gain_rotate: int = 0  # MotionCor -RotGain needed to bring the written gain onto the movies
    gain_flip: int = 0  # MotionCor -FlipGain
    tilt_axis: float = 85.0  # degrees, RELION rlnTomoZRot / IMOD tilt-axis angle
    tilt_offset: float = 0.0  # degrees added to every true angle (systematic, e.g. lamella pretilt)
    tilt_error: float = 0.0  # degrees, s.d. of random true-minus-nominal angle errors
    stage_jitter: float = 0.005  # degrees, s.d. of the TiltAngle readout around the target angle
    defocus_min: float = 3.0  # um underfocus
    defocus_max: float = 5.0
    astigmatism: float = 0.05  # um, |U - V|
    thickness: float = 120.0  # nm, specimen slab
    hand: int = 1  # RELION rlnTomoHand sense of the defocus gradient (see imaging.py)
    seed: int = 0
    dark_tilts: int = 0  # last-acquired tilts made nearly black (beam blocked by a grid bar)
    shift_sigma: float | None = None  # pixels, s.d. of per-tilt specimen shifts (None: 1% of the width)
    drift: float = 2.0  # pixels, typical path length of the beam-induced drift within one movie
    bfactor: float = 50.0  # A^2, envelope of the microscope and detector
    damage: bool = True  # Grant & Grigorieff exposure filter with the pre-exposure
    mean_free_path: float = 350.0  # nm, inelastic mean free path (energy-filter loss); 0 = no loss
    contrast: float = 1.0  # multiplies the specimen's phase contrast
    particles: int | None = None  # counts inside the tomogram box (None: from typical densities)
    vesicles: int | None = None
    filaments: int | None = None
    gold: int | None = None
    ice: float = 1.0  # multiplies the amorphous-ice phase texture (0 = none)
    crowding: float = 0.01  # volume fraction of small background proteins (cytoplasmic crowding)
    bad_pixels: int = 8  # detector pixels of low sensitivity
    frames_subdir: str = ""  # movies in OUT/<subdir> instead of next to the mdocs
    session_name: str | None = None  # SerialEM session folder name (None: the output folder name)
    depth_step: float = 250.0  # A, spacing of the defocus planes used for the 3-D CTF
    threads: int = 0  # tilts rendered in parallel (each single-threaded, no OpenMP thrashing); 0 = up to 4 cores

    @property
    def width(self) -> int:
        """Movie width in pixels."""
        return int(self.size[0])

    @property
    def height(self) -> int:
        """Movie height in pixels."""
        return int(self.size[1])

    def validate(self) -> SimulationConfig:
        """Raise TiltflowError for settings that cannot make a session; return self."""
        def bad(msg: str) -> None:
            raise TiltflowError(msg)

        if self.n_series < 1:
            bad(f"--n-series must be at least 1, got {self.n_series}")
        if not (-90 < self.tilt_min <= self.tilt_max < 90):
            bad(f"tilt range must satisfy -90 < --tilt-min <= --tilt-max < 90, got {self.tilt_min}..{self.tilt_max}")
        if max(abs(self.tilt_min), abs(self.tilt_max)) + abs(self.tilt_offset) > 80:
            bad("tilt angles beyond +-80 degrees cannot be simulated (the slab becomes opaque)")
        if not self.tilt_step > 0:
            bad(f"--tilt-step must be above 0, got {self.tilt_step}")
        if self.scheme not in SCHEMES:
            bad(f"--scheme must be one of {', '.join(SCHEMES)}, got {self.scheme!r}")
        if self.group_size < 1:
            bad(f"--group-size must be at least 1, got {self.group_size}")
        if self.scheme != "unidirectional" and not (self.tilt_min - 1e-6 <= self.start_angle <= self.tilt_max + 1e-6):
            bad(f"--start-angle {self.start_angle} is outside the tilt range {self.tilt_min}..{self.tilt_max}")
        if min(self.size) < 32 or max(self.size) > 8192:
            bad(f"--size must be between 32 and 8192 pixels, got {self.width}x{self.height}")
        if self.frames < 1:
            bad(f"--frames must be at least 1, got {self.frames}")
        for name in ("dose_per_tilt", "pixel_size", "voltage", "thickness"):
            if not getattr(self, name) > 0:
                bad(f"--{name.replace('_', '-')} must be above 0, got {getattr(self, name)}")
        if not 0 <= self.amplitude_contrast < 1:
            bad(f"amplitude contrast must be in [0, 1), got {self.amplitude_contrast}")
        if self.movie_format not in MOVIE_FORMATS:
            bad(f"--movie-format must be tiff or mrc, got {self.movie_format!r}")
        if self.tiff_compression not in ("lzw", "zlib", "none"):
            bad(f"--tiff-compression must be lzw, zlib or none, got {self.tiff_compression!r}")
        if self.gain_rotate not in (0, 1, 2, 3):
            bad(f"--gain-rotate must be 0-3, got {self.gain_rotate}")
        if self.gain_flip not in (0, 1, 2):
            bad(f"--gain-flip must be 0-2, got {self.gain_flip}")
        if self.hand not in (1, -1):
            bad(f"--hand must be 1 or -1, got {self.hand}")
        if not 0 < self.defocus_min <= self.defocus_max:
            bad(f"need 0 < --defocus-min <= --defocus-max (um underfocus), got {self.defocus_min}, {self.defocus_max}")
        if self.astigmatism < 0 or self.astigmatism > self.defocus_min:
            bad(f"--astigmatism must be between 0 and --defocus-min, got {self.astigmatism}")
        if self.dark_tilts < 0 or self.dark_tilts >= self.n_tilts:
            bad(f"--dark-tilts must be between 0 and the number of tilts - 1 ({self.n_tilts - 1}), got {self.dark_tilts}")
        for name in ("tilt_error", "stage_jitter", "drift", "bfactor", "mean_free_path", "contrast", "bad_pixels",
                     "crowding", "ice"):
            if getattr(self, name) < 0:
                bad(f"--{name.replace('_', '-')} must not be negative, got {getattr(self, name)}")
        if self.shift_sigma is not None and self.shift_sigma < 0:
            bad(f"--shift-sigma must not be negative, got {self.shift_sigma}")
        for name in ("particles", "vesicles", "filaments", "gold"):
            if getattr(self, name) is not None and getattr(self, name) < 0:
                bad(f"--{name} must not be negative")
        if self.threads < 0:
            bad(f"--threads must be 0 (automatic) or more, got {self.threads}")
        if not self.depth_step > 0:
            bad(f"depth step must be above 0, got {self.depth_step}")
        if "/" in self.frames_subdir or "\\" in self.frames_subdir or self.frames_subdir in (".", ".."):
            bad(f"--frames-subdir must be one plain folder name, got {self.frames_subdir!r}")
        return self

    @property
    def n_tilts(self) -> int:
        """Number of tilts the scheme acquires over the tilt range."""
        from tiltflow.simulate.schemes import acquisition_order

        return len(acquisition_order(self.scheme, self.tilt_min, self.tilt_max, self.tilt_step,
                                     self.group_size, self.start_angle))

    @property
    def workers(self) -> int:
        """Tilts rendered at the same time (``threads``, or up to 4 of this process's allocated cores)."""
        from tiltflow import threads

        return self.threads if self.threads > 0 else min(4, threads.choose().count)

    @property
    def shift_sigma_px(self) -> float:
        """Sigma of the random tilt shifts in pixels: ``shift_sigma``, else 1% of the width."""
        return 0.01 * self.width if self.shift_sigma is None else float(self.shift_sigma)

    @property
    def thickness_px(self) -> float:
        """Specimen thickness in pixels (``thickness`` is in nm)."""
        return self.thickness * 10.0 / self.pixel_size


def parse_size(text: str | int | tuple[int, int]) -> tuple[int, int]:
    """``1024`` or ``"1024"`` (square) or ``"1440x1024"`` (width x height)."""
    if isinstance(text, tuple):
        return int(text[0]), int(text[1])
    s = str(text).lower().replace(" ", "")
    try:
        if "x" in s:
            w, h = s.split("x", 1)
            return int(w), int(h)
        return int(s), int(s)
    except ValueError:
        raise TiltflowError(f"--size must be N or WxH in pixels, got {text!r}") from None


def make_config(preset: str | None = "demo", **overrides: object) -> SimulationConfig:
    """The preset's values, then every override that is not ``None``; validated."""
    base = SimulationConfig()
    if preset:
        if preset not in PRESETS:
            raise TiltflowError(f"--preset must be one of {', '.join(PRESETS)}, got {preset!r}")
        base = replace(base, **PRESETS[preset])
    known = {f.name for f in fields(SimulationConfig)}
    unknown = set(overrides) - known
    if unknown:
        raise TypeError(f"unknown simulation settings: {sorted(unknown)}")
    given = {k: v for k, v in overrides.items() if v is not None}
    if "size" in given:
        given["size"] = parse_size(given["size"])  # type: ignore[arg-type]
    for k in ("n_series", "frames", "group_size", "gain_rotate", "gain_flip", "hand", "seed", "dark_tilts",
              "bad_pixels", "threads"):
        if k in given:
            given[k] = int(given[k])  # type: ignore[call-overload]
    cfg = replace(base, **given)
    if not math.isfinite(cfg.pixel_size):
        raise TiltflowError("--pixel-size must be a finite number")
    return cfg.validate()
