"""Analytic projection of the phantom into one tilt image, split into planes of equal defocus.

Geometry (``tiltflow.geometry``, RELION 5): a specimen point ``X`` (pixels from the tomogram centre) lands
at image pixel ``p = (R X)_xy + shift_px + c_img`` with ``R = Rz(tilt_axis) Ry(tilt) Rx(0)`` and
``c_img = int(size / 2)``; its depth along the beam is ``(R X)_z``. Each Gaussian blob is drawn as its exact
pixel-integrated 2-D Gaussian (differences of erf, separable in x and y); each radial object as its 1-D
projection profile. Each blob goes to the depth plane nearest its own depth (planes ``depth_step`` apart,
so the defocus error is at most half a step), radial objects and the ice texture are shared between
neighbouring planes with linear weights: the CTF of every object follows its own depth (the 3-D CTF
RELION models), not just the tilt's.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from tiltflow.fftsize import next_fast_size
from tiltflow.geometry import centre
from tiltflow.simulate.phantom import Blobs, Phantom, RadialObject

_SQRT2 = math.sqrt(2.0)
#: blobs are drawn out to this many standard deviations (mass beyond: 0.5%)
BLOB_REACH = 3.0
#: pixel-integration of radial profiles: widths are broadened by a one-pixel box (variance 1/12)
PIXEL_VAR = 1.0 / 12.0


@dataclass(frozen=True)
class Grid:
    """A movie of ``width`` x ``height`` pixels drawn on a canvas padded by ``pad`` on each side.

    The padding holds the specimen just outside the field of view, which the CTF delocalises and the
    drift moves into the frame.
    """

    width: int
    height: int
    pad: int

    @property
    def wp(self) -> int:
        """Padded canvas width."""
        return self.width + 2 * self.pad

    @property
    def hp(self) -> int:
        """Padded canvas height."""
        return self.height + 2 * self.pad

    @property
    def centre_padded(self) -> np.ndarray:
        """RELION's image centre ``(int(w/2), int(h/2))`` in canvas pixels (x, y)."""
        return np.array([centre(self.width) + self.pad, centre(self.height) + self.pad], dtype=np.float64)


def fft_size(n: int) -> int:
    """Smallest size >= n whose only prime factors are 2, 3 and 5 (fast FFTs)."""
    return next_fast_size(n)


def make_grid(width: int, height: int, margin: int) -> Grid:
    """A grid whose padded canvas is FFT friendly in both directions (pad >= margin)."""
    pad = int(margin)
    while fft_size(width + 2 * pad) != width + 2 * pad or fft_size(height + 2 * pad) != height + 2 * pad:
        pad += 1
        if pad > margin + 512:  # pragma: no cover - always found well before
            break
    return Grid(int(width), int(height), pad)


