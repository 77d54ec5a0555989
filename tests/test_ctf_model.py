"""Building blocks of the built-in CTF fit: model, conventions, background, spectra, series path, files."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tiltflow.ctffit import model
from tiltflow.ctffit.background import Background, bspline_basis
from tiltflow.ctffit.ctffind_files import (
    AvrotProfile,
    CtffindRow,
    read_avrot,
    read_summary,
    write_avrot,
    write_summary,
)
from tiltflow.ctffit.fit import choose_box
from tiltflow.ctffit.search import rotational_average
from tiltflow.ctffit.series import consistent_path, smooth_path
from tiltflow.ctffit.spectrum import defocus_gradient, tile_spectra, tilt_corrected_average
from tiltflow.ctfmodel import ctf_2d
from tiltflow.geometry import projection_rotations


@pytest.mark.parametrize("u,v,angle,phase", [(30000, 29000, 30.0, 0.0), (15000, 14000, -70.0, 90.0),
                                             (42000, 42000, 0.0, 0.0)])
def test_ctf_squared_matches_ctfmodel(u, v, angle, phase):
    optics = model.Optics(300.0, 2.7, 0.1)
    shape, px = (64, 96), 2.0
    ref = ctf_2d(shape, px, u, v, angle, 300.0, 2.7, 0.1, phase_shift=phase).double() ** 2
    fy = torch.fft.fftfreq(shape[0], d=px, dtype=torch.float64)
    fx = torch.fft.fftfreq(shape[1], d=px, dtype=torch.float64)
    ky, kx = torch.meshgrid(fy, fx, indexing="ij")
    phi = torch.atan2(ky, kx)
    mean, ax, ay = model.from_relion(u, v, angle)
    got = model.ctf_squared(kx**2 + ky**2, torch.cos(2 * phi), torch.sin(2 * phi), mean, ax, ay, optics,
                            math.radians(phase))
    assert torch.allclose(got, ref, atol=2e-6)


def test_relion_conventions_round_trip():
    for u, v, a in [(30000, 29000, 30.0), (20000, 20500, 10.0), (41000, 40000, -89.0), (35000, 34000, 135.0)]:
        uu, vv, aa = model.to_relion(*model.from_relion(u, v, a))
        assert uu >= vv and -90 < aa <= 90
        assert (uu + vv) / 2 == pytest.approx((u + v) / 2)
        assert uu - vv == pytest.approx(abs(u - v))
        if u > v:
            assert model.angle_difference(aa, a) == pytest.approx(0, abs=1e-6)
        else:  # U and V swapped: the azimuth turns by 90 degrees
            assert model.angle_difference(aa, a + 90) == pytest.approx(0, abs=1e-6)
    assert model.normalise_angle(-90.0) == 90.0 and model.normalise_angle(270.0) == 90.0
    assert model.angle_difference(89.0, -89.0) == pytest.approx(2.0)


def test_equiphase_k2_maps_phases():
    optics = model.Optics()
    k2 = torch.linspace(0.0005, 0.04, 50, dtype=torch.float64)
    mapped = model.equiphase_k2(k2, 32000.0, 30000.0, optics)
    assert torch.allclose(model.chi(mapped, 30000.0, optics), model.chi(k2, 32000.0, optics), rtol=1e-9)
    assert bool((mapped > k2).all())  # more defocus: the same phase sits further out at less defocus


def test_dose_envelope():
    k = torch.tensor([0.02, 0.05, 0.1, 0.2])
    assert torch.allclose(model.dose_envelope(k, 0.0), torch.ones(4))
    e = model.dose_envelope(k, 60.0)
    assert bool((e[1:] < e[:-1]).all()) and float(e[-1]) < 1e-3 < float(e[0])


def test_bspline_background_removes_smooth_and_keeps_rings():
    x = torch.linspace(0.0, 1.0, 400, dtype=torch.float64)
    basis = bspline_basis(x, 8, 0.0, 1.0)
    assert torch.allclose(basis.sum(1), torch.ones(400, dtype=torch.float64), atol=1e-9)  # partition of unity
    bg = Background(basis)
    smooth = 3 + 2 * x - 5 * x**2 + x**3
    rings = torch.cos(2 * math.pi * 25 * x)
    assert float(bg.residual(smooth).abs().max()) < 1e-9
    kept = bg.residual(smooth + rings)
    assert float(torch.corrcoef(torch.stack([kept, rings]))[0, 1]) > 0.99


def test_defocus_gradient_follows_relion_geometry():
    """Points on the specimen mid-plane: depth z = -tan(tilt) (p . (cos a, sin a)); defocus = d + hand z."""
    rng = np.random.default_rng(1)
    for tilt, axis in [(30.0, 85.0), (-50.0, -95.0), (12.0, 3.0)]:
        r = projection_rotations(0.0, tilt, axis)
        xyz = np.c_[rng.normal(size=(5, 2)) * 100, np.zeros(5)]
        img = xyz @ r.T
        for hand in (1, -1):
            gx, gy = defocus_gradient(tilt, axis, -hand)  # tiltflow's sign = -rlnTomoHand
            assert np.allclose(gx * img[:, 0] + gy * img[:, 1], hand * img[:, 2])


def test_tile_spectra_cropping_puts_a_wave_at_its_frequency():
    px, fit_px, box = 1.0, 2.0, 128
    f = 0.1  # 1/A, below the fitting Nyquist (0.25)
    y, x = np.mgrid[0:600, 0:700]
    img = np.cos(2 * math.pi * f * x * px).astype(np.float32)
    tiles = tile_spectra(img, px, box, fit_px)
    assert tiles.pixel_size == pytest.approx(2.0) and tiles.box == box
    avg = tiles.average()
    r, c = np.unravel_index(int(torch.argmax(avg)), avg.shape)
    assert r == box // 2 and abs(c - box // 2) == round(f * box * fit_px)
    cx, cy = tiles.centres[:, 0], tiles.centres[:, 1]
    assert float(cx.min() + cx.max()) == 0 and float(cy.min() + cy.max()) == 0  # first and last tiles at the edges
    assert tiles.iciness is not None  # native Nyquist (2 A) reaches the ice band at 3.5-3.9 A
    assert tile_spectra(img, 2.5, 128).iciness is None


def test_rotational_average_of_a_radial_function():
    box, px = 64, 2.0
    c = box // 2
    yy, xx = torch.meshgrid(torch.arange(box) - c, torch.arange(box) - c, indexing="ij")
    r = (xx**2 + yy**2).float().sqrt() / (box * px)
    prof = rotational_average(r * 10, px, 0.02, 0.2)
    assert torch.allclose(prof.value, prof.k * 10, rtol=0.05)


def test_tilt_correction_aligns_rings_of_tilted_tiles():
    """Tiles at different defoci, stretched to the centre's defocus, line up with the centre's rings."""
    from tiltflow.ctffit.spectrum import TileSpectra

    optics, px, box = model.Optics(), 4.0, 256  # rings sampled by several pixels up to 0.1 / A
    kx = (torch.arange(box) - box // 2).float() / (box * px)
    ky, kxx = torch.meshgrid(kx, kx, indexing="ij")
    k2 = kxx**2 + ky**2
    centres = torch.tensor([[-2000.0, 0.0], [0.0, 0.0], [2000.0, 0.0]])
    grad = (0.5, 0.0)  # 1000 A of defocus per 2000 A across x
    powers = torch.stack([model.ctf_squared(k2, 1.0, 0.0, 30000.0 + grad[0] * float(cx), 0.0, 0.0, optics)
                          for cx, _ in centres])
    tiles = TileSpectra(power=powers, centres=centres, pixel_size=px, native_pixel_size=px)
    corrected = tilt_corrected_average(tiles, 30000.0, grad, optics)
    plain = tiles.average()
    ref = powers[1]
    band = (k2 > 0.04**2) & (k2 < 0.1**2)
    err_corr = float((corrected - ref)[band].abs().mean())
    err_plain = float((plain - ref)[band].abs().mean())
    assert err_corr < 0.25 * err_plain


def test_choose_box_halves_for_small_images_but_keeps_rings_sampled():
    optics = model.Optics()
    # a 1024 px image at 3 A: 9 tiles of 512, 49 of 256; rings at 10 A for 5 um need ~236 px
    assert choose_box((1024, 1024), 3.0, 3.0, 512, 1 / 10, 50000, optics) == 256
    # rings at 6 A need ~394 px: the box stays
    assert choose_box((1024, 1024), 3.0, 3.0, 512, 1 / 6, 50000, optics) == 512
    # a large image has tiles enough
    assert choose_box((4096, 4096), 1.0, 2.0, 512, 1 / 10, 50000, optics) == 512


def test_consistent_path_ties_weak_tilts_to_their_neighbours():
    d = np.arange(20000.0, 60001.0, 100.0)

    def peak(centre, height, width=300.0):
        return height * np.exp(-0.5 * ((d - centre) / width) ** 2)

    truth = [30000, 30400, 30800, 31200, 31600]
    curves = [(d, peak(t, 0.8), 200) for t in truth]
    # tilt 2 weak: its best peak is a wrong ring order far away, a small bump sits at the truth
    curves[2] = (d, peak(45000, 0.30) + peak(30800, 0.25), 40)
    path = consistent_path(curves, [40000.0] * 5, sigma=1000.0)
    assert abs(path[2] - 30800) <= 200
    assert np.allclose(path[[0, 1, 3, 4]], np.array(truth)[[0, 1, 3, 4]], atol=100)
    # a tilt without evidence keeps its neighbours' value instead of a noise peak
    curves[2] = (d, peak(52000, 0.2), 40)
    assert 30000 <= consistent_path(curves, [40000.0] * 5, sigma=1000.0)[2] <= 31600


def test_smooth_path_follows_the_trend_through_weak_tilts():
    d = np.arange(20000.0, 60001.0, 100.0)

    def peak(centre, height, width=300.0):
        return height * np.exp(-0.5 * ((d - centre) / width) ** 2)

    truth = [30000.0 + 400.0 * i for i in range(10)]  # a steady drift
    curves = [(d, peak(t, 0.8), 200) for t in truth]
    # tilt 4 weak: a wrong ring order scores a little higher than the bump at the truth
    curves[4] = (d, peak(45000, 0.30) + peak(truth[4], 0.25), 40)
    # the last two tilts have no decisive evidence: they follow the trend (a random walk would hold tilt 7)
    curves[8] = (d, peak(52000, 0.12) + peak(truth[8], 0.1), 40)
    curves[9] = (d, peak(25000, 0.12) + peak(truth[9], 0.1), 40)
    path = smooth_path(curves, [40000.0] * 10, sigma=500.0)
    assert abs(path[4] - truth[4]) <= 200
    assert np.allclose(path[[0, 1, 2, 3, 5, 6, 7]], np.array(truth)[[0, 1, 2, 3, 5, 6, 7]], atol=100)
    assert abs(path[8] - truth[8]) <= 300 and abs(path[9] - truth[9]) <= 300
    # a tilt whose own rings are decisive keeps its own defocus even off the trend
    curves[5] = (d, peak(truth[5] + 1500, 0.8), 200)
    assert abs(smooth_path(curves, [40000.0] * 10, sigma=500.0)[5] - (truth[5] + 1500)) <= 100


def test_ctffind_files_round_trip(tmp_path):
    row = CtffindRow(1, 31000.5, 30000.25, 33.5, 0.1, 0.25, 7.5)
    p = write_summary(tmp_path / "a_PS.txt", program="test", input_file="a.mrc", pixel_size=1.5, voltage=300,
                      cs=2.7, amplitude_contrast=0.1, box=512, res_min=30, res_max=5, defocus_min=1e4,
                      defocus_max=5e4, rows=[row])
    (back,) = read_summary(p).rows
    assert (back.defocus_1, back.defocus_2, back.azimuth, back.fit_resolution) == pytest.approx((31000.5, 30000.25, 33.5, 7.5))
    k = np.linspace(0, 0.2, 11)
    prof = AvrotProfile(k, k + 1, k + 2, k + 3, np.ones(11), np.full(11, 0.2))
    (pb,) = read_avrot(write_avrot(tmp_path / "a_PS_avrot.txt", program="test", input_file="a.mrc", profiles=[prof]))
    assert np.allclose(pb.fit, k + 3, atol=1e-6) and np.allclose(pb.cc_2sigma, 0.2)


def test_gradient_sign_evidence_adds_up_over_tilts():
    from types import SimpleNamespace

    from tiltflow.ctffit.series import gradient_sign_evidence

    d = np.arange(20000.0, 40001.0, 100.0)
    curve = (d, np.zeros_like(d), 200)
    fits = [SimpleNamespace(gradient_scores={1: 0.30, -1: 0.45}, curve=curve),  # favours -1
            SimpleNamespace(gradient_scores={1: 0.32, -1: 0.30}, curve=curve),  # weakly +1
            SimpleNamespace(gradient_scores={0: 0.8}, curve=curve)]  # untilted: no say
    sign, evidence = gradient_sign_evidence(fits)
    assert sign == -1 and evidence > 5
    assert gradient_sign_evidence(fits[2:]) == (0, 0.0)
