"""``tiltflow reconstruct`` end to end on a small analytic series: files, geometry, STAR, errors."""

from __future__ import annotations

import numpy as np
import pytest

import builders
from builders import TILTS, TS_PX, corr, phantom_at
from builders import aligned_series as make_series
from builders import reconstruct_cli as _run
from tiltflow import star
from tiltflow.io.mrc import read_mrc, write_mrc

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_reconstruct_writes_tomogram_star_and_halves(tmp_path, monkeypatch):
    in_star = make_series(tmp_path, b=3, halves=True)
    assert _run(tmp_path, monkeypatch, in_star, "--outdir", "reconstruct", "--pixel-size", 20,
                "--thickness", 25) == 0
    out = star.read_tilt_series(tmp_path / "reconstruct/TS_01/TS_01.star")
    g = out.globals
    assert (g[star.TOMO_SIZE_X], g[star.TOMO_SIZE_Y], g[star.TOMO_SIZE_Z]) == (134, 128, 50)  # bin-1 px
    assert g[star.TOMOGRAM] == "reconstruct/TS_01/rec_TS_01.mrc"
    assert g[star.TOMOGRAM_HALF1] == "reconstruct/TS_01/rec_TS_01_half1.mrc"
    assert g[star.TOMOGRAM_HALF2] == "reconstruct/TS_01/rec_TS_01_half2.mrc"
    vol, px = read_mrc(tmp_path / g[star.TOMOGRAM])
    w = 34  # even box nearest 134 * 5 / 20
    assert vol.shape == (12, 32, w)  # z, y, x on disk: x fastest
    assert g[star.TOMO_BINNING] == pytest.approx(134 / w, abs=1e-5)
    assert px == pytest.approx(TS_PX * 134 / w, abs=1e-3)
    np.testing.assert_allclose(out.tilts[star.CTF_SCALE], np.cos(np.deg2rad(TILTS)), atol=1e-6)
    ph = phantom_at((134, 128, 50), vol.shape, 134 / w)
    r = corr(vol, ph)
    assert r > 0.8, r  # measured ~0.9: geometry exact through stack binning 3 and binning 3.94
    for key in (star.TOMOGRAM_HALF1, star.TOMOGRAM_HALF2):
        half, _ = read_mrc(tmp_path / g[key])
        assert half.shape == vol.shape and corr(half, ph) > 0.7
    assert not list((tmp_path / "reconstruct/TS_01").glob(".*part*"))


def test_wrong_shift_sign_in_star_is_clearly_worse(tmp_path, monkeypatch):
    in_star = make_series(tmp_path, b=1)
    ts = star.read_tilt_series(tmp_path / in_star)
    ts.tilts[star.X_SHIFT] *= -1
    ts.tilts[star.Y_SHIFT] *= -1
    star.write_tilt_series(ts, tmp_path / "flipped.star")
    rs = []
    for name, src in (("good", in_star), ("bad", "flipped.star")):
        assert _run(tmp_path, monkeypatch, src, "--outdir", name, "--pixel-size", 10, "--thickness", 25) == 0
        vol, _ = read_mrc(tmp_path / name / "TS_01" / "rec_TS_01.mrc")
        rs.append(corr(vol, phantom_at((134, 128, 50), vol.shape, 134 / vol.shape[2])))
    assert rs[0] > 0.8 and rs[1] < rs[0] - 0.2, rs  # measured 0.85 against 0.57


def test_slabs_and_binning(tmp_path, monkeypatch):
    in_star = make_series(tmp_path, b=1)
    for name, extra in (("one", ["--slab", 64]), ("slabs", ["--slab", 3]), ("bin2", ["--pixel-size", 20])):
        args = [in_star, "--outdir", name, "--thickness", 25, "--no-halves", *extra]
        if "--pixel-size" not in extra:
            args += ["--pixel-size", 10]
        assert _run(tmp_path, monkeypatch, *args) == 0
    one, _ = read_mrc(tmp_path / "one/TS_01/rec_TS_01.mrc")
    slabs, _ = read_mrc(tmp_path / "slabs/TS_01/rec_TS_01.mrc")
    bin2, px2 = read_mrc(tmp_path / "bin2/TS_01/rec_TS_01.mrc")
    np.testing.assert_allclose(slabs, one, atol=1e-5 * np.abs(one).max())
    assert one.shape == (26, 64, 68) and bin2.shape == (12, 32, 34)
    assert star.read_tilt_series(tmp_path / "bin2/TS_01/TS_01.star").globals[star.TOMO_BINNING] == pytest.approx(
        134 / 34, abs=1e-5)


