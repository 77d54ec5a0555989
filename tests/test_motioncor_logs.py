"""MotionCor2/3 wrapper: parsing real MotionCor2 logs, version strings and the command line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tiltflow.backends import motioncor as mc
from tiltflow.errors import ToolError

DATA = Path(__file__).parent / "data"


def log(name: str) -> str:
    return (DATA / name).read_text()


def test_mc2_1_5_eer_log():
    """EER run (-FmIntFile, 1539 raw frames rendered to 16): old 'Frame (  1) shift:' rows."""
    text = log("appion__motioncor2_1.5.0_log.txt")
    tables = mc.parse_shift_tables(text)
    assert len(tables) == 1
    s = tables[0].shifts
    assert s.shape == (16, 2)
    np.testing.assert_allclose(s[0], [2.46, 8.51])
    np.testing.assert_allclose(s[8], [0.0, 0.0])  # -FmRef -1: the central frame is the reference
    np.testing.assert_allclose(s[15], [-1.32, -4.60])
    assert mc.parse_rendered_frames(text) == 16
    # the patch table printed later (4 columns) is not mistaken for shifts
    assert not any(len(t.shifts) == 15 for t in tables)


def test_mc2_tiff_log_with_slurm_lines():
    text = log("appion__29123499.motioncor2.log")
    s = mc.shifts_for(text, "/x/m25apr02e_g3_00014gr_00001sq_v02_00002hl_v01_00004enn_c.mrc")
    assert s.shape == (28, 2)
    np.testing.assert_allclose(s[[0, 14, 27]], [[-2.55, 5.76], [0.0, 0.0], [1.39, -1.61]])
    assert mc.parse_rendered_frames(text) == 28


def test_mc2_1_6_serial_log_picks_each_movie_by_its_output():
    """-Serial 1 batch log: eight 50-frame tables in the new layout, each followed by its saved sums."""
    text = log("appion__motioncor2_1.6.4_serial_log.txt")
    tables = mc.parse_shift_tables(text)
    assert [len(t.shifts) for t in tables] == [50] * 8
    assert tables[0].saved[0].endswith("00003hl_00002enn.frames.mrc")
    assert tables[0].saved[1].endswith("00002enn.frames_DW.mrc")
    np.testing.assert_allclose(tables[0].shifts[:3], [[0.0, 0.0], [0.6, -0.1], [1.12, -0.22]])
    np.testing.assert_allclose(tables[0].shifts[-1], [4.01, -5.46])
    out_dir = "/h2/jpellman/motioncor2-serial-vs-noserial/output/"
    first = mc.shifts_for(text, out_dir + "n25aug18c_NY1814_g3_00021gr_00089sq_v02_00003hl_00002enn.frames.mrc")
    last = mc.shifts_for(text, out_dir + "n25aug18c_NY1814_g3_00021gr_00089sq_v02_00003hl_00009enn.frames.mrc")
    np.testing.assert_array_equal(first, tables[0].shifts)
    np.testing.assert_array_equal(last, tables[-1].shifts)
    assert not np.array_equal(first, last)


def test_log_without_table_is_an_error():
    with pytest.raises(ToolError, match="no 'Full-frame alignment' shift table"):
        mc.shifts_for("GPU 0 memory: 8107 MB\nError: cannot load movie\n", "x.mrc")


@pytest.mark.parametrize("text, version", [
    ("MotionCor2 version 1.6.4\n", "1.6.4"),
    ("MotionCor3 version 1.1.2\nBuilt on Jun 11 2024\n", "1.1.2"),
    ("MotionCor2 Version 1.4.0-Cuda110\n", "1.4.0-Cuda110"),
])
def test_version_pattern(text, version):
    import re

    from tiltflow.backends.tools import TOOLS

    assert re.search(TOOLS["motioncor2"].version_pattern, text).group(1) == version


def test_command_line_for_tiff_with_dose_weighting(tmp_path):
    call = mc.MotionCorCall(
        executable=Path("/opt/MotionCor2"), movie=Path("/data/TS_01_000_0.0.tif"), movie_format="tiff",
        out_mrc=tmp_path / "TS_01_000_0_0.mrc", pixel_size=0.675, kv=300, gain=Path("/g/gain.mrc"),
        throw=1, trunc=2, bin_factor=2, patches=(5, 5), split_sum=True, dose_per_frame=0.375,
        init_dose=3.375, gpu="0 1", log_dir=tmp_path / "logs", extra_args=("-Iter", "10"),
    )
    cmd = mc.build_command(call)
    joined = " ".join(cmd)
    assert cmd[:5] == ["/opt/MotionCor2", "-InTiff", "/data/TS_01_000_0.0.tif", "-OutMrc",
                       str(tmp_path / "TS_01_000_0_0.mrc")]
    for part in ("-Gain /g/gain.mrc", "-PixSize 0.675", "-kV 300", "-Patch 5 5", "-FmRef 0", "-Throw 1",
                 "-Trunc 2", "-FtBin 2", "-FmDose 0.375", "-InitDose 3.375", "-SplitSum 1", "-Gpu 0 1",
                 "-Iter 10", f"-LogDir {tmp_path / 'logs'}/"):
        assert part in joined, part
    assert "-RotGain" not in joined and "-FlipGain" not in joined and "-InEer" not in joined


def test_command_line_for_eer_without_dose_weighting(tmp_path):
    fm = mc.write_fmint_file(tmp_path / "fmint.txt", 1539, 96, 4.6 / 1539)
    assert fm.read_text() == f"1539 96 {4.6 / 1539:.6g}\n"
    call = mc.MotionCorCall(executable=Path("mc3"), movie=Path("m.eer"), movie_format="eer",
                            out_mrc=Path("o.mrc"), pixel_size=0.73, fmint_file=fm, eer_sampling=2,
                            split_sum=False)
    joined = " ".join(mc.build_command(call))
    assert "-InEer m.eer" in joined and f"-FmIntFile {fm}" in joined and "-EerSampling 2" in joined
    assert "-FmDose" not in joined and "-SplitSum" not in joined and "-FtBin" not in joined
    with pytest.raises(ToolError, match="cannot read 'dm4'"):
        mc.build_command(mc.MotionCorCall(executable=Path("mc"), movie=Path("m.dm4"), movie_format="dm4",
                                          out_mrc=Path("o.mrc"), pixel_size=1))


def test_output_names_follow_motioncor():
    outs = mc.output_paths(Path("/t/TS_01_000_0_0.mrc"))
    assert {k: v.name for k, v in outs.items()} == {
        "sum": "TS_01_000_0_0.mrc", "dose_weighted": "TS_01_000_0_0_DW.mrc",
        "odd": "TS_01_000_0_0_ODD.mrc", "even": "TS_01_000_0_0_EVN.mrc"}
