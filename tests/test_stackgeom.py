"""stackgeom: where binned-stack pixels lie on the bin-1 images (derived from the binning itself)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tiltflow import stackgeom, star
from tiltflow.io.mrc import write_mrc
from tiltflow.steps.stack import bin_image


@pytest.mark.parametrize(("n1", "b"), [(64, 1), (64, 2), (65, 2), (4092, 3), (5760, 4), (4097, 3)])
def test_a_stack_pixel_centre_maps_to_its_bin1_position(n1, b):
    # a bright b x b block on the bin-1 image becomes one stack pixel j: bin_image (the stack step) says which
    ns = n1 // b
    j = ns // 2 + 3
    img = np.zeros((n1, n1), np.float32)
    start = stackgeom.crop_origin(n1, b) + j * b
    img[start:start + b, start:start + b] = 1.0
    binned = bin_image(img, b)
    assert binned[j, j] == pytest.approx(1.0)  # the block is exactly stack pixel j
    centre_bin1 = start + (b - 1) / 2 - n1 // 2  # about RELION's centre N // 2
    s = np.array([[j - ns // 2, j - ns // 2]], float)  # the same point in stack pixels about n // 2
    np.testing.assert_allclose(stackgeom.shifts_to_bin1(s, (n1, n1), (ns, ns), b), [[centre_bin1] * 2])
    np.testing.assert_allclose(stackgeom.shifts_to_stack(stackgeom.shifts_to_bin1(s, (n1, n1), (ns, ns), b),
                                                         (n1, n1), (ns, ns), b), s)


def test_bin1_size_from_a_micrograph_that_is_not_a_multiple(tmp_path):
    write_mrc(tmp_path / "a.mrc", np.zeros((13, 21), np.float32), 1.0)
    ts = star.TiltSeriesStar("TS", {}, pd.DataFrame({star.MICROGRAPH: ["a.mrc"]}))
    assert stackgeom.bin1_image_size(ts, tmp_path, (7, 4), 3) == (21, 13)
    assert stackgeom.bin1_image_size(ts, tmp_path, (9, 5), 2) == (18, 10)  # header does not bin to this stack
    ts.tilts[star.MICROGRAPH] = ["missing.mrc"]
    assert stackgeom.bin1_image_size(ts, tmp_path, (7, 4), 3) == (21, 12)


def test_record_stacks_sets_and_clears_the_columns(tmp_path):
    g = {star.TF_STACK_EVEN: "old_EVN.mrc"}
    stackgeom.record_stacks(g, {"": tmp_path / "stack" / "TS.mrc"}, 2, 6.0, tmp_path)
    assert g == {star.TF_STACK: "stack/TS.mrc", star.TF_STACK_BINNING: 2, star.TF_STACK_PIXEL_SIZE: 6.0}
