"""Every STAR label tiltflow writes or reads: one home, with unit, owning step and meaning.

RELION 5 labels (``rln*``) follow RELION's own names and units (``src/metadata_label.h``; tomography:
``src/jaz/tomography/tomogram_set.cpp``, ``tomogram.cpp``). tiltflow's own columns start with ``tf``;
``export`` drops them, so RELION never sees them (``star._clean_tilts``). ``star`` re-exports every
constant (``star.DEFOCUS_U``), so code writes ``star.X`` and never the label itself: a test
(tests/test_columns.py) fails on any ``rln*``/``tf*`` string literal outside this module.

Tables: ``global`` = the series' row of ``tomograms.star``; ``tilt`` = the per-tilt table;
``motion`` = RELION's per-movie motion STAR file (``rlnMicrographMetadata``); ``optics``/``movies`` =
the movies STAR file ``relion_run_motioncorr`` reads. ``owner`` is the step that writes the column
(``RELION`` for labels tiltflow only reads or passes on).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Column:
    """One STAR label: what it holds, in which unit, and which step writes it."""

    label: str
    table: str  # global | tilt | motion | optics | movies
    unit: str  # "" for names, flags and counts
    owner: str
    meaning: str


#: label -> Column, in the order defined below (DEVELOPERS.md's column table follows it)
REGISTRY: dict[str, Column] = {}


def _col(label: str, table: str, unit: str, owner: str, meaning: str) -> str:
    if label in REGISTRY:
        raise ValueError(f"column {label} defined twice")
    REGISTRY[label] = Column(label, table, unit, owner, meaning)
    return label


# --- global table (one row per tilt series), RELION 5 ------------------------------------------
TOMO_NAME = _col("rlnTomoName", "global", "", "import", "tilt-series name (the mdoc's stem)")
TS_STAR_FILE = _col("rlnTomoTiltSeriesStarFile", "global", "path", "every step", "the per-tilt STAR file")
VOLTAGE = _col("rlnVoltage", "global", "kV", "import", "acceleration voltage")
CS = _col("rlnSphericalAberration", "global", "mm", "import", "spherical aberration")
AMP_CONTRAST = _col("rlnAmplitudeContrast", "global", "fraction", "import", "amplitude contrast")
ORIGINAL_PIXEL_SIZE = _col("rlnMicrographOriginalPixelSize", "global", "A", "import", "movie pixel size")
TS_PIXEL_SIZE = _col("rlnTomoTiltSeriesPixelSize", "global", "A", "motioncor", "pixel of the motion-corrected images")
HAND = _col("rlnTomoHand", "global", "+1/-1", "import, exclude", "defocus handedness (exclude may measure it)")
OPTICS_GROUP = _col("rlnOpticsGroupName", "global", "", "import", "optics group of the series")
TOMO_BINNING = _col("rlnTomoTomogramBinning", "global", "", "reconstruct", "tomogram pixel / tilt-series pixel")
TOMO_SIZE_X = _col("rlnTomoSizeX", "global", "px (unbinned)", "reconstruct", "tomogram width")
TOMO_SIZE_Y = _col("rlnTomoSizeY", "global", "px (unbinned)", "reconstruct", "tomogram height")
TOMO_SIZE_Z = _col("rlnTomoSizeZ", "global", "px (unbinned)", "reconstruct", "tomogram thickness")
TOMOGRAM = _col("rlnTomoReconstructedTomogram", "global", "path", "reconstruct", "the tomogram")
TOMOGRAM_HALF1 = _col("rlnTomoReconstructedTomogramHalf1", "global", "path", "reconstruct", "even-frame tomogram")
TOMOGRAM_HALF2 = _col("rlnTomoReconstructedTomogramHalf2", "global", "path", "reconstruct", "odd-frame tomogram")
ARETOMO_AXIS_SCORE = _col("rlnAreTomoTiltAxisScore", "global", "", "align", "AreTomo's tilt-axis score")
ETOMO_DIRECTIVE = _col("rlnEtomoDirectiveFile", "global", "path", "reconstruct", "the series' etomo .edf")

# --- per-tilt table, RELION 5 --------------------------------------------------------------------
MOVIE = _col("rlnMicrographMovieName", "tilt", "path", "import", "raw movie (may be absolute)")
FRAME_COUNT = _col("rlnTomoTiltMovieFrameCount", "tilt", "", "import", "frames in the movie")
NOMINAL_TILT = _col("rlnTomoNominalStageTiltAngle", "tilt", "deg", "import", "stage tilt from the mdoc")
NOMINAL_AXIS = _col("rlnTomoNominalTiltAxisAngle", "tilt", "deg", "import", "tilt axis from the mdoc")
PRE_EXPOSURE = _col("rlnMicrographPreExposure", "tilt", "e/A^2", "import", "dose before this tilt")
NOMINAL_DEFOCUS = _col("rlnTomoNominalDefocus", "tilt", "um", "import",
                       "SerialEM TargetDefocus, negative = underfocus; 0 = not recorded")
MICROGRAPH = _col("rlnMicrographName", "tilt", "path", "motioncor", "motion-corrected image")
MICROGRAPH_EVEN = _col("rlnMicrographNameEven", "tilt", "path", "motioncor", "sum of the even frames")
MICROGRAPH_ODD = _col("rlnMicrographNameOdd", "tilt", "path", "motioncor", "sum of the odd frames")
MICROGRAPH_METADATA = _col("rlnMicrographMetadata", "tilt", "path", "motioncor", "per-movie motion STAR file")
POWER_SPECTRUM = _col("rlnCtfPowerSpectrum", "tilt", "path", "motioncor", "power spectrum of the sum")
MOTION_TOTAL = _col("rlnAccumMotionTotal", "tilt", "A", "motioncor", "accumulated motion")
MOTION_EARLY = _col("rlnAccumMotionEarly", "tilt", "A", "motioncor", "motion in the first frames")
MOTION_LATE = _col("rlnAccumMotionLate", "tilt", "A", "motioncor", "motion in the later frames")
CTF_IMAGE = _col("rlnCtfImage", "tilt", "path", "ctf", "diagnostic spectrum (RELION's ':mrc' suffix)")
DEFOCUS_U = _col("rlnDefocusU", "tilt", "A", "ctf", "major-axis defocus, positive = underfocus")
DEFOCUS_V = _col("rlnDefocusV", "tilt", "A", "ctf", "minor-axis defocus")
DEFOCUS_ANGLE = _col("rlnDefocusAngle", "tilt", "deg", "ctf", "astigmatism angle")
ASTIGMATISM = _col("rlnCtfAstigmatism", "tilt", "A", "ctf", "|U - V|")
CTF_FOM = _col("rlnCtfFigureOfMerit", "tilt", "", "ctf", "fit score")
CTF_MAX_RES = _col("rlnCtfMaxResolution", "tilt", "A", "ctf", "resolution the fit reaches")
ICE_RING = _col("rlnCtfIceRingDensity", "tilt", "", "ctf", "power in the ice ring (CTFFIND5)")
PHASE_SHIFT = _col("rlnPhaseShift", "tilt", "deg", "ctf", "phase-plate shift")
X_TILT = _col("rlnTomoXTilt", "tilt", "deg", "align", "rotation about X (RELION 5 projection model)")
Y_TILT = _col("rlnTomoYTilt", "tilt", "deg", "align", "tilt angle (rotation about Y)")
Z_ROT = _col("rlnTomoZRot", "tilt", "deg", "align", "in-plane rotation (tilt axis)")
X_SHIFT = _col("rlnTomoXShiftAngst", "tilt", "A", "align", "X shift of the projection")
Y_SHIFT = _col("rlnTomoYShiftAngst", "tilt", "A", "align", "Y shift of the projection")
CTF_SCALE = _col("rlnCtfScalefactor", "tilt", "", "reconstruct", "CTF scale, cos(tilt) when not given")

#: RELION 4 projection matrices: never written (RELION 5 deactivates them on write).
RELION4_MATRICES = tuple(
    _col(f"rlnTomoProj{a}", "tilt", "", "RELION", f"RELION 4 projection matrix row {a} (dropped)") for a in "XYZW"
)

# --- tiltflow's own global columns -------------------------------------------------------------
TF_MDOC = _col("tfMdoc", "global", "path", "import", "the series' mdoc")
TF_HAND_SCALE = _col("tfHandScale", "global", "", "exclude", "least-squares scale h of slope = -h tan(tilt) (about +-1)")
TF_HAND_Z = _col("tfHandZ", "global", "", "exclude", "z score of the hand test")
TF_HAND_AGREEMENT = _col("tfHandAgreement", "global", "fraction", "exclude", "tilts agreeing with the hand")
TF_HAND_MEASURED = _col("tfHandMeasured", "global", "+1/-1/0", "exclude", "measured hand, 0 = undecided")
TF_HAND_SOURCE = _col("tfHandSource", "global", "", "exclude", "where rlnTomoHand came from: --hand, imported, measured")
TF_STACK = _col("tfStack", "global", "path", "stack", "the stack, ordered by tilt angle")
TF_STACK_EVEN = _col("tfStackEven", "global", "path", "stack", "stack of the even sums")
TF_STACK_ODD = _col("tfStackOdd", "global", "path", "stack", "stack of the odd sums")
TF_STACK_BINNING = _col("tfStackBinning", "global", "", "stack", "stack pixel / tilt-series pixel")
TF_STACK_PIXEL_SIZE = _col("tfStackPixelSize", "global", "A", "stack", "stack pixel size")
TF_ALIGN_TILT_OFFSET = _col("tfAlignTiltOffset", "global", "deg", "align", "tilt-angle offset found")
TF_ALIGN_TILT_AXIS = _col("tfAlignTiltAxis", "global", "deg", "align", "median refined tilt axis")
TF_ALIGN_BACKEND = _col("tfAlignBackend", "global", "", "align", "which aligner ran")
TF_CTF_CORRECTION = _col("tfCtfCorrection", "global", "", "reconstruct", "CTF correction of the tomogram")
TF_DOSE_WEIGHTING = _col("tfDoseWeighting", "global", "0/1", "reconstruct", "exposure weighting on")
TF_UNCORRECTED_XY = _col("tfTomogramUncorrectedXY", "global", "path", "reconstruct",
                         "central XY slice without CTF correction (report)")
TF_UNCORRECTED_XZ = _col("tfTomogramUncorrectedXZ", "global", "path", "reconstruct",
                         "central XZ slice without CTF correction (report)")

# --- tiltflow's own per-tilt columns -----------------------------------------------------------
TF_Z_VALUE = _col("tfZValue", "tilt", "", "import", "SerialEM ZValue (section index in the mdoc)")
TF_ACQ_INDEX = _col("tfAcquisitionIndex", "tilt", "", "import", "0-based acquisition order")
TF_DOSE = _col("tfDose", "tilt", "e/A^2", "import", "dose of this tilt")
TF_EXPOSURE_TIME = _col("tfExposureTime", "tilt", "s", "import", "exposure time, 0 = not recorded")
TF_DATE_TIME = _col("tfDateTime", "tilt", "ISO 8601", "import", "acquisition time, 'unknown' if not recorded")
TF_MOVIE_PROBLEM = _col("tfMovieProblem", "tilt", "", "motioncor",
                        "why a tilt has no motion-corrected image (--skip-bad-movies; empty when it has one)")
TF_CTF_GRADIENT_SIGN = _col("tfCtfGradientSign", "tilt", "+1/-1", "ctf", "sign of the defocus gradient across the axis")
TF_CTF_PROBLEM = _col("tfCtfProblem", "tilt", "", "ctf", "why a tilt has no CTF fit (empty when it has one)")
TF_CTF_PIXEL_SIZE = _col("tfCtfPixelSize", "tilt", "A", "ctf",
                         "pixel of the diagnostic spectrum; read by the report, else the image's own")
TF_EXCLUDED = _col("tfExcluded", "tilt", "0/1", "exclude", "1 = left out of stack, align and reconstruct")
TF_EXCLUDE_REASON = _col("tfExcludeReason", "tilt", "", "exclude", "why a tilt is excluded")
TF_DARK_RATIO = _col("tfDarkRatio", "tilt", "", "exclude", "|mean| / std of the micrograph (AreTomo's dark rule)")
TF_CONTRAST = _col("tfContrast", "tilt", "", "exclude", "neighbour correlation of the binned micrograph (specimen contrast)")
TF_DEFOCUS_SLOPE = _col("tfDefocusSlope", "tilt", "", "exclude", "defocus slope across the tilt axis, A per A (hand test)")
TF_ALIGN_RESIDUAL = _col("tfAlignResidualPx", "tilt", "px (stack)", "align", "alignment residual")
TF_ALIGN_SCORE = _col("tfAlignScore", "tilt", "", "align", "aligner's per-tilt score")
TF_DOSE_HALF_WEIGHT = _col("tfDoseHalfWeightAngst", "tilt", "A", "reconstruct",
                           "resolution at which exposure weighting halves the tilt")

# --- RELION's per-movie motion STAR file (motion/metadata.py; RELION Micrograph::write) ---------
IMAGE_SIZE_X = _col("rlnImageSizeX", "motion", "px", "motioncor", "movie width")
IMAGE_SIZE_Y = _col("rlnImageSizeY", "motion", "px", "motioncor", "movie height")
IMAGE_SIZE_Z = _col("rlnImageSizeZ", "motion", "", "motioncor", "movie frames")
GAIN_NAME = _col("rlnMicrographGainName", "motion", "path", "motioncor", "gain reference")
MOVIE_BINNING = _col("rlnMicrographBinning", "motion", "", "motioncor", "binning of the motion correction")
DOSE_RATE = _col("rlnMicrographDoseRate", "motion", "e/A^2 per frame", "motioncor", "dose per frame")
START_FRAME = _col("rlnMicrographStartFrame", "motion", "", "motioncor", "first frame used (1-based)")
MOTION_MODEL_VERSION = _col("rlnMotionModelVersion", "motion", "", "motioncor", "0 = none, 1 = cubic polynomial")
FRAME_NUMBER = _col("rlnMicrographFrameNumber", "motion", "", "motioncor", "frame, 1-based")
SHIFT_X = _col("rlnMicrographShiftX", "motion", "px (movie)", "motioncor", "frame shift, -9999 = not used")
SHIFT_Y = _col("rlnMicrographShiftY", "motion", "px (movie)", "motioncor", "frame shift, -9999 = not used")
MOTION_COEFF_INDEX = _col("rlnMotionModelCoeffsIdx", "motion", "", "motioncor", "local model coefficient index")
MOTION_COEFF = _col("rlnMotionModelCoeff", "motion", "", "motioncor", "local model coefficient (18 x, then 18 y)")

# --- the movies STAR file for relion_run_motioncorr (backends/relion.py) ------------------------
OPTICS_GROUP_NUMBER = _col("rlnOpticsGroup", "optics, movies", "", "motioncor", "optics group number")

# No computed ``__all__``: ``from tiltflow.columns import *`` (star.py) re-exports every public name, which
# a type checker can follow (it cannot follow a list built at import time).


def markdown_table() -> str:
    """The registry as a Markdown table (``python -m tiltflow.columns``), for DEVELOPERS.md readers."""
    rows = ["| label | table | unit | written by | meaning |", "|---|---|---|---|---|"]
    rows += [f"| `{c.label}` | {c.table} | {c.unit} | {c.owner} | {c.meaning.replace('|', '&#124;')} |"
             for c in REGISTRY.values()]
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
