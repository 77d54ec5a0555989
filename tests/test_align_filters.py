"""align.filters.fourier_bin: Fourier cropping one tilt at a time (bounded memory), checked against numpy's FFT."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tiltflow.align.filters import bin_scale, fourier_bin


def _numpy_fourier_crop(stack: np.ndarray, ho: int, wo: int) -> np.ndarray:
    """Independent derivation: centred spectrum, keep the central ho x wo block, back, keep the mean."""
    n, h, w = stack.shape
    f = np.fft.fftshift(np.fft.fft2(stack.astype(np.float64)), axes=(-2, -1))
    cy, cx = h // 2, w // 2
    f = f[:, cy - ho // 2: cy + ho // 2, cx - wo // 2: cx + wo // 2]
    return np.fft.ifft2(np.fft.ifftshift(f, axes=(-2, -1))).real * (ho * wo) / (h * w)


@pytest.mark.parametrize("shape, factor", [((4, 96, 120), 3.0), ((3, 101, 64), 2.0)])
def test_fourier_bin_matches_numpy_and_keeps_the_mean(shape, factor):
    rng = np.random.default_rng(1)
    stack = (rng.normal(size=shape) * 50 + 20).astype(np.float32)
    out = fourier_bin(torch.from_numpy(stack), factor).numpy()
    ho, wo = out.shape[-2:]
    assert (ho, wo) == (2 * round(shape[1] / factor / 2), 2 * round(shape[2] / factor / 2))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, _numpy_fourier_crop(stack, ho, wo), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(out.mean(axis=(1, 2)), stack.mean(axis=(1, 2)), rtol=1e-4)
    assert bin_scale(shape[1:], (ho, wo)) == (shape[1] / ho, shape[2] / wo)


def test_each_tilt_binned_on_its_own_equals_the_stack_binned_together():
    """Per-tilt processing must not change a voxel: a tilt binned alone is bit-identical to it in the stack."""
    x = torch.randn(5, 64, 80) * 10
    whole = fourier_bin(x, 2.5)
    for i in range(5):
        assert torch.equal(fourier_bin(x[i:i + 1], 2.5)[0], whole[i])