def test_sirt_method(tmp_path, monkeypatch):
    in_star = make_series(tmp_path, b=2)
    assert _run(tmp_path, monkeypatch, in_star, "--outdir", "rec", "--pixel-size", 20, "--thickness", 25,
                "--method", "sirt", "--iterations", 5, "--slab", 5) == 0
    vol, _ = read_mrc(tmp_path / "rec/TS_01/rec_TS_01.mrc")
    assert corr(vol, phantom_at((134, 128, 50), vol.shape, 134 / vol.shape[2])) > 0.6  # measured ~0.7 (WBP 0.81)


def test_missing_stack_and_row_mismatch_are_one_line_errors(tmp_path, monkeypatch, capsys):
    in_star = make_series(tmp_path, b=1, rows=len(TILTS) - 2)
    assert _run(tmp_path, monkeypatch, in_star, "--outdir", "rec") == 2
    err = [x for x in capsys.readouterr().err.splitlines() if x.startswith("tiltflow: error")]
    assert len(err) == 1 and "31 sections" in err[0] and "29 tilts" in err[0]
    (tmp_path / "stack/TS_01/TS_01.mrc").unlink()
    assert _run(tmp_path, monkeypatch, in_star, "--outdir", "rec") == 2
    err = [x for x in capsys.readouterr().err.splitlines() if x.startswith("tiltflow: error")]
    assert len(err) == 1 and "stack not found" in err[0]
    assert not list((tmp_path / "rec/TS_01").glob("*.mrc")) and not (tmp_path / "rec/TS_01/TS_01.star").exists()
    assert _run(tmp_path, monkeypatch, in_star, "--outdir", "rec", "--method", "fbp") == 2


