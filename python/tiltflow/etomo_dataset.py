"""Each reconstructed series as an IMOD/Etomo dataset, so it can be opened (and redone) in etomo.

Written by the reconstruct step into ``reconstruct/<name>/``, beside ``rec_<name>.mrc``:

- ``<name>.edf``: the directive file etomo opens, with every key of a real etomo 4.12 dataset
  (``tests/data/etomofiles__TS_001.edf``); ``rlnEtomoDirectiveFile`` points at it, as RELION 5's
  AlignTiltSeries sets it (``align_tiltseries_runner.cpp`` ``readIMODResults``: ``<dir>/<name>.edf``
  relative to the project).
- ``<name>.rawtlt`` (nominal angles), ``<name>.tlt`` (refined), ``<name>.xtilt`` (zeros),
  ``<name>.xf``: IMOD transforms from the stack (``tfStack``) to the aligned stack, the ones RELION's
  ``readIMODResults`` reads back into the series' rlnTomoZRot / X,YShiftAngst.
- ``<name>_fid.xf``, ``<name>_fid.tlt``, ``<name>.tltxf``, ``<name>.prexg`` (identity): etomo's
  fiducial-alignment set. Etomo (``ProcessManager.setupFiducialAlign``) deletes ``.xf``/``.tlt``
  before newst/tilt unless ``.tltxf`` exists, then copies ``_fid.xf``/``_fid.tlt`` over them; in
  fiducial-less mode it would rebuild ``.xf`` from ``.prexg`` and ``.tlt`` from ``.rawtlt``
  (``setupNonFiducialAlign``), losing the alignment. So the dataset is a fiducial one, and the
  final transforms are ``xfproduct(prexg = identity, tltxf) = .xf``.
- ``newst.com`` / ``tilt.com``: the aligned stack and the tomogram at tiltflow's binning and
  thickness, in etomo's layout (``tests/data/warp2relion-tomo__newst.com``/``tilt.com``).

IMOD geometry used (IMOD sources): ``.xf`` maps raw to aligned about the image centres
(``libcfshr/cubinterp.c``); ``tilt`` back-projects ``x_ali = xcen + X cos(t) - Z sin(t)``
(``flib/tilt/tilt.f90``, sinBeta = -sin), so IMOD's PERPENDICULAR output turned with
``clip rotx`` / ``trimvol -rx`` is tiltflow's volume[z, y, x]. IMOD centres images and volumes at
n/2 in pixel-edge coordinates, RELION at pixel int(n/2): the ``.xf`` stays what RELION's IMOD reader
inverts, and newst.com's ``OffsetsInXandY`` and tilt.com's ``SHIFT`` move IMOD's voxel grid onto
tiltflow's (:func:`grid_offsets`). IMOD's ``tilt`` takes only integer binning
(``autodoc/tilt.adoc`` IMAGEBINNED type I): for RELION's non-integer binnings newst.com shrinks by
the exact factor (``ShrinkByFactor``, a float) and tilt.com is written in aligned-stack pixels.
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tiltflow import star
from tiltflow.alignment import TiltSeriesAlignment
from tiltflow.io.etomo import ComCommand, ComFile, com_file, write_com, write_edf
from tiltflow.io.imodfiles import alignment_to_xf, write_tilt_angles, write_xf

log = logging.getLogger("tiltflow.etomo")


@dataclass(frozen=True)
class EtomoGeometry:
    """What newst.com and tilt.com must reproduce: the stack, the binning and the tomogram grid."""

    stack: Path  # tfStack (the dataset's raw stack)
    stack_size: tuple[int, int]  # x, y pixels of tfStack
    stack_binning: int  # tfStackBinning: tfStack pixels in bin-1 pixels
    bin1_size: tuple[int, int]  # x, y of the bin-1 micrographs
    tomogram_shape: tuple[int, int, int]  # d, h, w voxels of rec_<name>.mrc
    tomogram_binning: float  # rlnTomoTomogramBinning (bin-1 pixels per voxel)
    tomogram_size: tuple[int, int, int]  # rlnTomoSizeX/Y/Z (bin-1 pixels)
    ts_pixel_size: float  # A, bin-1
    sirt_iterations: int = 0  # tilt's FakeSIRTiterations (0: plain R-weighting)


def write_dataset(ts: star.TiltSeriesStar, out_dir: Path, geom: EtomoGeometry, root: Path) -> Path | None:
    """Write the etomo dataset of ``ts`` (rows = sections of ``geom.stack``); return the ``.edf``.

    ``None`` (and a warning) when the alignment has an x-tilt: tiltflow's aligners, AreTomo and
    RELION's IMOD import all give rlnTomoXTilt = 0, and IMOD's per-view x-tilt convention is not
    one this module maps.
    """
    name = ts.name
    aln = stack_alignment(ts, geom)
    if np.any(np.abs(aln.x_tilt) > 1e-6):
        log.warning("tilt series %s: non-zero rlnTomoXTilt, no etomo dataset written", name)
        return None
    xf = alignment_to_xf(aln)
    identity = np.tile([1.0, 0.0, 0.0, 1.0, 0.0, 0.0], (len(xf), 1))
    for suffix in (".xf", "_fid.xf", ".tltxf"):
        write_xf(out_dir / f"{name}{suffix}", xf)
    write_xf(out_dir / f"{name}.prexg", identity)
    for suffix in (".tlt", "_fid.tlt"):
        write_tilt_angles(out_dir / f"{name}{suffix}", aln.y_tilt)
    write_tilt_angles(out_dir / f"{name}.rawtlt", ts.tilts[star.NOMINAL_TILT].to_numpy(float))
    write_tilt_angles(out_dir / f"{name}.xtilt", aln.x_tilt)
    stack_ref = os.path.relpath(star.resolve(geom.stack, root), out_dir)
    axis = float(np.median(aln.z_rot))
    write_com(out_dir / "newst.com", newst_com(name, stack_ref, geom, axis))
    write_com(out_dir / "tilt.com", tilt_com(name, geom, axis))
    edf = out_dir / f"{name}.edf"
    write_edf(edf, edf_properties(name, ts, geom, axis, stack_ref),
              comment="written by tiltflow (etomo 4.12 directive file)")
    return edf


def stack_alignment(ts: star.TiltSeriesStar, geom: EtomoGeometry) -> TiltSeriesAlignment:
    """The series' RELION alignment with shifts in tfStack pixels about its centre ``n // 2``."""
    from tiltflow.stackgeom import shifts_to_stack

    bin1 = TiltSeriesAlignment.from_star(ts.tilts, geom.ts_pixel_size)
    b = geom.stack_binning
    shifts = shifts_to_stack(bin1.shifts_px, geom.bin1_size, geom.stack_size, b)
    return TiltSeriesAlignment(y_tilt=bin1.y_tilt, z_rot=bin1.z_rot, shifts_px=shifts,
                               pixel_size=geom.ts_pixel_size * b, x_tilt=bin1.x_tilt)


