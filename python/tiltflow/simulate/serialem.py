"""What SerialEM writes next to the frames: file names, SubFramePath and the tilt-series ``.mdoc``.

Layout follows SerialEM 4.1 stack mdocs (``Image/MdocDefines.h``; compare the real files in
``shared/testdata/mdoc``): global keys, two ``[T = ...]`` titles (the second carries the tilt-axis angle),
then one ``[ZValue = n]`` section per image in acquisition order (n = acquisition index, as in the MRC
stack SerialEM builds), ``DateTime`` with a four-digit year and two spaces before the time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from tiltflow import __version__

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
#: when the simulated session starts (fixed: outputs must not depend on the clock)
SESSION_START = datetime(2026, 11, 21, 10, 12, 3)
#: nominal magnifications of a Krios with a counting camera, to report a plausible Magnification
_MAGS = (11500, 14500, 19500, 22500, 29000, 33000, 42000, 53000, 64000, 81000, 105000, 130000, 165000)


def format_datetime(dt: datetime, four_digit_year: bool = True) -> str:
    """SerialEM's ``DateTime``: ``21-Nov-2026  10:12:03`` (``21-Nov-26`` before SerialEM 4.1)."""
    year = f"{dt.year:04d}" if four_digit_year else f"{dt.year % 100:02d}"
    return f"{dt.day:02d}-{_MONTHS[dt.month - 1]}-{year}  {dt.hour:02d}:{dt.minute:02d}:{dt.second:02d}"


def angle_text(angle: float) -> str:
    """The angle as SerialEM puts it in frame names (one decimal, never ``-0.0``)."""
    t = f"{angle:.1f}"
    return "0.0" if t == "-0.0" else t


def movie_name(series: str, z_value: int, angle: float, movie_format: str) -> str:
    """``TS_01_003_-6.0.tif``: SerialEM/PACEtomo frame naming (name, acquisition number, angle)."""
    ext = "tif" if movie_format == "tiff" else "mrc"
    return f"{series}_{z_value:03d}_{angle_text(angle)}.{ext}"


def sub_frame_path(session: str, movie: str, subdir: str = "") -> str:
    r"""The Windows path the microscope PC wrote: ``X:\Frames\<session>\[subdir\]<movie>``."""
    parts = ["X:", "Frames", session] + ([subdir] if subdir else []) + [movie]
    return "\\".join(parts)


def magnification(pixel_size: float) -> int:
    """A plausible nominal magnification for ``pixel_size`` (A) on a 5 um-pixel counting camera."""
    want = 84000.0 / pixel_size
    return min(_MAGS, key=lambda m: abs(m - want))


@dataclass
class MdocTilt:
    """Everything one ``[ZValue]`` section reports (values as SerialEM would have them)."""

    z_value: int
    tilt_angle: float
    exposure_dose: float
    dose_rate: float
    exposure_time: float
    prior_record_dose: float
    target_defocus: float  # um, negative = underfocus
    defocus_readout: float  # um, relative lens readout
    sub_frame_path: str
    frames: int
    time: datetime
    stage_xy: tuple[float, float]
    stage_z: float
    image_shift: tuple[float, float]
    min_max_mean: tuple[float, float, float]


def write_series_mdoc(path: str | Path, *, image_file: str, size: tuple[int, int], pixel_size: float,
                      voltage: float, tilt_axis: float, spot: int, tilts: list[MdocTilt],
                      navigator_label: str = "1") -> Path:
    """Write one tilt-series mdoc in SerialEM's layout (through ``tiltflow.metadata.mdoc.write_mdoc``)."""
    from tiltflow.metadata.mdoc import write_mdoc

    start = tilts[0].time if tilts else SESSION_START
    header = {
        "PixelSpacing": _num(pixel_size),
        "Voltage": _num(voltage),
        "Version": f"SerialEM Version 4.1.0 64-bit,  simulated by tiltflow {__version__}",
        "ImageFile": image_file,
        "ImageSize": f"{size[0]} {size[1]}",
        "DataMode": 1,
    }
    stamp = format_datetime(start, four_digit_year=False)
    titles = [
        f"SerialEM: Digitized on tiltflow simulated Krios                 {stamp}    ",
        f"    Tilt axis angle = {tilt_axis:.1f}, binning = 1  spot = {spot}  camera = 1",
    ]
    mag = magnification(pixel_size)
    rot = (tilt_axis + 90.0 + 180.0) % 360.0 - 180.0
    sections = []
    for t in tilts:
        mn, mx, mean = t.min_max_mean
        keys = {
            "MinMaxMean": f"{mn:g} {mx:g} {mean:.6g}",
            "TiltAngle": _num(t.tilt_angle),
            "StagePosition": f"{t.stage_xy[0]:.6g} {t.stage_xy[1]:.6g}",
            "StageZ": _num(t.stage_z),
            "Magnification": mag,
            "Intensity": 0.186771,
            "ExposureDose": _num(t.exposure_dose),
            "DoseRate": _num(t.dose_rate),
            "PixelSpacing": _num(pixel_size),
            "SpotSize": spot,
            "Defocus": _num(t.defocus_readout),
            "ImageShift": f"{t.image_shift[0]:.6g} {t.image_shift[1]:.6g}",
            "RotationAngle": _num(rot),
            "ExposureTime": _num(t.exposure_time),
            "Binning": 1,
            "CameraIndex": 1,
            "DividedBy2": 0,
            "OperatingMode": 1,
            "MagIndex": 31,
            "LowDoseConSet": 4,
            "CountsPerElectron": 1,
            "TargetDefocus": _num(t.target_defocus),
            "PriorRecordDose": _num(t.prior_record_dose),
            "SubFramePath": t.sub_frame_path,
            "NumSubFrames": t.frames,
            "FrameDosesAndNumber": f"{t.exposure_dose / t.frames:.6g} {t.frames}",
            "DateTime": format_datetime(t.time),
            "NavigatorLabel": navigator_label,
            "FilterSlitAndLoss": "20 0",
        }
        sections.append(("ZValue", t.z_value, keys))
    return write_mdoc(path, header, titles, sections)


def _num(x: float) -> str:
    """Six significant digits, like SerialEM's ``%g`` (``3.00113``, ``-0.0011``)."""
    t = f"{float(x):.6g}"
    return "0" if t == "-0" else t


def acquisition_times(n: int, step_deg: list[float], rng, start: datetime) -> list[datetime]:
    """Time stamps of ``n`` exposures: ~20 s each plus the stage move (``step_deg`` = |angle change|)."""
    out, t = [], start
    for i in range(n):
        if i:
            t = t + timedelta(seconds=int(round(18 + 0.4 * step_deg[i] + rng.uniform(0, 6))))
        out.append(t)
    return out