def project_centres(xyz: np.ndarray, rot: np.ndarray, shift_px, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """Canvas coordinates ``(n, 2)`` (x, y) and depths ``(n,)`` of points ``xyz`` (pixels from c_tomo)."""
    q = np.asarray(xyz, dtype=np.float64).reshape(-1, 3) @ np.asarray(rot, dtype=np.float64).T
    uv = q[:, :2] + np.asarray(shift_px, dtype=np.float64).reshape(1, 2) + grid.centre_padded
    return uv, q[:, 2]


@dataclass(frozen=True)
class DepthPlanes:
    """Planes at depths ``z0 + k * step`` (pixels), k = 0..n-1."""

    z0: float
    step: float
    n: int

    @classmethod
    def spanning(cls, z: np.ndarray, step: float) -> DepthPlanes:
        """Planes ``step`` apart from the lowest to beyond the highest of ``z``, so that every depth lies between two."""
        if len(z) == 0:
            return cls(0.0, step, 1)
        lo, hi = float(np.min(z)), float(np.max(z))
        n = int(math.floor((hi - lo) / step)) + 2
        return cls(lo, step, n)

    @property
    def depths(self) -> np.ndarray:
        """Depth of each plane."""
        return self.z0 + self.step * np.arange(self.n)

    def nearest(self, z: np.ndarray) -> np.ndarray:
        """Index of the nearest plane for each depth."""
        t = np.rint((np.asarray(z, dtype=np.float64) - self.z0) / self.step).astype(np.int64)
        return np.clip(t, 0, self.n - 1)

    def split(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Lower plane index and the weight of the upper plane for each depth."""
        t = (np.asarray(z, dtype=np.float64) - self.z0) / self.step
        k = np.clip(np.floor(t).astype(np.int64), 0, self.n - 2) if self.n > 1 else np.zeros(len(t), np.int64)
        f = np.clip(t - k, 0.0, 1.0) if self.n > 1 else np.zeros(len(t))
        return k, f


class TiltProjection:
    """The phantom as seen at one tilt: visible objects, their canvas positions and depth planes."""

    def __init__(self, phantom: Phantom, rot: np.ndarray, shift_px, grid: Grid, depth_step_px: float,
                 ice_variance: float = 0.0, generator=None):
        """``ice_variance``: phase variance of the ice texture per pixel of path (0 = no ice)."""
        self.grid = grid
        self.ice = _IceColumns(rot, shift_px, grid, phantom.thickness_px, ice_variance, generator) if ice_variance > 0 else None
        b = phantom.blobs
        uv, z = project_centres(b.xyz, rot, shift_px, grid)
        reach = BLOB_REACH * b.sigma + 2
        vis = ((uv[:, 0] > -reach) & (uv[:, 0] < grid.wp - 1 + reach)
               & (uv[:, 1] > -reach) & (uv[:, 1] < grid.hp - 1 + reach))
        self.blobs = Blobs(b.xyz[vis], b.sigma[vis], b.peak[vis])
        self.b_uv, self.b_z = uv[vis], z[vis]
        self.radial: list[tuple[RadialObject, np.ndarray, float]] = []
        for obj in phantom.radial:
            (ruv,), (rz,) = project_centres(obj.centre, rot, shift_px, grid)
            s = obj.support + 2
            if -s < ruv[0] < grid.wp - 1 + s and -s < ruv[1] < grid.hp - 1 + s:
                self.radial.append((obj, ruv, float(rz)))
        all_z = np.concatenate([self.b_z, np.array([rz for _, _, rz in self.radial])]
                               + ([self.ice.depth_range] if self.ice is not None else []))
        self.planes = DepthPlanes.spanning(all_z, depth_step_px)
        self.b_k = self.planes.nearest(self.b_z)
        self.r_k, self.r_f = self.planes.split(np.array([rz for _, _, rz in self.radial]))

    def plane_chunks(self, chunk: int = 8, buffer=None) -> Iterator[tuple[np.ndarray, object]]:
        """Yield ``(depths (k,), images torch (k, hp, wp))`` for consecutive groups of planes.

        ``buffer``: optional flat float32 tensor of at least ``chunk * hp * wp`` values, reused (and
        overwritten) for every group instead of fresh allocations.
        """
        import torch

        hp, wp = self.grid.hp, self.grid.wp
        depths = self.planes.depths
        if buffer is None or buffer.numel() < chunk * hp * wp:
            buffer = torch.empty(chunk * hp * wp, dtype=torch.float32)
        for a in range(0, self.planes.n, chunk):
            b = min(a + chunk, self.planes.n)
            acc = buffer[:(b - a) * hp * wp].zero_()
            sel = np.nonzero((self.b_k >= a) & (self.b_k < b))[0]
            if len(sel):
                _splat_gaussians(acc, hp, wp, self.b_uv[sel], self.blobs.sigma[sel], self.blobs.mass[sel],
                                 self.b_k[sel] - a)
            for j, (obj, ruv, _) in enumerate(self.radial):
                k, f = int(self.r_k[j]), float(self.r_f[j])
                parts = [(kk - a, w) for kk, w in ((k, 1.0 - f), (k + 1, f)) if a <= kk < b and w > 0]
                if parts:
                    _splat_radial(acc, hp, wp, ruv, obj.projection_table(PIXEL_VAR), obj.support, parts)
            planes = acc.view(b - a, hp, wp)
            if self.ice is not None:
                for j in range(b - a):
                    self.ice.add_to(planes[j], float(depths[a + j]), self.planes.step)
            yield depths[a:b], planes

    def projection(self):
        """The plain projection (all planes summed): torch (hp, wp), phase in radians."""
        import torch

        out = torch.zeros(self.grid.hp, self.grid.wp, dtype=torch.float32)
        for _, imgs in self.plane_chunks():
            out += imgs.sum(0)
        return out

    def absorption(self):
        """``sum(absorption * projected density)`` of the absorbing objects (gold): torch (hp, wp) or None."""
        import torch

        hp, wp = self.grid.hp, self.grid.wp
        absorbing = [(o, uv) for o, uv, _ in self.radial if o.absorption > 0]
        if not absorbing:
            return None
        acc = torch.zeros(hp * wp, dtype=torch.float32)
        for obj, ruv in absorbing:
            _splat_radial(acc, hp, wp, ruv, obj.projection_table(PIXEL_VAR), obj.support, [(0, obj.absorption)])
        return acc.view(hp, wp)


class _IceColumns:
    """Amorphous-ice phase texture: white noise, independent per depth plane and per tilt.

    Why independent per tilt: the slab's 3-D Fourier transform is resolved to ``1/thickness`` along the
    beam, so beyond ``~1/(thickness * tilt step)`` projections at different tilts sample independent parts of
    a random 3-D texture; that is where ice matters (it gives the broadband Thon rings of real images).
    Each canvas pixel sees a column of ice from depth ``z_mid - h`` to ``z_mid + h`` (``2h = thickness /
    |beam_z|``; ``z_mid`` the depth of the slab mid-plane at that pixel, which changes across a tilted image);
    plane ``k`` gets the share of that column under its linear-interpolation hat. ``variance`` is per pixel
    of path, so a pixel's total is ``variance * 2h`` and each part of the column gets the CTF of its depth.
    """

    def __init__(self, rot: np.ndarray, shift_px, grid: Grid, thickness_px: float, variance: float, generator):
        import torch

        rot = np.asarray(rot, dtype=np.float64)
        self.variance = float(variance)
        self.generator = generator
        # mid-plane point X = (x, y, 0): p = A (x, y) + shift + c, z = g . (x, y)
        a, g = rot[:2, :2], rot[2, :2]
        lin = g @ np.linalg.inv(a)  # depth per canvas pixel offset
        c = grid.centre_padded + np.asarray(shift_px, dtype=np.float64).reshape(2)
        self.half = 0.5 * thickness_px / max(abs(rot[2, 2]), 1e-6)
        xs = torch.arange(grid.wp, dtype=torch.float64) - c[0]
        ys = torch.arange(grid.hp, dtype=torch.float64) - c[1]
        zmid = lin[0] * xs[None, :] + lin[1] * ys[:, None]  # (hp, wp), pixels
        self.row_min, self.row_max = zmid.amin(dim=1), zmid.amax(dim=1)
        self.col_min, self.col_max = zmid.amin(dim=0), zmid.amax(dim=0)
        self.zlo, zhi = float(zmid.min()), float(zmid.max())
        self.depth_range = np.array([self.zlo - self.half, zhi + self.half])
        # the share of a plane depends on z_mid only: tabulate it on a fine 1-D grid, index per pixel
        self.dz = 0.05
        self.zidx = torch.round((zmid - self.zlo) / self.dz).long()
        self.z_table = self.zlo + self.dz * torch.arange(int(self.zidx.max()) + 1, dtype=torch.float64)

    def add_to(self, plane, depth: float, step: float) -> None:
        """Add this plane's share of the ice texture (in place)."""
        import torch

        reach = self.half + step  # beyond this the plane's hat does not meet the column
        rows = torch.nonzero((self.row_min - reach < depth) & (self.row_max + reach > depth)).flatten()
        cols = torch.nonzero((self.col_min - reach < depth) & (self.col_max + reach > depth)).flatten()
        if len(rows) == 0 or len(cols) == 0:
            return
        r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
        z = self.z_table - depth
        share = _hat_integral(z + self.half, step) - _hat_integral(z - self.half, step)  # path under the hat
        amp = torch.sqrt(share.clamp_min(0) * self.variance).float()
        noise = torch.randn((r1 - r0, c1 - c0), generator=self.generator, dtype=torch.float32)
        plane[r0:r1, c0:c1] += noise * amp[self.zidx[r0:r1, c0:c1]]


def _hat_integral(z, step: float):
    """Integral from -inf to ``z`` of the hat ``max(0, 1 - |t| / step)`` (whose area is ``step``)."""
    zc = z.clamp(-step, step)
    return (zc + step) - zc.abs() * zc / (2 * step) - step / 2


def _splat_gaussians(acc, hp: int, wp: int, uv: np.ndarray, sigma: np.ndarray, mass: np.ndarray,
                     plane: np.ndarray, max_values: int = 1 << 22) -> None:
    """Add pixel-integrated 2-D Gaussians to ``acc`` (flat, planes x hp x wp), blob ``i`` to ``plane[i]``.

    Blobs are grouped by window size so that small blobs do not pay for the large ones; the erf is
    evaluated once per pixel edge.
    """
    import torch

    halves = np.ceil(BLOB_REACH * sigma + 1).astype(np.int64)
    for half in np.unique(halves):
        grp = np.nonzero(halves == half)[0]
        width = 2 * int(half) + 1
        step = max(1, max_values // (width * width))
        edges = torch.arange(-int(half), int(half) + 2, dtype=torch.float64) - 0.5
        offs = torch.arange(-int(half), int(half) + 1, dtype=torch.int64)
        for s0 in range(0, len(grp), step):
            g = grp[s0:s0 + step]
            cx = torch.from_numpy(uv[g, 0])
            cy = torch.from_numpy(uv[g, 1])
            sg = torch.from_numpy(sigma[g])[:, None] * _SQRT2
            fx, fy = torch.floor(cx), torch.floor(cy)
            ex = torch.special.erf((fx[:, None] + edges - cx[:, None]) / sg)
            ey = torch.special.erf((fy[:, None] + edges - cy[:, None]) / sg)
            ix = fx.long()[:, None] + offs
            iy = fy.long()[:, None] + offs
            gx = (0.5 * (ex[:, 1:] - ex[:, :-1]) * ((ix >= 0) & (ix < wp))).float()
            gy = (0.5 * (ey[:, 1:] - ey[:, :-1]) * ((iy >= 0) & (iy < hp)) * torch.from_numpy(mass[g])[:, None]).float()
            base = torch.from_numpy(np.asarray(plane[g], dtype=np.int64)) * (hp * wp)
            rows = base[:, None] + iy.clamp(0, hp - 1) * wp
            idx = rows[:, :, None] + ix.clamp(0, wp - 1)[:, None, :]
            acc.index_add_(0, idx.reshape(-1), (gy[:, :, None] * gx[:, None, :]).reshape(-1))


def _splat_radial(acc, hp: int, wp: int, uv: np.ndarray, table: tuple[float, np.ndarray], support: float,
                  targets: list[tuple[int, float]]) -> None:
    """Add a radial projection profile centred at canvas ``uv`` to planes ``targets`` (index, weight)."""
    import torch

    dr, P = table
    half = int(math.ceil(support)) + 1
    x0, y0 = int(math.floor(uv[0])) - half, int(math.floor(uv[1])) - half
    xs = np.arange(max(x0, 0), min(x0 + 2 * half + 2, wp))
    ys = np.arange(max(y0, 0), min(y0 + 2 * half + 2, hp))
    if len(xs) == 0 or len(ys) == 0:
        return
    r = np.sqrt((xs[None, :] - uv[0]) ** 2 + (ys[:, None] - uv[1]) ** 2)
    vals = np.interp(r / dr, np.arange(len(P)), P, right=0.0).astype(np.float32)
    pix = torch.from_numpy((ys[:, None] * wp + xs[None, :]).reshape(-1))
    v = torch.from_numpy(vals.reshape(-1))
    for plane, weight in targets:
        acc.index_add_(0, pix + int(plane) * hp * wp, v * float(weight))
