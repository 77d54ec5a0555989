"""Weighted back-projection, slab by slab: filter the images once, back-project z-slabs on demand."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from tiltflow.tomo.filters import FilterSettings, weight_images
from tiltflow.tomo.projector import ProjectionSetup


def wbp_slabs(
    images: torch.Tensor, setup: ProjectionSetup, settings: FilterSettings = FilterSettings(), slab: int = 64,
) -> Iterator[tuple[int, int, torch.Tensor]]:
    """Yield ``(z0, z1, volume[z0:z1])``; memory is the images plus one slab, whatever the depth."""
    d = setup.volume_shape[0]
    filtered = weight_images(images, setup.alignment, thickness_px=d, settings=settings)
    for z0 in range(0, d, max(1, int(slab))):
        z1 = min(d, z0 + max(1, int(slab)))
        yield z0, z1, setup.backproject(filtered, z_slab=(z0, z1))


def wbp(images: torch.Tensor, setup: ProjectionSetup, settings: FilterSettings = FilterSettings()) -> torch.Tensor:
    """The whole volume (d, h_v, w_v) at once (small volumes, tests, projection matching)."""
    return torch.cat([v for _, _, v in wbp_slabs(images, setup, settings, slab=setup.volume_shape[0])])
