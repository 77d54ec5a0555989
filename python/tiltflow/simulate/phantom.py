"""The specimen: a slab of vitreous ice holding particles, filaments, lipid vesicles, gold beads and crowders.

Why analytic objects: every object is either an isotropic 3-D Gaussian blob (whose projection along any
direction is the 2-D Gaussian with the same centre, width and integral) or a radially symmetric object
(whose projection is the same 1-D profile at every tilt). So tilt images are computed exactly from the
object list, sharing no projector with tiltflow's reconstruction, and the ground truth cannot inherit a
reconstruction bug.

Coordinates: bin-1 movie pixels relative to the tomogram centre ``c_tomo = int(size / 2)`` (RELION), x, y in
the specimen plane, z along the slab normal (the beam at zero tilt). Densities are phase shifts in radians
per movie pixel of path (zero = ice), so the projection of a blob of peak ``p`` and width ``s`` pixels is a
2-D Gaussian of integral ``p * (2 pi)^1.5 * s^3``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

#: phase shift per Angstrom of protein path relative to ice at 300 kV (sigma_e 0.00065 rad/(V A) x ~2 V)
PROTEIN_PHASE_PER_A = 0.0013
#: lipid head groups are denser than protein; gold much more so (and scatters electrons out of the aperture)
LIPID_HEAD_RELATIVE = 1.6
GOLD_RELATIVE = 6.0
GOLD_CENTRAL_TRANSMISSION = 0.4  # amplitude-contrast loss through the middle of a 10 nm bead
GOLD_RADIUS_A = 50.0
#: amorphous-ice phase texture: variance per pixel = ICE_PHASE_PSD * path (A) / pixel_size^2 (rad^2 A)
ICE_PHASE_PSD = 1.0e-4
#: default abundances (counts per um^3 of slab; gold per um^2 of grid)
PARTICLES_PER_UM3 = 5000.0
VESICLES_PER_UM3 = 250.0
FILAMENTS_PER_UM3 = 150.0
GOLD_PER_UM2 = 150.0
CROWDER_SIGMA_A = (8.0, 16.0)  # widths of the small background proteins


@dataclass
class Blobs:
    """Isotropic Gaussian blobs: centres (n, 3) in pixels, widths (n,) in pixels, peak densities (n,)."""

    xyz: np.ndarray
    sigma: np.ndarray
    peak: np.ndarray

    @classmethod
    def empty(cls) -> Blobs:
        """No blobs, to start from or to stand for an empty part."""
        return cls(np.zeros((0, 3)), np.zeros(0), np.zeros(0))

    @classmethod
    def concat(cls, parts: list[Blobs]) -> Blobs:
        """The blobs of ``parts`` as one set."""
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty()
        return cls(np.concatenate([p.xyz for p in parts]), np.concatenate([p.sigma for p in parts]),
                   np.concatenate([p.peak for p in parts]))

    def __len__(self) -> int:
        return len(self.sigma)

    @property
    def mass(self) -> np.ndarray:
        """Integral of each blob = integral of its projection (rad px^2)."""
        return self.peak * (2 * math.pi) ** 1.5 * self.sigma**3


@dataclass
class RadialObject:
    """A radially symmetric object: Gaussian shells (a bilayer) and/or a ball with a soft edge (gold).

    ``shells``: (radius, width, peak) per layer; ``ball``: (radius, edge width, peak); all in pixels and
    rad/px. ``absorption``: amplitude loss per unit of projected density (the image is multiplied by
    ``exp(-absorption * projection)``).
    """

    kind: str
    centre: np.ndarray
    shells: tuple[tuple[float, float, float], ...] = ()
    ball: tuple[float, float, float] | None = None
    absorption: float = 0.0
    _tables: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def support(self) -> float:
        """Radius beyond which the density is negligible (pixels)."""
        r = [R + 4.5 * w for R, w, _ in self.shells]
        if self.ball is not None:
            r.append(self.ball[0] + 4.5 * self.ball[1])
        return max(r)

    def density(self, s: np.ndarray, extra_var: float = 0.0) -> np.ndarray:
        """Density at distance ``s`` from the centre; ``extra_var`` (px^2) widens edges, keeping the mass."""
        out = np.zeros_like(s, dtype=np.float64)
        for R, w, peak in self.shells:
            we = math.sqrt(w * w + extra_var)
            out += peak * (w / we) * np.exp(-((s - R) ** 2) / (2 * we * we))
        if self.ball is not None:
            R, w, peak = self.ball
            we = math.sqrt(w * w + extra_var)
            out += peak * 0.5 * _erfc((s - R) / (math.sqrt(2) * we))
        return out

    def projection_table(self, extra_var: float = 0.0) -> tuple[float, np.ndarray]:
        """``(dr, P)``: the projection ``P(r) = 2 int_0^inf density(sqrt(r^2 + t^2)) dt`` at ``r = i * dr``."""
        key = round(extra_var, 9)
        if key not in self._tables:
            widths = [w for _, w, _ in self.shells] + ([self.ball[1]] if self.ball else [])
            step = min(0.25, max(0.02, min(widths) / 4))
            rmax = self.support
            r = np.arange(0.0, rmax + 2 * step, step)
            t = np.arange(0.0, rmax + step, step)
            P = np.empty_like(r)
            for i0 in range(0, len(r), 256):  # bounded memory for large vesicles
                rr = r[i0:i0 + 256, None]
                vals = self.density(np.sqrt(rr * rr + t[None, :] ** 2), extra_var)
                P[i0:i0 + 256] = 2 * step * (vals.sum(axis=1) - 0.5 * vals[:, 0])  # trapezoid, even in t
            self._tables[key] = (step, P)
        return self._tables[key]


def _erfc(x: np.ndarray) -> np.ndarray:
    import torch

    return torch.special.erfc(torch.as_tensor(np.asarray(x, dtype=np.float64))).numpy()


@dataclass
class Species:
    """A particle species: blobs in its own frame (Angstrom), shared by every copy."""

    name: str
    xyz_a: np.ndarray  # (m, 3)
    sigma_a: np.ndarray  # (m,)
    radius_a: float


@dataclass
class Particle:
    """One particle of a species, placed and rotated in the specimen."""

    species: int
    position: np.ndarray  # (3,) pixels from the tomogram centre
    rotation: np.ndarray  # (3, 3): species frame -> tomogram frame


@dataclass
class Phantom:
    """Everything in one specimen slab, plus where each object came from (for the ground truth)."""

    blobs: Blobs
    radial: list[RadialObject]
    particles: list[Particle]
    filaments: list[dict]
    box: tuple[int, int, int]  # tomogram size x, y, z (bin-1 pixels)
    thickness_px: float
    pixel_size: float


class _Placed:
    """Spheres already placed (centre, exclusion radius), for rejection sampling without overlaps."""

    def __init__(self) -> None:
        self.c = np.zeros((0, 3))
        self.r = np.zeros(0)

    def add(self, c: np.ndarray, r: float) -> None:
        self.c = np.vstack([self.c, c[None, :]])
        self.r = np.append(self.r, r)

    def free(self, c: np.ndarray, r: float) -> bool:
        d2 = ((self.c - c) ** 2).sum(axis=1)
        return bool(np.all(d2 > (self.r + r) ** 2))

    def outside(self, xyz: np.ndarray) -> np.ndarray:
        """Mask of points outside every placed sphere (tested in blocks, bounded memory)."""
        keep = np.ones(len(xyz), dtype=bool)
        for i in range(len(self.r)):
            c, r = self.c[i], self.r[i]
            near = np.all(np.abs(xyz - c) < r, axis=1)
            if near.any():
                idx = np.nonzero(near)[0]
                keep[idx] &= ((xyz[idx] - c) ** 2).sum(axis=1) > r * r
        return keep


def make_species(rng: np.random.Generator) -> list[Species]:
    """A ribosome-like (asymmetric, ~260 A) and a proteasome-like (D7 barrel, 150 x 110 A) species."""
    def in_ellipsoid(n: int, axes: tuple[float, float, float]) -> np.ndarray:
        pts = []
        while len(pts) < n:
            p = rng.uniform(-1, 1, size=3)
            if p @ p <= 1:
                pts.append(p * np.asarray(axes))
        return np.array(pts)

    large = in_ellipsoid(70, (100.0, 95.0, 85.0)) + [0.0, 0.0, -25.0]
    small = in_ellipsoid(40, (85.0, 55.0, 45.0)) + [10.0, 0.0, 95.0]
    ribo_xyz = np.vstack([large, small])
    ribo_sigma = np.concatenate([rng.uniform(12, 17, 70), rng.uniform(10, 14, 40)])
    rings = []
    for j, z in enumerate((-52.5, -17.5, 17.5, 52.5)):
        phase = (j % 2) * math.pi / 7
        for k in range(7):
            a = 2 * math.pi * k / 7 + phase
            rings.append([45.0 * math.cos(a), 45.0 * math.sin(a), z])
    prot_xyz = np.array(rings)
    prot_sigma = np.full(len(prot_xyz), 13.0)
    return [
        Species("ribosome", ribo_xyz, ribo_sigma, 140.0),
        Species("proteasome", prot_xyz, prot_sigma, 90.0),
    ]


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """Uniformly distributed rotation matrix (from a normalised Gaussian quaternion)."""
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    w, x, y, z = q
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def tomogram_box(width: int, height: int, thickness_px: float, multiple: int = 4) -> tuple[int, int, int]:
    """Tomogram size (x, y, z): the movie size and the slab thickness rounded up to ``multiple``."""
    d = int(math.ceil(thickness_px / multiple) * multiple)
    return int(width), int(height), max(d, multiple)


def default_counts(box_nm: tuple[float, float, float]) -> dict[str, int]:
    """Typical numbers of objects inside a tomogram box of ``box_nm`` (x, y, z in nm)."""
    area_um2 = box_nm[0] * box_nm[1] * 1e-6
    vol_um3 = area_um2 * box_nm[2] * 1e-3
    return {
        "particles": int(round(PARTICLES_PER_UM3 * vol_um3)),
        "vesicles": max(1, int(round(VESICLES_PER_UM3 * vol_um3))),
        "filaments": max(1, int(round(FILAMENTS_PER_UM3 * vol_um3))),
        "gold": max(2, int(round(GOLD_PER_UM2 * area_um2))),
    }


def generate_phantom(
    rng: np.random.Generator,
    species: list[Species],
    box: tuple[int, int, int],
    thickness_px: float,
    extent: tuple[float, float],
    pixel_size: float,
    counts: dict[str, int],
    crowding: float = 0.01,
    contrast: float = 1.0,
) -> Phantom:
    """Fill the slab ``|z| <= thickness/2`` over ``|x| <= extent[0], |y| <= extent[1]`` (pixels).

    ``counts`` are the numbers wanted inside the tomogram ``box``; the wider area that high tilts see
    gets the same density, so tilted images have no empty margins.
    """
    px = float(pixel_size)
    half_t = thickness_px / 2
    ex, ey = float(extent[0]), float(extent[1])
    area_ratio = (4 * ex * ey) / (box[0] * box[1])
    p_protein = PROTEIN_PHASE_PER_A * px * contrast

    def n_total(key: str) -> int:
        return int(rng.poisson(counts[key] * area_ratio)) if counts[key] else 0

    def uniform_xy(n: int) -> np.ndarray:
        return np.column_stack([rng.uniform(-ex, ex, n), rng.uniform(-ey, ey, n)])

    placed = _Placed()
    free = placed.free

    radial: list[RadialObject] = []
    # lipid vesicles: bilayer of two Gaussian head-group layers 40 A apart
    r_min, r_max = 150.0 / px, min(450.0 / px, half_t - 60.0 / px)
    if r_max > r_min:
        for _ in range(n_total("vesicles")):
            for _try in range(50):
                R = rng.uniform(r_min, r_max)
                c = np.array([*uniform_xy(1)[0], rng.uniform(-(half_t - R - 30 / px), half_t - R - 30 / px)])
                if free(c, R + 30 / px):
                    placed.add(c, R + 30 / px)
                    w = max(6.0 / px, 0.35)
                    peak = LIPID_HEAD_RELATIVE * p_protein
                    radial.append(RadialObject("vesicle", c, shells=((R - 20 / px, w, peak), (R + 20 / px, w, peak))))
                    break
    # gold beads on both surfaces of the slab
    rg = GOLD_RADIUS_A / px
    for _ in range(n_total("gold")):
        for _try in range(50):
            side = rng.choice([-1.0, 1.0])
            c = np.array([*uniform_xy(1)[0], side * max(half_t - rg - rng.uniform(0, 20 / px), 0.0)])
            if free(c, rg + 5 / px):
                placed.add(c, rg + 5 / px)
                mu = -math.log(GOLD_CENTRAL_TRANSMISSION) / (2 * rg)
                edge = max(2.0 / px, 0.35)
                peak = GOLD_RELATIVE * p_protein
                radial.append(RadialObject("gold", c, ball=(rg, edge, peak), absorption=mu / peak if peak else 0.0))
                break
    # particles with random orientations
    blob_parts: list[Blobs] = []
    particles: list[Particle] = []
    n_species = len(species)
    for i in range(n_total("particles")):
        k = i % n_species if n_species else 0
        sp = species[k]
        r = sp.radius_a / px
        if r > half_t:
            continue
        for _try in range(30):
            c = np.array([*uniform_xy(1)[0], rng.uniform(-(half_t - r), half_t - r)])
            if free(c, r):
                placed.add(c, r)
                rot = random_rotation(rng)
                particles.append(Particle(k, c, rot))
                xyz = c + (sp.xyz_a / px) @ rot.T
                blob_parts.append(Blobs(xyz, sp.sigma_a / px, np.full(len(sp.sigma_a), p_protein)))
                break
    # actin-like filaments lying roughly in the slab plane
    filaments = []
    for _ in range(n_total("filaments")):
        length = rng.uniform(800, 2500) / px
        c = np.array([*uniform_xy(1)[0], rng.uniform(-0.5, 0.5) * max(half_t - 60 / px, 0)])
        az, el = rng.uniform(0, 2 * math.pi), math.radians(rng.normal(0, 8))
        u = np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
        e1 = np.cross(u, [0.0, 0.0, 1.0])
        e1 /= np.linalg.norm(e1)
        e2 = np.cross(u, e1)
        n_sub = int(length * px / 27.5)
        s = (np.arange(n_sub) - n_sub / 2) * 27.5 / px
        phi = np.arange(n_sub) * math.radians(-166.7) + rng.uniform(0, 2 * math.pi)
        xyz = c + s[:, None] * u + (25.0 / px) * (np.cos(phi)[:, None] * e1 + np.sin(phi)[:, None] * e2)
        keep = np.abs(xyz[:, 2]) <= half_t - 20 / px
        keep &= placed.outside(xyz)  # no filament through a vesicle, bead or particle
        if keep.sum() < 5:
            continue
        filaments.append({"centre": c, "direction": u, "length_px": length, "subunits": int(keep.sum())})
        blob_parts.append(Blobs(xyz[keep], np.full(int(keep.sum()), 16.0 / px), np.full(int(keep.sum()), p_protein)))
    # crowders: small proteins filling a fraction of the remaining volume
    if crowding > 0:
        lo, hi = CROWDER_SIGMA_A
        mean_cube = (hi**4 - lo**4) / (4 * (hi - lo))  # E[sigma^3] for sigma uniform on lo..hi
        mean_vol = (2 * math.pi) ** 1.5 * mean_cube / px**3
        n = int(crowding * (4 * ex * ey * thickness_px) / mean_vol)
        sigma = rng.uniform(lo, hi, size=n) / px
        xyz = np.column_stack([uniform_xy(n), rng.uniform(-half_t, half_t, n)])
        keep = np.abs(xyz[:, 2]) <= half_t - 2 * sigma
        keep &= placed.outside(xyz)
        blob_parts.append(Blobs(xyz[keep], sigma[keep], np.full(int(keep.sum()), 0.8 * p_protein)))
    return Phantom(Blobs.concat(blob_parts), radial, particles, filaments, box, thickness_px, px)