@pytest.mark.parametrize("b, px", [(3, 20.0), (2, 13.0)])
def test_single_blob_lands_at_its_bin1_position(tmp_path, monkeypatch, b, px):
    """Centres and binning offsets exact: voxel i is bin-1 position B*i - int(size/2) (RELION)."""
    mod = builders
    true = np.array([23.3, -17.6, 6.2])
    monkeypatch.setattr(mod, "POS", true[None])
    monkeypatch.setattr(mod, "SIG", np.array([4.0]))
    monkeypatch.setattr(mod, "AMP", np.array([1.0]))
    in_star = make_series(tmp_path, b=b)
    assert _run(tmp_path, monkeypatch, in_star, "--outdir", "rec", "--pixel-size", px, "--thickness", 25) == 0
    vol, _ = read_mrc(tmp_path / "rec/TS_01/rec_TS_01.mrc")
    peak = np.unravel_index(np.argmax(vol), vol.shape)
    sl = tuple(slice(max(0, k - 2), k + 3) for k in peak)
    w = np.clip(vol[sl], 0, None)
    idx = np.meshgrid(*[np.arange(s.start, s.stop) for s in sl], indexing="ij")
    zyx = [float((g * w).sum() / w.sum()) for g in idx]
    binning = 134 / vol.shape[2]
    found = np.array([binning * zyx[k] - (50, 128, 134)[k] // 2 for k in range(3)])[::-1]
    np.testing.assert_allclose(found, true, atol=0.75)  # measured within 0.3 bin-1 px


# --- CTF and exposure correction -------------------------------------------------------------------------
DEFOCUS = 60000.0  # A: the first zero at 1/34 A, inside the 1/20 A band of a 10 A tomogram


def _with_ctf(root, in_star, defocus=DEFOCUS):
    """Give every image of the series (stack, halves) the CTF of ``defocus`` and write rlnDefocusU/V/Angle.

    The CTF of ``ctfmodel`` (the simulator's); its sign convention is pinned against IMOD in
    test_ctfcorrect.py. One defocus per image: the strip-wise gradient is tested there too.
    """
    import torch

    from tiltflow.ctfmodel import ctf_2d

    ts = star.read_tilt_series(root / in_star)
    for key in ("tfStack", "tfStackEven", "tfStackOdd"):
        if key not in ts.globals:
            continue
        p = root / ts.globals[key]
        imgs, px = read_mrc(p)
        imgs = np.asarray(imgs, float)
        mean = imgs.mean(axis=(1, 2), keepdims=True)
        ctf = ctf_2d(imgs.shape[1:], px, defocus, defocus, 0.0, amplitude_contrast=0.1, rfft=True).double().numpy()
        out = np.fft.irfft2(np.fft.rfft2(imgs - mean) * -ctf, s=imgs.shape[1:]) + mean  # dense = bright here
        write_mrc(p, out.astype(np.float32), px)
    ts.tilts[star.DEFOCUS_U] = defocus
    ts.tilts[star.DEFOCUS_V] = defocus
    ts.tilts[star.DEFOCUS_ANGLE] = 0.0
    ts.globals[star.HAND] = 1
    star.write_tilt_series(ts, root / in_star)
    return torch


def _sharp_blobs(monkeypatch):
    mod = builders
    rng = np.random.default_rng(7)
    n = 60
    monkeypatch.setattr(mod, "POS", np.column_stack([rng.uniform(-50, 50, n), rng.uniform(-50, 50, n),
                                                    rng.uniform(-8, 8, n)]))
    monkeypatch.setattr(mod, "SIG", np.full(n, 1.6))  # 8 A: signal well beyond the first zero
    monkeypatch.setattr(mod, "AMP", rng.uniform(0.5, 1.5, n))


def _shell_corr(vol, ref, lo, hi, px):
    """Correlation of two volumes in the shell lo..hi (1/A): simulate.compare's FSC over one wide shell."""
    fa, fb = np.fft.rfftn(vol), np.fft.rfftn(ref)
    k = np.sqrt(sum(g ** 2 for g in np.meshgrid(*[np.fft.fftfreq(n, px) for n in vol.shape[:-1]],
                                                np.fft.rfftfreq(vol.shape[-1], px), indexing="ij")))
    m = (k >= lo) & (k < hi)
    return float(np.real(np.vdot(fa[m], fb[m])) / np.sqrt(np.vdot(fa[m], fa[m]).real * np.vdot(fb[m], fb[m]).real))


def _ctf_zero(n, defocus, cs=2.7, q=0.1):
    """Frequency (1/A) of the n-th zero of ``-sqrt(1-Q^2) sin(chi) - Q cos(chi)`` at 300 kV, written out here.

    chi = pi lambda D k^2 - pi/2 Cs lambda^3 k^4 (IMOD ctfphaseflip's CTF) reaches ``n pi - atan(Q/sqrt(1-Q^2))``.
    """
    lam = 12.2643 / np.sqrt(300e3 * (1 + 0.978466e-6 * 300e3))
    a, b = 0.5 * np.pi * cs * 1e7 * lam**3, np.pi * lam * defocus
    target = n * np.pi - np.arctan2(q, np.sqrt(1 - q * q))
    return float(np.sqrt((b - np.sqrt(b * b - 4 * a * target)) / (2 * a)))


def test_phase_flipping_restores_shells_beyond_the_first_zero(tmp_path, monkeypatch):
    """Noise-free blobs with 8 A detail, every image at 6 um: between the first and second CTF zero the
    uncorrected images carry the negated signal, flipping restores it; below the first zero the flip is +1.

    Thresholds from that argument, not from a run: in the reversed band (kept 5 % from each zero, more than
    the +-0.06 um defocus change across a 670 A image tilted 60 deg) the uncorrected tomogram must
    anti-correlate with the phantom, the flipped one correlate, by the same amount (flipping multiplies
    the band by -1); compared with the same images without a CTF, flipping leaves the |CTF| weighting, and
    |sin| over half a period keeps (2/pi)/sqrt(1/2) = 0.90 of a correlation that is uniform across the band
    (0.75 asserted, for the interpolation near the zeros). Below 0.9 x the first zero the flip multiplies by
    +1, so nothing may change beyond the blending's rounding.
    """
    _sharp_blobs(monkeypatch)
    in_star = make_series(tmp_path, b=1, halves=True)
    k1, k2 = _ctf_zero(1, DEFOCUS), _ctf_zero(2, DEFOCUS)
    assert 1 / 35 < k1 < 1 / 33 and 1 / 25 < k2 < 1 / 24 < 0.05  # the band lies inside the 10 A tomogram's Nyquist

    def bands(mode):
        vol, px = read_mrc(tmp_path / mode / "TS_01" / "rec_TS_01.mrc")
        ph = phantom_at((134, 128, 50), vol.shape, 134 / vol.shape[2])
        return _shell_corr(vol, ph, 1.05 * k1, 0.95 * k2, px), _shell_corr(vol, ph, 0.0, 0.9 * k1, px)

    args = ("--pixel-size", 10, "--thickness", 25, "--no-dose-weighting")
    assert _run(tmp_path, monkeypatch, in_star, "--outdir", "clean", *args, "--ctf-correction", "none") == 0
    clean = bands("clean")  # the same images before they get a CTF
    _with_ctf(tmp_path, in_star)
    res = {}
    for mode in ("none", "phaseflip", "wiener", "3d"):
        assert _run(tmp_path, monkeypatch, in_star, "--outdir", mode, *args, "--ctf-correction", mode) == 0
        res[mode] = bands(mode)
        out = star.read_tilt_series(tmp_path / mode / "TS_01" / "TS_01.star")
        assert out.globals["tfCtfCorrection"] == mode and int(out.globals["tfDoseWeighting"]) == 0
        assert (tmp_path / mode / "TS_01" / "rec_TS_01_half1.mrc").is_file()
        if mode != "none":
            d, h, w = read_mrc(tmp_path / mode / "TS_01" / "rec_TS_01.mrc")[0].shape
            xy, _ = read_mrc(tmp_path / out.globals["tfTomogramUncorrectedXY"])
            xz, _ = read_mrc(tmp_path / out.globals["tfTomogramUncorrectedXZ"])
            assert xy.shape == (h, w) and xz.shape == (d, w)
    assert clean[0] > 0.5, clean  # the band holds signal to restore
    assert res["none"][0] < -0.75 * clean[0], res
    for m in ("phaseflip", "3d"):
        assert res[m][0] > 0.75 * clean[0] and abs(res[m][0] + res["none"][0]) < 0.05, (m, res)
        assert abs(res[m][1] - res["none"][1]) < 0.01, (m, res)
    # Wiener: phase flipping plus an amplitude gain that is largest near the zeros, so only the sign is argued
    assert res["wiener"][0] > 0.5 * clean[0], res


def test_dose_weighting_is_recorded_and_without_defocus_correction_is_an_error(tmp_path, monkeypatch, capsys):
    in_star = make_series(tmp_path, b=1)
    assert _run(tmp_path, monkeypatch, in_star, "--outdir", "rec", "--ctf-correction", "phaseflip") == 2
    err = [x for x in capsys.readouterr().err.splitlines() if x.startswith("tiltflow: error")]
    assert len(err) == 1 and "rlnDefocusU" in err[0] and "TS_01" in err[0]
    assert not (tmp_path / "rec/TS_01/TS_01.star").exists()
    assert _run(tmp_path, monkeypatch, in_star, "--outdir", "rec", "--pixel-size", 10, "--thickness", 25) == 0
    out = star.read_tilt_series(tmp_path / "rec/TS_01/TS_01.star")
    assert out.globals["tfCtfCorrection"] == "none" and int(out.globals["tfDoseWeighting"]) == 1
    half = out.tilts["tfDoseHalfWeightAngst"].to_numpy(float)
    pre = out.tilts[star.PRE_EXPOSURE].to_numpy(float)
    # weight 0.5 where 0.245 k^-1.665 + 2.81 = N / (2 ln 2): solved by hand for N = 90 e/A^2
    k90 = ((90 / (2 * np.log(2)) - 2.81) / 0.245) ** (-1 / 1.665)
    assert half[np.argmax(pre)] == pytest.approx(1 / k90, abs=0.01) and half[pre == 0] == 0
    assert "tfTomogramUncorrectedXY" not in out.globals
    assert _run(tmp_path, monkeypatch, in_star, "--outdir", "bad", "--ctf-correction", "4d") == 2
    assert _run(tmp_path, monkeypatch, in_star, "--outdir", "bad", "--ctf-correction", "3d", "--method", "sirt") == 2


def test_the_tomogram_and_its_halves_do_not_depend_on_the_thread_count(tmp_path, monkeypatch):
    """Two threads reconstruct the halves side by side (one thread each inside): the same voxels as one thread."""
    in_star = make_series(tmp_path, b=3, halves=True)
    vols = {}
    for n in ("1", "2"):
        monkeypatch.setenv("TILTFLOW_THREADS", n)
        assert _run(tmp_path, monkeypatch, in_star, "--outdir", f"rec{n}", "--pixel-size", 20, "--thickness", 25) == 0
        g = star.read_tilt_series(tmp_path / f"rec{n}/TS_01/TS_01.star").globals
        vols[n] = [read_mrc(tmp_path / g[k])[0] for k in (star.TOMOGRAM, star.TOMOGRAM_HALF1, star.TOMOGRAM_HALF2)]
    for a, b in zip(vols["1"], vols["2"], strict=True):
        assert np.array_equal(a, b)
    assert not np.array_equal(vols["1"][1], vols["1"][2])  # the halves are two reconstructions, not one twice
