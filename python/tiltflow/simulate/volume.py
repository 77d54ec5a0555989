"""The phantom as a voxel volume (the ground-truth tomogram), at a binning that keeps it small.

Voxel ``i`` of a volume binned by ``b`` covers bin-1 pixels ``[b*i, b*i + b)`` of the tomogram box, so its
centre is ``b*i + (b-1)/2 - c_tomo`` from the tomogram centre. Blob voxels are exact voxel averages
(differences of erf); radial objects are sampled at voxel centres with edges widened by the voxel (box
filter variance ``b^2/12``), which keeps their mass. Values are voxel-averaged densities (rad per movie
pixel of path), so a line through the volume sums to the projection after multiplying by ``b``.
"""

from __future__ import annotations

import math

import numpy as np

from tiltflow.geometry import centre
from tiltflow.simulate.phantom import Phantom

MAX_VOXELS = 16_000_000


def phantom_binning(box: tuple[int, int, int], max_voxels: int = MAX_VOXELS) -> int:
    """Smallest power of two that brings the box under ``max_voxels``."""
    b = 1
    while math.ceil(box[0] / b) * math.ceil(box[1] / b) * math.ceil(box[2] / b) > max_voxels:
        b *= 2
    return b


def render_volume(phantom: Phantom, binning: int = 1, max_values: int = 1 << 22) -> np.ndarray:
    """Voxelise the phantom over its tomogram box: float32 ``volume[z, y, x]``."""
    import torch

    b = int(binning)
    box = phantom.box
    shape_xyz = [int(math.ceil(n / b)) for n in box]
    nx, ny, nz = shape_xyz
    acc = torch.zeros(nz * ny * nx, dtype=torch.float32)
    c = np.array([centre(n) for n in box], dtype=np.float64)
    # blob centres in voxel-index units
    bl = phantom.blobs
    u = (bl.xyz + c - (b - 1) / 2.0) / b
    sg = bl.sigma / b
    reach = 3.5 * sg + 2
    inside = np.all((u > -reach[:, None]) & (u < np.array(shape_xyz) - 1 + reach[:, None]), axis=1)
    u, sg, mass = u[inside], sg[inside], bl.mass[inside] / b**3
    halves = np.ceil(3.5 * sg + 1).astype(np.int64)
    for half in np.unique(halves):
        grp = np.nonzero(halves == half)[0]
        w = 2 * int(half) + 1
        step = max(1, max_values // w**3)
        offs = torch.arange(-int(half), int(half) + 1)
        for s0 in range(0, len(grp), step):
            g = grp[s0:s0 + step]
            s = torch.from_numpy(sg[g])[:, None] * math.sqrt(2)
            axes = []
            for d, n in enumerate(shape_xyz):
                cc = torch.from_numpy(u[g, d])
                i = torch.floor(cc).long()[:, None] + offs
                v = 0.5 * (torch.special.erf((i + 0.5 - cc[:, None]) / s) - torch.special.erf((i - 0.5 - cc[:, None]) / s))
                axes.append((i.clamp(0, n - 1), v * ((i >= 0) & (i < n))))
            (ix, vx), (iy, vy), (iz, vz) = axes
            vals = (torch.from_numpy(mass[g])[:, None, None, None] * vz[:, :, None, None] * vy[:, None, :, None]
                    * vx[:, None, None, :]).float()
            idx = (iz[:, :, None, None] * ny + iy[:, None, :, None]) * nx + ix[:, None, None, :]
            acc.index_add_(0, idx.reshape(-1), vals.reshape(-1))
    vol = acc.view(nz, ny, nx).numpy()
    # radial objects
    for obj in phantom.radial:
        uc = (obj.centre + c - (b - 1) / 2.0) / b
        r = obj.support / b + 1
        lo = [max(int(math.floor(uc[d] - r)), 0) for d in range(3)]
        hi = [min(int(math.ceil(uc[d] + r)) + 1, shape_xyz[d]) for d in range(3)]
        if any(h <= low for low, h in zip(lo, hi, strict=True)):
            continue
        zz, yy, xx = np.meshgrid(*[np.arange(lo[d], hi[d]) for d in (2, 1, 0)], indexing="ij")
        dist = np.sqrt((xx - uc[0]) ** 2 + (yy - uc[1]) ** 2 + (zz - uc[2]) ** 2) * b
        vol[lo[2]:hi[2], lo[1]:hi[1], lo[0]:hi[0]] += obj.density(dist, extra_var=b * b / 12.0).astype(np.float32)
    return vol
