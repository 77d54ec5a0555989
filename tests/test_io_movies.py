"""Movie readers: TIFF (LZW/deflate/none, uint8/uint16), MRC (real stacks, 4-bit), EER; bounded memory."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import tifffile

from tiltflow.errors import TiltflowError
from tiltflow.io.eer import EerMovie, encode_eer_fraction, read_eer_info, write_eer
from tiltflow.io.movies import MrcMovie, TiffMovie, detect_format, movie_frame_shape, open_movie
from tiltflow.io.mrc import read_mrc, write_mrc, write_mrc_4bit

DATA = Path(__file__).parent / "data"


@pytest.mark.parametrize("compression", [None, "lzw", "zlib"])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_tiff_roundtrip(tmp_path, compression, dtype):
    rng = np.random.default_rng(3)
    movie = rng.integers(0, np.iinfo(dtype).max, size=(6, 40, 56), dtype=dtype)
    path = tmp_path / "m.tif"
    tifffile.imwrite(path, movie, compression=compression, photometric="minisblack")
    with open_movie(path) as m:
        assert isinstance(m, TiffMovie)
        assert (m.n_frames, m.shape, m.dtype) == (6, (40, 56), np.dtype(dtype))
        movie = movie[:, ::-1]  # the field reads TIFF rows reversed (MotionCor3 TiffUtil/CLoadTiffImage.cpp)
        np.testing.assert_array_equal(m.frame(2), movie[2])
        np.testing.assert_array_equal(m.frame(-1), movie[5])
        np.testing.assert_array_equal(np.stack(list(m.frames(1, 4))), movie[1:4])
        r = m.read()
        assert r.dtype == np.float32 and r.shape == (6, 40, 56)
        np.testing.assert_array_equal(r, movie.astype(np.float32))
        np.testing.assert_array_equal(m.read(2, 3, dtype=np.uint16)[0], movie[2])
        np.testing.assert_allclose(m.sum(), movie.sum(0))
        with pytest.raises(IndexError):
            m.frame(6)


def test_frames_do_not_load_the_whole_movie(tmp_path):
    n, h, w = 64, 128, 128
    movie = np.random.default_rng(0).integers(0, 4, size=(n, h, w), dtype=np.uint16)
    path = tmp_path / "long.tif"
    tifffile.imwrite(path, movie, compression="zlib", photometric="minisblack")
    whole_f32 = n * h * w * 4  # 4 MiB
    with open_movie(path) as m:
        tracemalloc.start()
        total = 0.0
        for fr in m.frames():
            total += float(fr.sum())
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert total == float(movie.sum())
    assert peak < whole_f32 / 8, f"iterating used {peak} bytes at peak"


def test_frames_is_lazy(tmp_path, monkeypatch):
    movie = np.arange(5 * 4 * 4, dtype=np.uint16).reshape(5, 4, 4)
    path = tmp_path / "m.tif"
    tifffile.imwrite(path, movie, photometric="minisblack")
    calls = []
    with open_movie(path) as m:
        real = m._frame
        monkeypatch.setattr(m, "_frame", lambda i: calls.append(i) or real(i))
        it = m.frames()
        first = next(it)
        assert calls == [0]  # one frame decoded, not the movie
        np.testing.assert_array_equal(first, movie[0, ::-1])


def test_real_serialem_stacks_as_movies():
    means = {}
    for mode in (0, 1, 2):
        with open_movie(DATA / f"tomoauto__test_002_mode{mode}.st") as m:
            assert isinstance(m, MrcMovie)
            assert (m.n_frames, m.shape) == (41, (24, 24))
            assert m.pixel_size == pytest.approx(2.604, abs=1e-4)
            assert m.dtype == {0: np.uint8, 1: np.int16, 2: np.float32}[mode]
            means[mode] = float(m.read().mean())
            np.testing.assert_array_equal(m.frame(0), read_mrc(m.path)[0][0])
    assert means[1] == pytest.approx(means[2], abs=0.01)
    assert abs(means[0] - means[2]) < 0.1  # mode 0 = the same data clipped at 0
    with open_movie(DATA / "tomodrgn__Unt_050_12.00A_000001.mrcs") as m:
        assert m.dtype == np.float16 and m.n_frames == 37 and m.pixel_size == 12.0
        assert m.read(dtype=np.float32).dtype == np.float32


def test_4bit_movie(tmp_path):
    data = np.random.default_rng(2).integers(0, 16, size=(4, 6, 9)).astype(np.uint8)
    path = write_mrc_4bit(tmp_path / "k2.mrc", data, 1.1)
    with open_movie(path) as m:
        assert (m.n_frames, m.shape, m.dtype, m.mode) == (4, (6, 9), np.uint8, 101)
        np.testing.assert_array_equal(m.read(dtype=np.uint8), data)


def test_truncated_movies_one_line_errors(tmp_path):
    cut = tmp_path / "cut.mrc"
    cut.write_bytes((DATA / "tomoauto__test_002_mode1.st").read_bytes()[:20000])
    with pytest.raises(TiltflowError) as ei:
        open_movie(cut)
    assert "truncated" in str(ei.value) and str(cut) in str(ei.value) and "\n" not in str(ei.value)

    movie = np.random.default_rng(0).integers(0, 255, size=(4, 64, 64), dtype=np.uint8)
    tif = tmp_path / "m.tif"
    tifffile.imwrite(tif, movie, compression="zlib", photometric="minisblack")
    raw = tif.read_bytes()
    cut_tif = tmp_path / "cut.tif"
    for frac in (0.3, 0.5, 0.9):  # never a silently shorter movie: refused when opened
        cut_tif.write_bytes(raw[: int(len(raw) * frac)])
        with pytest.raises(TiltflowError, match="truncated") as ei:
            open_movie(cut_tif)
        assert str(cut_tif) in str(ei.value) and "\n" not in str(ei.value)


def test_another_threads_broken_movie_does_not_fail_this_one(tmp_path):
    """The tifffile library reports a broken page chain only through its (global) logger; movies are opened side by side
    in threads, so a record logged by another thread while this one counts pages must not be taken as ours.
    """
    import logging
    import threading

    import tiltflow.io.movies as movies

    tif = tmp_path / "good.tif"
    tifffile.imwrite(tif, np.zeros((3, 8, 8), np.uint8), photometric="minisblack")

    def log_error() -> None:
        logging.getLogger("tifffile").error("invalid page offset 1")

    class Pages(list):
        """Pages whose counting logs tifffile's broken-chain error, in this thread or (joined) in another."""

        elsewhere = True

        def __len__(self):
            if self.elsewhere:
                t = threading.Thread(target=log_error)
                t.start()
                t.join()
            else:
                log_error()
            return super().__len__()

    real = tifffile.TiffFile(tif)
    fake = type("Fake", (), {"pages": Pages(real.pages), "filehandle": real.filehandle})()
    assert movies.count_tiff_pages(fake, tif) == 3
    Pages.elsewhere = False
    with pytest.raises(TiltflowError, match="page chain breaks after 3 pages"):
        movies.count_tiff_pages(fake, tif)
    real.close()


