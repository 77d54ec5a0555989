"""``simulate_session``: a complete synthetic SerialEM session (movies, mdocs, gain) and its ground truth.

Order of work per tilt series: acquisition plan (angles, shifts, defocus, drift, dose, times), phantom,
then per tilt: analytic projection -> CTF -> frames -> Poisson counts -> movie file; finally the mdoc
and the phantom volume. Random numbers come from independent streams spawned from the seed (species,
camera, and per series: phantom, acquisition, noise), so the output is byte-identical for a seed and
changing, say, the frame count or the dose does not move the particles.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np

from tiltflow.errors import TiltflowError
from tiltflow.simulate import detector, serialem
from tiltflow.simulate.config import SimulationConfig
from tiltflow.simulate.imaging import (
    FourierGrid,
    Optics,
    TiltCtf,
    delocalisation_px,
    frames_of,
    tilt_intensity,
    transmission,
)
from tiltflow.simulate.motion import frame_drift, specimen_shifts, stage_kick
from tiltflow.simulate.phantom import (
    ICE_PHASE_PSD,
    Phantom,
    Species,
    default_counts,
    generate_phantom,
    make_species,
)
from tiltflow.simulate.project import Grid, TiltProjection, make_grid
from tiltflow.simulate.schemes import acquisition_order
from tiltflow.simulate.truth import (
    CONVENTIONS,
    VERSION,
    GainTruth,
    GroundTruth,
    SeriesTruth,
    TiltTruth,
    write_truth,
)
from tiltflow.simulate.volume import phantom_binning, render_volume

log = logging.getLogger("tiltflow.simulate")

GAIN_FILE = "gain.mrc"
TRUTH_FILE = "ground_truth.json"
DOSE_RATE = 10.0  # e/pixel/s at the camera without specimen: sets ExposureTime (kept within 0.4-4 s)
SPOT = 8


@dataclass
class TiltPlan:
    """Everything decided about one tilt before any image is drawn."""

    index: int
    target: float
    nominal: float
    true: float
    shift: np.ndarray
    defocus_u: float
    defocus_v: float
    defocus_angle: float
    mean_defocus_um: float
    target_defocus_um: float  # SerialEM's TargetDefocus: negative = underfocus
    drift: np.ndarray
    dark: bool
    dose: float
    pre_exposure: float
    transmission: float


def simulate_session(cfg: SimulationConfig, out: str | Path) -> GroundTruth:
    """Write a session for ``cfg`` into folder ``out``; return its ground truth (also written as JSON)."""
    import torch

    cfg.validate()
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # parallel over tilts instead (cfg.workers): OpenMP threads thrash on busy machines
    try:
        return _simulate_session(cfg, Path(out))
    finally:
        torch.set_num_threads(before)


def _simulate_session(cfg: SimulationConfig, out: Path) -> GroundTruth:
    if out.exists() and not out.is_dir():
        raise TiltflowError("output exists and is not a folder", out)
    out.mkdir(parents=True, exist_ok=True)
    session = cfg.session_name or out.resolve().name or "session"
    t0 = time.perf_counter()
    ss = np.random.SeedSequence(cfg.seed)
    s_species, s_camera, *s_series = ss.spawn(2 + cfg.n_series)
    species = make_species(np.random.default_rng(s_species))
    sens = detector.sensitivity_map(cfg.height, cfg.width, np.random.default_rng(s_camera), cfg.bad_pixels)
    detector.write_mrc_deterministic(out / GAIN_FILE, detector.gain_file_array(sens, cfg.gain_rotate, cfg.gain_flip),
                                     cfg.pixel_size, label="tiltflow simulate: gain (1/sensitivity)", stack=False)
    optics = Optics(cfg.pixel_size, cfg.voltage, cfg.cs, cfg.amplitude_contrast, cfg.bfactor)
    series = []
    start = serialem.SESSION_START
    for i in range(cfg.n_series):
        st, start = _simulate_series(cfg, i, s_series[i], species, sens, out, session, optics, start)
        series.append(st)
    truth = GroundTruth(
        version=VERSION, pixel_size=cfg.pixel_size, voltage=cfg.voltage, cs=cfg.cs,
        amplitude_contrast=cfg.amplitude_contrast, gain=GainTruth(GAIN_FILE, cfg.gain_rotate, cfg.gain_flip),
        series=series, movie_format=cfg.movie_format, image_size=[cfg.width, cfg.height], frames=cfg.frames,
        seed=cfg.seed, species=[_species_dict(s) for s in species], conventions=dict(CONVENTIONS), root=out,
    )
    write_truth(out / TRUTH_FILE, truth)
    log.info("simulated %d tilt series in %.1f s -> %s", cfg.n_series, time.perf_counter() - t0, out)
    return truth


def prepare_output(out: Path, overwrite: bool = False) -> None:
    """Refuse a non-empty ``out``; with ``overwrite`` remove the files of a session simulated there before.

    Only files named in the old ``ground_truth.json`` are removed: a folder holding anything else is
    never cleared.
    """
    out = Path(out)
    if not out.exists() or not any(out.iterdir()):
        return
    old = out / TRUTH_FILE
    if not old.is_file():
        raise TiltflowError("folder is not empty and holds no simulated session; choose a new or empty folder", out)
    if not overwrite:
        raise TiltflowError("folder already holds a simulated session; pass --overwrite to replace it", out)
    from tiltflow.simulate.truth import load_truth

    truth = load_truth(old)
    names = [truth.gain.file]
    for s in truth.series:
        names += [s.mdoc, s.phantom] + [t.movie for t in s.tilts]
    for name in names:
        f = (out / name).resolve()
        if f.is_file() and out.resolve() in f.parents:
            f.unlink()
    old.unlink()
    for d in sorted({(out / n).parent for n in names}, reverse=True):
        if d != out and d.is_dir() and not any(d.iterdir()):
            d.rmdir()


def plan_series(cfg: SimulationConfig, index: int, rng: np.random.Generator) -> list[TiltPlan]:
    """Angles, shifts, defocus, drift, dose and dark flags of one series, in acquisition order."""
    targets = acquisition_order(cfg.scheme, cfg.tilt_min, cfg.tilt_max, cfg.tilt_step, cfg.group_size,
                                cfg.start_angle)
    n = len(targets)
    jitter = rng.normal(0.0, cfg.stage_jitter, n) if cfg.stage_jitter else np.zeros(n)
    nominal = np.array([float(serialem._num(a + j)) for a, j in zip(targets, jitter, strict=True)])
    err = rng.normal(0.0, cfg.tilt_error, n) if cfg.tilt_error else np.zeros(n)
    true = nominal + cfg.tilt_offset + err
    shifts = specimen_shifts(true, cfg.shift_sigma_px, rng)
    # defocus: a target per series spread over the range, drifting slowly across the acquisition
    lo, hi = cfg.defocus_min, cfg.defocus_max
    spread = hi - lo
    target_um = round(lo + (index + 0.5) * spread / cfg.n_series, 2)
    t = np.arange(n) / max(n - 1, 1)
    wander = 0.3 * spread * np.sin(2 * math.pi * rng.uniform(0.5, 1.5) * t + rng.uniform(0, 2 * math.pi))
    noise = rng.normal(0.0, min(0.05, spread / 10), n) if spread > 0 else np.zeros(n)
    mean_um = np.clip(target_um + wander + noise, lo, hi)
    astig = cfg.astigmatism * rng.uniform(0.85, 1.15, n)
    base_angle = rng.uniform(-90, 90)
    angles = (base_angle + rng.normal(0, 3.0, n) + 90.0) % 180.0 - 90.0
    dark = np.zeros(n, bool)
    if cfg.dark_tilts:
        dark[n - cfg.dark_tilts:] = True
    plans = []
    prev = None
    for i in range(n):
        du = (mean_um[i] + astig[i] / 2) * 1e4
        dv = (mean_um[i] - astig[i] / 2) * 1e4
        drift = frame_drift(cfg.frames, cfg.drift, rng, stage_kick(prev, targets[i]))
        prev = targets[i]
        plans.append(TiltPlan(
            index=i, target=targets[i], nominal=float(nominal[i]), true=float(true[i]), shift=shifts[i],
            defocus_u=float(du), defocus_v=float(dv), defocus_angle=float(angles[i]), mean_defocus_um=float(mean_um[i]),
            target_defocus_um=-target_um,
            drift=drift, dark=bool(dark[i]), dose=cfg.dose_per_tilt, pre_exposure=i * cfg.dose_per_tilt,
            transmission=transmission(cfg.thickness, float(true[i]), cfg.mean_free_path),
        ))
    return plans


def _extent(cfg: SimulationConfig, plans: list[TiltPlan], margin: float) -> tuple[float, float]:
    """Half-widths (x, y) of the specimen area any tilt can see, in pixels (RELION frame before Ry)."""
    a = math.radians(cfg.tilt_axis)
    ca, sa = abs(math.cos(a)), abs(math.sin(a))
    hx = (ca * cfg.width + sa * cfg.height) / 2 + margin
    hy = (sa * cfg.width + ca * cfg.height) / 2 + margin
    half_t = cfg.thickness_px / 2
    ex = max((hx + abs(math.sin(math.radians(p.true))) * half_t) / math.cos(math.radians(p.true)) for p in plans)
    return ex, hy


def _grid(cfg: SimulationConfig, plans: list[TiltPlan], optics: Optics) -> Grid:
    max_drift = max(float(np.abs(p.drift).max()) for p in plans)
    deloc = delocalisation_px(cfg.defocus_max * 1e4 + cfg.thickness * 10 * 2, optics)
    margin = int(math.ceil(max_drift + min(max(deloc, 16), 128) + 4))
    return make_grid(cfg.width, cfg.height, margin)


def _simulate_series(cfg: SimulationConfig, index: int, seed: np.random.SeedSequence, species: list[Species],
                     sens: np.ndarray, out: Path, session: str, optics: Optics, start):
    t0 = time.perf_counter()
    name = f"TS_{index + 1:02d}"
    s_phantom, s_acq, s_noise, s_misc = seed.spawn(4)
    rng_acq, rng_noise, rng_misc = (np.random.default_rng(s) for s in (s_acq, s_noise, s_misc))
    plans = plan_series(cfg, index, rng_acq)
    grid = _grid(cfg, plans, optics)
    px = cfg.pixel_size
    box1 = (cfg.width, cfg.height, int(math.ceil(cfg.thickness_px)))
    binning = phantom_binning(box1)
    from tiltflow.simulate.phantom import tomogram_box

    box = tomogram_box(cfg.width, cfg.height, cfg.thickness_px, multiple=max(binning, 2))
    box_nm = (box[0] * px / 10, box[1] * px / 10, cfg.thickness)
    counts = default_counts(box_nm)
    for k in counts:
        if getattr(cfg, k) is not None:
            counts[k] = int(getattr(cfg, k))
    # covers the canvas padding, the shifts and the largest vesicle; independent of frames, dose and drift
    margin = 200.0 + 4 * cfg.shift_sigma_px + 470.0 / px
    phantom = generate_phantom(np.random.default_rng(s_phantom), species, box, cfg.thickness_px,
                               _extent(cfg, plans, margin), px, counts, cfg.crowding, cfg.contrast)
    renderer = _TiltRenderer(cfg, name, phantom, grid, optics, sens, out)
    seeds = [int(v) for v in rng_noise.integers(0, 2**62, size=len(plans))]
    times = serialem.acquisition_times(
        len(plans), [0.0] + [abs(b.target - a.target) for a, b in zip(plans, plans[1:], strict=False)], rng_misc, start)
    stage_xy = rng_misc.uniform(-400, 400, 2)
    stage_z = rng_misc.uniform(-50, 50)
    lens_offset = rng_misc.uniform(4, 7)
    e_tilt = cfg.dose_per_tilt * px * px
    exposure_time = float(serialem._num(min(max(e_tilt / DOSE_RATE, 0.4), 4.0)))
    if cfg.workers > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=cfg.workers) as pool:
            stats = list(pool.map(renderer.render, plans, seeds))
    else:
        stats = [renderer.render(p, sd) for p, sd in zip(plans, seeds, strict=True)]
    mdoc_tilts, tilts_truth = [], []
    for p, (mname, mmm) in zip(plans, stats, strict=True):
        rel = f"{cfg.frames_subdir}/{mname}" if cfg.frames_subdir else mname
        mdoc_tilts.append(serialem.MdocTilt(
            z_value=p.index, tilt_angle=p.nominal, exposure_dose=p.dose,
            dose_rate=float(serialem._num(e_tilt * p.transmission / exposure_time)), exposure_time=exposure_time,
            prior_record_dose=p.pre_exposure, target_defocus=p.target_defocus_um,
            defocus_readout=round(lens_offset - p.mean_defocus_um, 5),
            sub_frame_path=serialem.sub_frame_path(session, mname, cfg.frames_subdir), frames=cfg.frames,
            time=times[p.index],
            stage_xy=(stage_xy[0] + rng_misc.normal(0, 0.02), stage_xy[1] + rng_misc.normal(0, 0.02)),
            stage_z=stage_z, image_shift=(rng_misc.normal(0, 0.3), rng_misc.normal(0, 0.3)), min_max_mean=mmm,
        ))
        tilts_truth.append(TiltTruth(
            z_value=p.index, acquisition_index=p.index, movie=rel, nominal_tilt_angle=p.nominal,
            tilt_angle=p.true, shift_px=[float(v) for v in p.shift], defocus_u=p.defocus_u, defocus_v=p.defocus_v,
            defocus_angle=p.defocus_angle, dose=p.dose, pre_exposure=p.pre_exposure,
            frame_shifts_px=[[float(x), float(y)] for x, y in p.drift], dark=p.dark, transmission=p.transmission,
            target_defocus_um=p.target_defocus_um, date_time=serialem.format_datetime(times[p.index]),
        ))
    mdoc = f"{name}.mrc.mdoc"
    serialem.write_series_mdoc(out / mdoc, image_file=f"{name}.mrc", size=(cfg.width, cfg.height), pixel_size=px,
                               voltage=cfg.voltage, tilt_axis=cfg.tilt_axis, spot=SPOT, tilts=mdoc_tilts,
                               navigator_label=str(index + 1))
    vol = render_volume(phantom, binning)
    phantom_file = f"{name}_phantom.mrc"
    detector.write_mrc_deterministic(out / phantom_file, vol, px * binning, label=f"tiltflow simulate: {name} phantom",
                                     stack=False)
    log.info("%s: %d tilts of %dx%d x %d frames in %.1f s", name, len(plans), cfg.width, cfg.height, cfg.frames,
             time.perf_counter() - t0)
    st = SeriesTruth(
        name=name, mdoc=mdoc, tilt_axis=cfg.tilt_axis, hand=cfg.hand, thickness_nm=cfg.thickness,
        phantom=phantom_file, phantom_pixel_size=px * binning, tomogram_size_xyz=list(box),
        dose_per_tilt=cfg.dose_per_tilt, scheme=cfg.scheme, tilts=tilts_truth, phantom_binning=binning,
        group_size=cfg.group_size, frames=cfg.frames, tilt_offset=cfg.tilt_offset,
        **_objects(phantom, species),
    )
    return st, times[-1] + timedelta(minutes=5)


class _TiltRenderer:
    """Draws one tilt's movie from its plan (thread-safe: every tilt has its own random generator)."""

    def __init__(self, cfg: SimulationConfig, name: str, phantom: Phantom, grid: Grid, optics: Optics,
                 sens: np.ndarray, out: Path):
        import torch

        self.cfg, self.name, self.phantom, self.grid, self.optics = cfg, name, phantom, grid, optics
        px = cfg.pixel_size
        self.fgrid = FourierGrid(grid, px)
        self.ice_var = cfg.ice * ICE_PHASE_PSD / px * cfg.contrast**2
        self.sens = torch.from_numpy(sens)
        self.e_frame = cfg.dose_per_tilt / cfg.frames * px * px
        self.dtype = detector.movie_dtype(self.e_frame)
        self.frames_dir = out / cfg.frames_subdir if cfg.frames_subdir else out
        self._local = threading.local()

    def _buffer(self):
        """A plane buffer per worker thread (reused across tilts: no page faults per tilt)."""
        import torch

        buf = getattr(self._local, "buffer", None)
        if buf is None:
            buf = self._local.buffer = torch.empty(8 * self.grid.hp * self.grid.wp, dtype=torch.float32)
        return buf

    def render(self, p: TiltPlan, seed: int) -> tuple[str, tuple[float, float, float]]:
        """Write the movie of tilt ``p``; return its file name and (min, max, mean) of the summed counts."""
        import torch

        from tiltflow.geometry import projection_rotations

        cfg = self.cfg
        gen = torch.Generator().manual_seed(seed)
        rot = projection_rotations(0.0, p.true, cfg.tilt_axis)
        proj = TiltProjection(self.phantom, rot, p.shift, self.grid, cfg.depth_step / cfg.pixel_size, self.ice_var, gen)
        ctf = TiltCtf(p.defocus_u, p.defocus_v, p.defocus_angle, cfg.hand,
                      p.pre_exposure + p.dose / 2 if cfg.damage else None)
        intensity = tilt_intensity(proj, self.fgrid, self.optics, ctf, p.transmission, self._buffer())
        scale = self.sens * (self.e_frame * (detector.DARK_FACTOR if p.dark else 1.0))
        movie = np.empty((cfg.frames, cfg.height, cfg.width), self.dtype)
        for i, frame in enumerate(frames_of(intensity, self.fgrid, p.drift)):
            movie[i] = detector.poisson_counts(frame * scale, gen, self.dtype)
        mname = serialem.movie_name(self.name, p.index, p.nominal, cfg.movie_format)
        detector.write_movie(self.frames_dir / mname, movie, cfg.movie_format, cfg.pixel_size, cfg.tiff_compression)
        total = movie.sum(axis=0, dtype=np.int64)
        return mname, (float(total.min()), float(total.max()), float(total.mean()))


