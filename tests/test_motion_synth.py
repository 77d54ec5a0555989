"""The motion-correction builders in builders.py (movies with a known drift) do what they promise."""

from __future__ import annotations

import mrcfile
import numpy as np

from builders import frames, motion_series
from tiltflow import star


def test_frames_follow_the_drift_convention():
    """Frame i's content is the specimen moved by +drift[i]: a bright spot moves with the drift."""
    drift = np.array([[-2.0, 1.0], [2.0, -1.0]])
    fr = frames((64, 64), drift, counts=1000, contrast=0.5, noise=False)
    diff = fr[1] - fr[0]
    # the cross-correlation of frame 1 with frame 0 peaks at the displacement (+4, -2)
    cc = np.fft.irfft2(np.fft.rfft2(fr[1] - fr[1].mean()) * np.conj(np.fft.rfft2(fr[0] - fr[0].mean())), s=(64, 64))
    py, px = np.unravel_index(np.argmax(cc), cc.shape)
    assert ((px + 32) % 64 - 32, (py + 32) % 64 - 32) == (4, -2)
    assert np.abs(diff).max() > 0


def test_motion_series_writes_a_readable_tilt_series(tmp_path):
    s = motion_series(tmp_path, n_tilts=2, n_frames=4, shape=(32, 48))
    ts = star.read_tilt_series(s["star"])
    assert len(ts.tilts) == 2 and ts.pixel_size == 2.0
    with mrcfile.open(s["movies"][0]) as m:
        assert m.data.shape == (4, 32, 48)