def test_unknown_and_missing(tmp_path):
    with pytest.raises(TiltflowError, match="not found"):
        open_movie(tmp_path / "none.tif")
    odd = tmp_path / "movie.bin"
    odd.write_bytes(b"\x00" * 2000)
    with pytest.raises(TiltflowError, match="unknown movie format"):
        open_movie(odd)
    # content sniffing for files without a known suffix
    mrc = write_mrc(tmp_path / "frames.dat", np.zeros((2, 4, 4), np.int16), 1.0)
    assert detect_format(mrc) == "mrc"
    assert movie_frame_shape(mrc) == (4, 4)


# --- EER ----------------------------------------------------------------------------------------


def _eer(tmp_path, n=48, h=32, w=24, p=0.1, seed=0, **kw):
    rng = np.random.default_rng(seed)
    fr = (rng.random((n, h, w)) < p).astype(np.uint8)
    sub = rng.integers(0, 16, size=(n, h, w))
    path = write_eer(tmp_path / "m.eer", fr, pixel_size=0.75, subpixel=sub, **kw)
    return path, fr, sub


def test_eer_synthetic_decodes_exactly(tmp_path):
    path, fr, _ = _eer(tmp_path)
    with tifffile.TiffFile(path) as tif:  # the reference decoder (imagecodecs via tifffile)
        assert tif.is_eer if hasattr(tif, "is_eer") else True
        np.testing.assert_array_equal(tif.asarray().astype(np.uint8), fr)
    info = read_eer_info(path)
    assert info.n_fractions == 48 and info.sensor_shape == (32, 24) and info.compression == 65001
    assert info.pixel_size == pytest.approx(0.75)
    assert info.total_dose == pytest.approx(fr.sum() / (32 * 24) / 0.75**2, rel=1e-5)