def _in_box(pos: np.ndarray, box: tuple[int, int, int]) -> bool:
    from tiltflow.geometry import centre

    lo = np.array([-centre(n) for n in box])
    hi = np.array([n - 1 - centre(n) for n in box])
    return bool(np.all(pos >= lo) and np.all(pos <= hi))


def _objects(phantom: Phantom, species: list[Species]) -> dict:
    """Object lists for the truth (positions in bin-1 pixels from c_tomo)."""
    box = phantom.box
    parts = [{"species": species[p.species].name, "position_px": [float(v) for v in p.position],
              "rotation": [[float(v) for v in row] for row in p.rotation], "in_box": _in_box(p.position, box)}
             for p in phantom.particles]
    ves, gold = [], []
    for o in phantom.radial:
        d = {"position_px": [float(v) for v in o.centre], "in_box": _in_box(o.centre, box)}
        if o.kind == "vesicle":
            d["radius_px"] = float(np.mean([r for r, _, _ in o.shells]))
            ves.append(d)
        elif o.kind == "gold" and o.ball is not None:
            d["radius_px"] = float(o.ball[0])
            gold.append(d)
    fil = [{"centre_px": [float(v) for v in f["centre"]], "direction": [float(v) for v in f["direction"]],
            "length_px": float(f["length_px"]), "subunits": int(f["subunits"]),
            "in_box": _in_box(np.asarray(f["centre"]), box)} for f in phantom.filaments]
    return {"particles": parts, "vesicles": ves, "gold": gold, "filaments": fil}


def _species_dict(s: Species) -> dict:
    return {"name": s.name, "radius_a": s.radius_a,
            "blobs_a": [[float(x), float(y), float(z), float(sg)] for (x, y, z), sg in zip(s.xyz_a, s.sigma_a, strict=True)]}
