"""Resampling tilt images into the tilt-axis frame (axis along y), with shifts and a cosine stretch.

RELION's model puts a specimen point projected by Ry(tilt) at ``p = Rz(rot) q + shift + c_img``.
Sampling the raw image at that ``p`` for every ``q`` gives the *aligned* image in the frame where the
tilt axis is vertical: every stage of the aligner works there, so shifts measured in this frame turn
into RELION shifts by one rotation (:func:`to_image_frame`).
"""

from __future__ import annotations

import numpy as np


def sample_aligned(
    images, scale: tuple[float, float], centre_xy: tuple[float, float], rot_deg, shifts_px,
    out_shape: tuple[int, int], out_pixel: float, stretch=None, mode: str = "bilinear",
):
    """Aligned images (n, ho, wo) in the tilt-axis frame.

    images: (n, h, w) torch tensor, possibly binned; ``scale`` = original pixels per pixel of ``images``
    along (y, x). ``centre_xy`` = RELION image centre in original pixels; ``rot_deg`` (n,) tilt-axis
    angles; ``shifts_px`` (n, 2) RELION shifts in original pixels; ``out_pixel`` = original pixels per
    output pixel; ``stretch`` (n,) expands x (perpendicular to the axis) by that factor.
    """
    import torch

    dev = images.device
    n, h, w = images.shape
    ho, wo = out_shape
    rot = np.deg2rad(np.broadcast_to(np.asarray(rot_deg, float), (n,)))
    st = np.ones(n) if stretch is None else np.broadcast_to(np.asarray(stretch, float), (n,))
    sh = np.asarray(shifts_px, float).reshape(n, 2)
    qy = (torch.arange(ho, device=dev, dtype=torch.float64) - ho // 2) * out_pixel
    qx = (torch.arange(wo, device=dev, dtype=torch.float64) - wo // 2) * out_pixel
    qy, qx = torch.meshgrid(qy, qx, indexing="ij")
    c = torch.tensor(np.cos(rot), device=dev)[:, None, None]
    s = torch.tensor(np.sin(rot), device=dev)[:, None, None]
    stt = torch.tensor(st, device=dev)[:, None, None]
    x = qx[None] / stt
    y = qy[None]
    px = c * x - s * y + float(centre_xy[0]) + torch.tensor(sh[:, 0], device=dev)[:, None, None]
    py = s * x + c * y + float(centre_xy[1]) + torch.tensor(sh[:, 1], device=dev)[:, None, None]
    gx = px / scale[1] / (w - 1) * 2 - 1
    gy = py / scale[0] / (h - 1) * 2 - 1
    grid = torch.stack([gx, gy], dim=-1).to(images.dtype)
    out = torch.nn.functional.grid_sample(
        images[:, None], grid, mode=mode, padding_mode="zeros", align_corners=True
    )
    return out[:, 0]


def to_image_frame(d_axis_frame: np.ndarray, rot_deg) -> np.ndarray:
    """Displacements (n, 2) measured in the tilt-axis frame -> RELION shift increments in the image."""
    d = np.asarray(d_axis_frame, float).reshape(-1, 2)
    r = np.deg2rad(np.broadcast_to(np.asarray(rot_deg, float), (len(d),)))
    c, s = np.cos(r), np.sin(r)
    return np.column_stack([c * d[:, 0] - s * d[:, 1], s * d[:, 0] + c * d[:, 1]])


def to_axis_frame(d_image: np.ndarray, rot_deg) -> np.ndarray:
    """Inverse of :func:`to_image_frame`."""
    return to_image_frame(d_image, -np.broadcast_to(np.asarray(rot_deg, float), (len(np.atleast_2d(d_image)),)))