def test_eer_encoder_edge_cases():
    # long empty runs (> 127 pixels), an event in the last pixel, and an empty fraction
    import imagecodecs

    for ev in (np.zeros((20, 20), np.uint8), np.eye(20, dtype=np.uint8)[::-1]):
        ev = ev.copy()
        ev[-1, -1] = 1 if ev.any() else 0
        dec = imagecodecs.eer_decode(encode_eer_fraction(ev), ev.shape, 7, 2, 2)
        np.testing.assert_array_equal(dec.astype(np.uint8), ev)


def test_eer_grouping_by_size(tmp_path):
    path, fr, _ = _eer(tmp_path)
    with open_movie(path, eer_grouping=10) as m:
        assert isinstance(m, EerMovie)
        assert (m.n_frames, m.group_size, m.fractions_dropped) == (4, 10, 8)
        assert m.shape == (32, 24) and m.dtype == np.float32 and m.pixel_size == pytest.approx(0.75)
        np.testing.assert_array_equal(m.frame(1), fr[10:20].sum(0))
        np.testing.assert_array_equal(m.read().sum(0), fr[:40].sum(0))


def test_eer_grouping_by_dose(tmp_path):
    path, fr, _ = _eer(tmp_path)
    per_fraction = 0.05  # e/A^2, e.g. from the mdoc: 48 fractions, 2.4 e/A^2 in total
    with open_movie(path, eer_dose_per_frame=0.4, eer_total_dose=2.4) as m:
        assert m.group_size == 8 and m.n_frames == 6
        assert m.dose_per_frame == pytest.approx(8 * per_fraction)
    # from the header's totalDose when the mdoc dose is not given
    hdr_per_fraction = read_eer_info(path).dose_per_fraction
    with open_movie(path, eer_dose_per_frame=hdr_per_fraction * 12) as m:
        assert m.group_size == 12 and m.n_frames == 4


def test_eer_8k_rendering_places_subpixels(tmp_path):
    path, fr, sub = _eer(tmp_path, n=8)
    with open_movie(path, eer_grouping=1, eer_sampling=2) as m:
        assert m.shape == (64, 48) and m.pixel_size == pytest.approx(0.375)
        f0 = m.frame(0)
    assert f0.sum() == fr[0].sum()
    ys, xs = np.nonzero(f0)
    for y, x in zip(ys, xs, strict=True):
        s = sub[0, y // 2, x // 2]
        assert fr[0, y // 2, x // 2] == 1
        assert (s & 3) >> 1 == x % 2 and ((s >> 2) & 3) >> 1 == y % 2
    # binning the 8k frame 2x2 gives the 4k frame
    np.testing.assert_array_equal(f0.reshape(32, 2, 24, 2).sum(axis=(1, 3)), fr[0])


def test_eer_errors(tmp_path):
    path, _, _ = _eer(tmp_path, n=16)
    with pytest.raises(TiltflowError, match="larger than the movie"):
        open_movie(path, eer_grouping=17)
    with pytest.raises(TiltflowError, match="sampling"):
        open_movie(path, eer_sampling=4)
    with open_movie(path) as m:  # no grouping given: RELION's 32, or the whole of a shorter movie
        assert m.group_size == 16 and m.n_frames == 1
    nodose = write_eer(tmp_path / "n.eer", np.zeros((4, 8, 8), np.uint8), pixel_size=0.0)
    with pytest.raises(TiltflowError, match="dose per fraction is unknown"):
        open_movie(nodose, eer_dose_per_frame=1.0)
    raw = path.read_bytes()
    cut = tmp_path / "cut.eer"
    cut.write_bytes(raw[: len(raw) // 3])
    with pytest.raises(TiltflowError, match="truncated") as ei:
        open_movie(cut, eer_grouping=1)
    assert str(cut) in str(ei.value)


def test_mrc_mode6_movie(tmp_path):
    frames = np.random.default_rng(4).integers(0, 60000, size=(3, 10, 12)).astype(np.uint16)
    path = write_mrc(tmp_path / "m.mrcs", frames, 0.9)
    with open_movie(path) as m:
        assert m.dtype == np.uint16 and m.n_frames == 3 and m.pixel_size == pytest.approx(0.9)
        np.testing.assert_array_equal(m.read(dtype=np.uint16), frames)
