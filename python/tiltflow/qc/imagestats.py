"""Per-micrograph statistics behind the dark and blank rules, one image in memory at a time.

Why these two numbers: AreTomo removes a tilt as dark when |mean|/std falls below DarkTol x that of the
zero tilt (few counts: shot noise dominates the std); an image with counts but no specimen (stage drifted
off target, empty hole) is caught by its missing spatial correlation (shot noise is white, specimen is not).
The measures are those of the align step's dark check (:func:`tiltflow.align.dark.image_stats`), so the
exclude step and AreTomo-style alignment agree on what "dark" means.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class ImageStats:
    """``ratio`` = |mean|/std on the central 80 %; ``contrast`` = neighbour correlation of the binned image."""

    ratio: float
    contrast: float
    mean: float
    std: float


def image_stats(image: np.ndarray) -> ImageStats:
    """Statistics of one 2-D micrograph."""
    from tiltflow.align.dark import image_stats as _stats

    a = np.asarray(image, dtype=np.float32)
    if a.ndim == 3:
        a = a[0]
    ratio, structure = _stats(a[None])
    finite = a[np.isfinite(a)]
    return ImageStats(float(ratio[0]), float(structure[0]), float(finite.mean()) if finite.size else 0.0,
                      float(finite.std()) if finite.size else 0.0)


def micrograph_stats(path: str | Path) -> ImageStats:
    """Statistics of the micrograph in an MRC file (first section)."""
    from tiltflow.io.mrc import MrcReader

    with MrcReader(path) as r:
        return image_stats(r.section(0))
