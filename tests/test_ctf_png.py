"""ctffit.diagnostic.write_png reuses one figure per process: a PNG must not carry anything of the previous one."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from tiltflow.ctffit import diagnostic
from tiltflow.ctffit.diagnostic import DiagnosticPlot, write_png


def _plot(seed: int, k_max: float, resolution: float, title: str) -> DiagnosticPlot:
    rng = np.random.default_rng(seed)
    k = np.linspace(0.0, k_max, 200)
    return DiagnosticPlot(rng.random((128, 128)).astype(np.float32), k, np.sin(300 * k), np.sin(300 * k) ** 2,
                          np.cos(10 * k), resolution, 30.0, 1 / k_max, title)


def _pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_a_png_after_another_equals_the_same_png_drawn_on_a_fresh_figure(tmp_path):
    fitted = _plot(1, 0.2, 8.0, "TS_01 tilt +0.0")
    unfitted = _plot(2, 0.25, math.inf, "TS_01 tilt +60.0")  # no fit: no resolution line, other k range
    diagnostic._CANVAS.clear()
    write_png(tmp_path / "fresh.png", unfitted)
    diagnostic._CANVAS.clear()
    write_png(tmp_path / "first.png", fitted)
    write_png(tmp_path / "second.png", unfitted)
    second, fresh = _pixels(tmp_path / "second.png"), _pixels(tmp_path / "fresh.png")
    assert second.shape == fresh.shape
    assert np.array_equal(second, fresh)
    assert not np.array_equal(_pixels(tmp_path / "first.png"), fresh)  # the two plots do differ