def aligned_binning(geom: EtomoGeometry) -> tuple[float, bool]:
    """(aligned-stack pixel in tfStack pixels, whether it is an integer IMOD can bin by)."""
    f = geom.tomogram_binning / geom.stack_binning
    return f, abs(f - round(f)) < 1e-4


def grid_offsets(geom: EtomoGeometry, axis: float) -> tuple[tuple[float, float], tuple[float, float]]:
    """newst.com's OffsetsInXandY (stack pixels) and tilt.com's SHIFT (aligned pixels, x and z).

    They put IMOD's voxel grid on tiltflow's: tiltflow's voxel i sits at bin-1 ``B*i - int(S/2)``
    about RELION's centres; IMOD centres the aligned stack at ``w/2`` and tilt's output at
    ``int(w/2) + 0.5``, ``int(thickness/2) + 0.5`` (1-based, tilt.f90 xcenOut/ycenOut) and the stack
    at ``ns/2`` in pixel-edge coordinates (cubinterp.c), the last folded in about the median axis.
    """
    d, h, w = geom.tomogram_shape
    big_b, b = geom.tomogram_binning, geom.stack_binning
    sx, sy, sz = (s // 2 for s in geom.tomogram_size)
    half = np.array([b * (0.5 * (n % 2) - 0.5) for n in geom.stack_size])  # IMOD minus RELION stack centre
    z = np.deg2rad(axis)
    e = np.array([[np.cos(z), np.sin(z)], [-np.sin(z), np.cos(z)]]) @ half  # in the aligned frame
    offsets = (-e[0] / b, (big_b * (h / 2 - 0.5) - sy - e[1]) / b)
    shift = (0.5 + sx / big_b - w // 2, d - sz / big_b - d // 2 - 0.5)
    return (float(offsets[0]), float(offsets[1])), (float(shift[0]), float(shift[1]))


def newst_com(name: str, stack_ref: str, geom: EtomoGeometry, axis: float) -> ComFile:
    """The etomo newst.com: transform with ``<name>.xf`` and bin to the tomogram's voxel."""
    f, integer = aligned_binning(geom)
    d, h, w = geom.tomogram_shape
    (ox, oy), _ = grid_offsets(geom, axis)
    reduce = ("BinByFactor", str(round(f))) if integer else ("ShrinkByFactor", f"{f:.6f}")
    cmd = ComCommand("newstack", "-StandardInput", separator="\t", options=[
        ("AntialiasFilter", "-1"), ("InputFile", stack_ref), ("OutputFile", f"{name}_ali.mrc"),
        ("TransformFile", f"{name}.xf"), ("TaperAtFill", "1,1"), ("AdjustOrigin", ""),
        ("SizeToOutputInXandY", f"{w},{h}"), ("OffsetsInXandY", f"{ox:.4f},{oy:.4f}"), ("ImagesAreBinned", "1.0"),
        reduce,
    ])
    header = ["THIS IS A COMMAND FILE TO MAKE AN ALIGNED STACK FROM THE ORIGINAL STACK",
              "written by tiltflow: the aligned stack of tiltflow's tomogram",
              f"({reduce[0]} {reduce[1]}: tomogram binning {geom.tomogram_binning:.6f} over stack binning "
              f"{geom.stack_binning}; OffsetsInXandY put IMOD's voxel grid on tiltflow's)"]
    return com_file(header, ["$setenv IMOD_OUTPUT_FORMAT MRC", cmd, "$if (-e ./savework) ./savework"])


def tilt_com(name: str, geom: EtomoGeometry, axis: float) -> ComFile:
    """The etomo tilt.com: R-weighted back-projection of the aligned stack, tiltflow's thickness."""
    f, integer = aligned_binning(geom)
    d, h, w = geom.tomogram_shape
    n = round(f) if integer else 1  # IMAGEBINNED is an integer: else everything in aligned pixels
    _, (sx, sz) = grid_offsets(geom, axis)
    cutoff, sigma = radial_filter()
    options = [
        ("InputProjections", f"{name}_ali.mrc"), ("OutputFile", f"{name}_full_rec.mrc"),
        ("IMAGEBINNED", str(n)), ("TILTFILE", f"{name}.tlt"), ("THICKNESS", str(d * n)),
        ("RADIAL", f"{cutoff:.3f} {sigma:.3f}"), ("FalloffIsTrueSigma", "1"), ("XAXISTILT", "0.0"),
        ("SCALE", "0.0 1.0"), ("PERPENDICULAR", ""), ("MODE", "2"), ("FULLIMAGE", f"{w * n} {h * n}"),
        ("SUBSETSTART", "0 0"), ("AdjustOrigin", ""), ("ActionIfGPUFails", "1,2"),
        ("XTILTFILE", f"{name}.xtilt"), ("OFFSET", "0.0"), ("SHIFT", f"{sx * n:.4f} {sz * n:.4f}"),
    ]
    if geom.sirt_iterations > 0:
        options.append(("FakeSIRTiterations", str(geom.sirt_iterations)))
    cmd = ComCommand("tilt", "-StandardInput", options=options)
    header = ["Command file to run Tilt", "written by tiltflow: tiltflow's tomogram, made by IMOD",
              "RADIAL: the Gaussian fall-off closest to tiltflow's Hann-apodised ramp",
              "SHIFT: puts IMOD's voxel grid on tiltflow's (RELION's centres)"]
    return com_file(header, ["$setenv IMOD_OUTPUT_FORMAT MRC", cmd, "$if (-e ./savework) ./savework"])


@functools.lru_cache(maxsize=1)
def radial_filter() -> tuple[float, float]:
    """IMOD's RADIAL (cutoff, true sigma) closest to tiltflow's WBP apodisation.

    IMOD's weighting is flat to the cutoff, then a Gaussian fall-off (tilt.adoc RADIAL,
    FalloffIsTrueSigma); fitted (ramp-weighted least squares) to tiltflow's apodisation on a grid of
    cutoffs and sigmas, all at once (a loop over the 6000 pairs was 7 % of a binned reconstruction).
    """
    import torch

    from tiltflow.tomo.filters import FilterSettings, _apodization

    apod = _apodization((1, 512), FilterSettings(), torch.device("cpu"))
    target = apod[0].numpy().astype(np.float64) if apod is not None else np.ones(257)
    k = np.arange(len(target)) / 512.0
    cut = np.round(np.arange(0.0, 0.5001, 0.005), 6)[:, None, None]
    sigma = np.round(np.arange(0.005, 0.3001, 0.005), 6)[None, :, None]
    g = np.where(k <= cut, 1.0, np.exp(-((k - cut) ** 2) / (2 * sigma * sigma)))
    err = np.sum((k * (g - target)) ** 2, axis=-1)
    i, j = np.unravel_index(int(np.argmin(err)), err.shape)  # the first minimum, as the loop kept
    return float(cut[i, 0, 0]), float(sigma[0, j, 0])


#: Every key of a real etomo 4.12.17 single-axis dataset (teamtomo/etomofiles TS_001.edf), with
#: etomo's values; :func:`edf_properties` sets the ones tiltflow knows.
ETOMO_KEYS: dict[str, str] = {
    "Setup.DataSource": "CCD", "ReconstructionState.InvalidEdgeFunctionsA": "no result",
    "ReconstructionState.InvalidEdgeFunctionsB": "no result", "Setup.BackupDirectory": "",
    "ProcessTrack.PostProcessing": "Not started", "Setup.Combine.ManualCleanup": "false",
    "Setup.AxisA.TiltAngle.Type": "File", "Setup.FiducialessAlignmentB": "false",
    "Setup.FiducialessAlignmentA": "false", "ProcessTrack.FinalAlignedStack-A": "Not started",
    "ProcessTrack.FinalAlignedStack-B": "Not started", "Setup.tiltalign.TargetPatchSizeXandY": "700,700",
    "Setup.AxisB.TiltAngle.RangeMin": "-60.0", "Setup.Combine.TempDirectory": "",
    "Setup.ImageFile.ImageFilenameStyle": "MRC", "Setup.Combine.UseList": "",
    "Setup.Combine.PatchBoundaryYMax": "0", "Setup.WholeTomogramSampleA": "false", "Setup.DatasetName": "",
    "batchruntomo.MadeZFactorsA": "false", "batchruntomo.UsedLocalAlignmentsA": "false",
    "batchruntomo.a.align.AxisZShift": "0.0", "batchruntomo.a.align.AngleOffset": "0.0",
    "batchruntomo.a.SeedingDone": "false", "batchruntomo.Track.A.LightBeads": "0",
    "batchruntomo.OrigImageStackExt": "mrc", "Setup.FiducialDiameter": "6.0",
    "Setup.WholeTomogramSampleB": "false", "Setup.SetFEIPixelSize": "false",
    "ReconstructionState.A.AdjustOrigin": "true", "ProcessTrack.RevisionNumber": "2.0",
    "Setup.Combine.PatchBoundaryYMin": "0", "Setup.Combine.MaxPatchBoundaryZMax": "0",
    "ProcessTrack.CoarseAlignment-A": "Complete", "Setup.ViewType": "Single View",
    "ProcessTrack.CoarseAlignment-B": "Not started", "ReconstructionState.TrimvolFlipped": "no result",
    "Setup.Track.B.TrackMethod": "Seed", "Setup.Track.A.TrackMethod": "Seed",
    "Setup.A.SizeToOutputInXandY": "/", "ProcessTrack.TomogramGeneration-A": "Not started",
    "ProcessTrack.TomogramGeneration-B": "Not started", "ProcessTrack.CleanUp": "Not started",
    "Setup.AxisA.TiltAngle.RangeMin": "-60.0", "Setup.AxisB.TiltAngle.TiltAngleFilename": "",
    "Setup.Pos.A.NewDialog": "true", "Setup.Squeezevol.LinearInterpolation": "false",
    "Setup.Stack.B.Is.Twodir": "false", "Setup.Combine.RevisionNumber": "1.2",
    "Setup.Stack.B.CTF.AutoFit.RangeAndStep": "-Infinity,-Infinity", "Setup.UseLocalAlignmentsB": "false",
    "Setup.UseLocalAlignmentsA": "false", "Setup.AxisB.TiltAngle.RangeStep": "1.0",
    "Setup.Combine.FiducialMatchListA": "", "Setup.Combine.FiducialMatchListB": "",
    "Setup.B.SizeToOutputInXandY": "/", "Setup.Binning": "1", "Setup.Combine.ModelBased": "false",
    "ReconstructionState.MadeZFactorsB": "no result", "Setup.AxisA.ExcludeProjections": "",
    "Setup.Version.Etomo.Created": "4.12.17", "ReconstructionState.MadeZFactorsA": "no result",
    "Setup.FinalStackBinningB": "1", "ReconstructionState.SqueezevolFlipped": "no result",
    "Setup.FinalStackBinningA": "1", "ProcessTrack.FiducialModel-B": "Not started",
    "ProcessTrack.FiducialModel-A": "Complete", "Setup.Combine.PatchBoundaryXMax": "0",
    "ProcessTrack.Setup": "Complete", "ProcessTrack.PreProcessing-A": "Complete",
    "ProcessTrack.PreProcessing-B": "Not started", "ProcessTrack.FineAlignment-B": "Not started",
    "ProcessTrack.FineAlignment-A": "Complete", "Setup.AxisA.TiltAngle.TiltAngleFilename": "",
    "Setup.OrigRawImageStackExt": "mrc", "Setup.AxisA.TiltAngle.RangeStep": "1.0",
    "Setup": "-Infinity,-Infinity", "Setup.Combine.PatchBoundaryXMin": "0", "Setup.RevisionNumber": "1.12",
    "Setup.Track.B.SeedModel.Transfer": "true", "Setup.Track.A.Raptor.UseRawStack": "false",
    "Setup.PixelSize": "", "ReconstructionState.B.AdjustOrigin": "true",
    "ReconstructionState.Combine.ScriptsCreated": "no result", "Setup.Combine.Transfer": "true",
    "ReconstructionState.UsedLocalAlignmentsA": "no result", "ReconstructionState.UsedLocalAlignmentsB": "no result",
    "Setup.Combine.FiducialMatch": "BothSides", "Setup.AxisType": "Single Axis", "Setup.ImageRotationA": "",
    "ProcessTrack.TomogramPositioning-A": "Complete", "Setup.ImageRotationB": "",
    "Setup.Stack.A.Is.Twodir": "false", "Setup.Pos.B.NewDialog": "true",
    "ProcessTrack.TomogramPositioning-B": "Not started", "Setup.Combine.PatchBoundaryZMax": "0",
    "Setup.DefaultGpuProcessing": "false", "Setup.Track.A.SeedModel.Auto": "true",
    "Setup.RawImageStackExt": "mrc", "Setup.Combine.PatchSize": "M", "Setup.AxisB.TiltAngle.Type": "Extract",
    "Setup.Combine.PatchBoundaryZMin": "0", "Setup.DefaultParallel": "false",
    "Setup.Version.Etomo.Modified": "4.12.17", "Setup.tiltalign.NumberOfLocalPatchesXandY": "5,5",
    "Setup.Combine.PatchRegionModel": "", "ReconstructionState.NewstFiducialessAlignmentA": "false",
    "ReconstructionState.NewstFiducialessAlignmentB": "no result", "ProcessTrack.TomogramCombination": "Not started",
}


def edf_properties(name: str, ts: star.TiltSeriesStar, geom: EtomoGeometry, axis: float, stack_ref: str) -> dict:
    """The ``.edf`` of this dataset: etomo's keys, tiltflow's values where it has them."""
    f, _ = aligned_binning(geom)
    nominal = ts.tilts[star.NOMINAL_TILT].to_numpy(float)
    ext = Path(stack_ref).suffix.lstrip(".") or "mrc"
    props = dict(ETOMO_KEYS)
    props.update({
        "Setup.DatasetName": name,
        "Setup.PixelSize": f"{geom.ts_pixel_size * geom.stack_binning / 10.0:.6g}",  # nm, of the raw stack
        "Setup.ImageRotationA": f"{axis:.2f}",  # tilt-axis angle from the Y axis, as SerialEM/RELION
        "Setup.AxisA.TiltAngle.TiltAngleFilename": f"{name}.rawtlt",
        "Setup.AxisA.TiltAngle.RangeMin": f"{nominal.min():.2f}",
        "Setup.AxisA.TiltAngle.RangeStep": f"{np.median(np.abs(np.diff(np.sort(nominal)))) if len(nominal) > 1 else 1.0:.2f}",
        "Setup.FinalStackBinningA": str(max(1, round(f))),  # etomo's is an integer (newst.com has the exact one)
        "Setup.RawImageStackExt": ext, "Setup.OrigRawImageStackExt": ext, "batchruntomo.OrigImageStackExt": ext,
    })
    return props
