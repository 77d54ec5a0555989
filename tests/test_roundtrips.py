"""Round trips and identities over generated values (hypothesis): STAR, ``.aln``, ``.xf``/``.tlt``, the CTF
parameter conversion and the projection geometry.

Each property compares with something independent of the code under test: the values that went in, a
formula from the field (Rodrigues' rotation, CTFFIND's defocus along an azimuth, IMOD's meaning of an
``.xf`` line), never a second run of tiltflow.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tiltflow import geometry, star, startext
from tiltflow.alignment import TiltSeriesAlignment
from tiltflow.ctffit.ctffind_files import CtffindRow, read_summary, write_summary
from tiltflow.ctffit.model import from_relion, normalise_angle, to_relion
from tiltflow.io.aln import DARK_REASON, read_aln, write_aln
from tiltflow.io.imodfiles import (
    alignment_to_xf,
    read_tilt_angles,
    read_xf,
    write_tilt_angles,
    write_xf,
    xf_to_alignment,
)

SETTINGS = settings(max_examples=60, deadline=None)

finite = st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False)
angles = st.floats(-720.0, 720.0, allow_nan=False)


# --- STAR: a tilt series written and read back -----------------------------------------------------------
def _star_text_value(s: str) -> bool:
    """A string that STAR can carry and that reads back as a string (RELION types a token by its look:
    ``1``, ``nan``, ``True`` come back as numbers or booleans, in RELION as here).
    """
    if startext.unrepresentable(s) is not None or s in ("True", "False") or s.strip(" ") != s.strip():
        return False
    try:
        float(s)
    except ValueError:
        return True
    return False


#: any characters, or (half of the strings) mostly the ones STAR's quoting is about: space, both quotes, '#', '_'
texts = st.one_of(st.text(st.sampled_from(list(" \"'#_;$[]aé€α.")), min_size=1, max_size=12),
                  st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12),
                  ).filter(_star_text_value)
names = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-", min_size=1, max_size=10).filter(
    lambda s: not s[0].isdigit() and s[0] not in "_-")


@st.composite
def tilt_series(draw) -> star.TiltSeriesStar:
    n = draw(st.integers(1, 6))
    tilts = pd.DataFrame({
        star.NOMINAL_TILT: draw(st.lists(finite, min_size=n, max_size=n)),
        star.DEFOCUS_U: draw(st.lists(st.one_of(finite, st.just(math.nan)), min_size=n, max_size=n)),
        "tfAcquisitionIndex": draw(st.lists(st.integers(-10**9, 10**9), min_size=n, max_size=n)),
        star.MICROGRAPH: draw(st.lists(texts, min_size=n, max_size=n)),
        "tfExcluded": draw(st.lists(st.booleans(), min_size=n, max_size=n)),
    })
    g = {star.TS_PIXEL_SIZE: draw(st.floats(0.1, 100.0)), star.HAND: draw(st.sampled_from([-1, 1])),
         star.OPTICS_GROUP: draw(texts), star.TS_STAR_FILE: draw(texts), star.VOLTAGE: draw(finite)}
    return star.TiltSeriesStar(draw(names), g, tilts)


@SETTINGS
@given(tilt_series())
def test_star_tilt_series_round_trip(ts):
    with tempfile.TemporaryDirectory() as tmp:
        back = star.read_tilt_series(star.write_tilt_series(ts, Path(tmp) / "x.star"))
    assert back.name == ts.name
    assert back.globals.keys() == {*ts.globals, star.TOMO_NAME}
    for key, value in ts.globals.items():
        if isinstance(value, float):
            assert math.isclose(back.globals[key], value, abs_tol=1e-6), key
        else:
            assert back.globals[key] == value and type(back.globals[key]) is type(value), key
    assert list(back.tilts.columns) == list(ts.tilts.columns)
    for col in (star.NOMINAL_TILT, star.DEFOCUS_U):  # written with %.6f
        np.testing.assert_allclose(back.tilts[col].to_numpy(float), ts.tilts[col].to_numpy(float), atol=1e-6)
    assert back.tilts["tfAcquisitionIndex"].tolist() == ts.tilts["tfAcquisitionIndex"].tolist()
    assert back.tilts[star.MICROGRAPH].tolist() == ts.tilts[star.MICROGRAPH].tolist()
    assert back.tilts["tfExcluded"].tolist() == ts.tilts["tfExcluded"].tolist()


@SETTINGS
@given(st.lists(texts, min_size=1, max_size=8))
def test_star_tokens_split_a_rendered_line_back_into_its_values(values):
    """The tokeniser (RELION's nextTokenInSTAR rules) inverts the quoting of any representable value."""
    line = "\t".join(str(startext.quote(v)) for v in values)
    assert startext.tokens(line) == values


# --- AreTomo .aln ------------------------------------------------------------------------------------------
@st.composite
def alignments(draw) -> tuple[TiltSeriesAlignment, int]:
    n_stack = draw(st.integers(2, 12))
    dark = draw(st.sets(st.integers(0, n_stack - 1), max_size=n_stack - 1))
    n = n_stack - len(dark)
    ali = TiltSeriesAlignment(
        y_tilt=np.array(draw(st.lists(st.floats(-70, 70), min_size=n, max_size=n))),
        z_rot=np.array(draw(st.lists(st.floats(-180, 180), min_size=n, max_size=n))),
        shifts_px=np.array(draw(st.lists(st.tuples(st.floats(-500, 500), st.floats(-500, 500)), min_size=n,
                                         max_size=n))).reshape(n, 2),
        pixel_size=draw(st.floats(0.5, 20.0)),
        excluded={i: "dark" for i in sorted(dark)},
    )
    return ali, n_stack


@SETTINGS
@given(alignments(), st.sampled_from([0, 1]))
def test_aln_write_read_round_trip(case, sec_base):
    """AreTomo2's layout (0-based SEC) and AreTomo3 >= 2.0.7's (1-based): the base is detected on reading."""
    ali, n_stack = case
    with tempfile.TemporaryDirectory() as tmp:
        path = write_aln(Path(tmp) / "x.aln", ali, (512, 480, n_stack), sec_base=sec_base)
        aln = read_aln(path, n_stack=n_stack)
        back = aln.to_alignment(ali.pixel_size)
    assert aln.sec_base == sec_base and aln.raw_size == (512, 480, n_stack)
    assert back.excluded == dict.fromkeys(ali.excluded, DARK_REASON)
    np.testing.assert_allclose(back.y_tilt, ali.y_tilt, atol=0.005 + 1e-9)  # %8.2f
    np.testing.assert_allclose(back.z_rot, ali.z_rot, atol=5e-5 + 1e-9)  # %9.4f
    np.testing.assert_allclose(back.shifts_px, ali.shifts_px, atol=5e-4 + 1e-9)  # %9.3f
    assert back.pixel_size == ali.pixel_size


# --- IMOD .xf / .tlt -------------------------------------------------------------------------------------
@st.composite
def imod_cases(draw):
    n = draw(st.integers(1, 8))
    z = np.array(draw(st.lists(st.floats(-177, 177).filter(lambda v: abs(v) > 3), min_size=n, max_size=n)))
    shifts = np.array(draw(st.lists(st.tuples(st.floats(-300, 300), st.floats(-300, 300)), min_size=n,
                                    max_size=n))).reshape(n, 2)
    tilts = np.array(draw(st.lists(st.floats(-70, 70), min_size=n, max_size=n)))
    noise = np.array(draw(st.lists(st.floats(-2, 2), min_size=n, max_size=n)))  # the nominal axis is close
    return TiltSeriesAlignment(y_tilt=tilts, z_rot=z, shifts_px=shifts, pixel_size=4.0), z + noise


@SETTINGS
@given(imod_cases())
def test_xf_means_what_imod_means_and_reads_back(case):
    ali, nominal = case
    xf = alignment_to_xf(ali)
    a, d = xf[:, :4].reshape(-1, 2, 2), xf[:, 4:]
    # IMOD: aligned = A raw + d. The tilt axis, at Rz(ZRot) applied to +y in the raw image (geometry.py),
    # becomes vertical, and the tomogram centre, projected to the shift s, goes to the image centre.
    z = np.deg2rad(ali.z_rot)
    axis = np.stack([-np.sin(z), np.cos(z)], axis=1)
    np.testing.assert_allclose(np.einsum("nij,nj->ni", a, axis), np.tile([0.0, 1.0], (len(z), 1)), atol=1e-12)
    np.testing.assert_allclose(np.einsum("nij,nj->ni", a, ali.shifts_px) + d, 0.0, atol=1e-9)
    with tempfile.TemporaryDirectory() as tmp:
        xf_back = read_xf(write_xf(Path(tmp) / "x.xf", xf))
        tlt_back = read_tilt_angles(write_tilt_angles(Path(tmp) / "x.tlt", ali.y_tilt))
    np.testing.assert_allclose(xf_back, xf, atol=5e-4 + 1e-9)
    np.testing.assert_allclose(tlt_back, ali.y_tilt, atol=0.005 + 1e-9)
    back = xf_to_alignment(xf_back, tlt_back, ali.pixel_size, nominal)
    np.testing.assert_allclose(back.z_rot, ali.z_rot, atol=0.02)  # acos of a 7-decimal cosine
    np.testing.assert_allclose(back.shifts_px, ali.shifts_px, atol=2e-3)
    np.testing.assert_allclose(back.y_tilt, ali.y_tilt, atol=0.005 + 1e-9)


# --- CTF: (mean, ax, ay) <-> RELION's (U, V, angle) ---------------------------------------------------------
def _ctffind_defocus(u: float, v: float, angle_deg: float, azimuth_deg: float) -> float:
    """Defocus along an azimuth (CTFFIND4, ctf.cpp DefocusGivenAzimuth): the ellipse with U along ``angle``."""
    return 0.5 * (u + v + (u - v) * math.cos(2 * math.radians(azimuth_deg - angle_deg)))


@SETTINGS
@given(st.floats(5e3, 8e4), st.floats(-5e3, 5e3), st.floats(-5e3, 5e3), st.floats(-180, 180))
def test_to_relion_is_the_same_ellipse(mean, ax, ay, azimuth):
    u, v, angle = to_relion(mean, ax, ay)
    assert u >= v and -90.0 < angle <= 90.0
    # the fitted parametrisation: defocus(phi) = mean + ax cos 2phi + ay sin 2phi (ctffit/model.py)
    phi = math.radians(azimuth)
    fitted = mean + ax * math.cos(2 * phi) + ay * math.sin(2 * phi)
    assert math.isclose(_ctffind_defocus(u, v, angle, azimuth), fitted, rel_tol=1e-9, abs_tol=1e-6)
    back = from_relion(u, v, angle)
    np.testing.assert_allclose(back, (mean, ax, ay), rtol=1e-9, atol=1e-6)


@SETTINGS
@given(st.floats(5e3, 8e4), st.floats(1.0, 5e3), angles)
def test_from_relion_then_to_relion_keeps_u_v_and_the_folded_angle(v, astig, angle):
    u = v + astig
    u2, v2, angle2 = to_relion(*from_relion(u, v, angle))
    assert math.isclose(u2, u, rel_tol=1e-9) and math.isclose(v2, v, rel_tol=1e-9)
    folded = normalise_angle(angle)
    assert abs((angle2 - folded + 90.0) % 180.0 - 90.0) < 1e-6  # azimuths have period 180 deg
    assert abs((folded - angle + 90.0) % 180.0 - 90.0) < 1e-9 and -90.0 < folded <= 90.0


ctffind_rows = st.lists(st.builds(
    CtffindRow, st.integers(1, 999), st.floats(1e3, 1e5), st.floats(1e3, 1e5), st.floats(-90, 90),
    st.floats(0, math.pi), st.floats(-1, 1), st.floats(0, 100)), min_size=1, max_size=5)


@SETTINGS
@given(ctffind_rows, st.sampled_from(["CTFFIND version 4.1.14", "CTFFIND version 5.0.2"]))
def test_ctffind_summary_round_trip(rows, program):
    with tempfile.TemporaryDirectory() as tmp:
        path = write_summary(Path(tmp) / "x.txt", program=program, input_file="a b.mrc", pixel_size=1.35,
                             voltage=300, cs=2.7, amplitude_contrast=0.07, box=512, res_min=30, res_max=5,
                             defocus_min=0.5, defocus_max=5, rows=rows)
        back = read_summary(path)
    assert back.version == program.split()[-1]
    assert len(back.rows) == len(rows)
    for got, want in zip(back.rows, rows, strict=True):
        assert got.micrograph == want.micrograph and got.tilt_axis is None
        np.testing.assert_allclose(
            [got.defocus_1, got.defocus_2, got.azimuth, got.phase_shift, got.cross_correlation, got.fit_resolution],
            [want.defocus_1, want.defocus_2, want.azimuth, want.phase_shift, want.cross_correlation,
             want.fit_resolution], atol=5e-7 + 1e-9)  # %f


# --- geometry: rotations and projection ---------------------------------------------------------------------
def _rodrigues(axis: np.ndarray, degrees: float) -> np.ndarray:
    """Right-handed rotation by ``degrees`` about unit ``axis`` (Rodrigues' formula)."""
    k = np.asarray(axis, float)
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    a = math.radians(degrees)
    return np.eye(3) + math.sin(a) * kx + (1 - math.cos(a)) * kx @ kx


ROTATIONS = {0: geometry.rotation_x, 1: geometry.rotation_y, 2: geometry.rotation_z}


@SETTINGS
@given(st.sampled_from([0, 1, 2]), angles, angles)
def test_rotations_are_right_handed_compose_and_invert(axis, a, b):
    rot = ROTATIONS[axis]
    np.testing.assert_allclose(rot(a), _rodrigues(np.eye(3)[axis], a), atol=1e-12)
    np.testing.assert_allclose(rot(a) @ rot(b), rot(a + b), atol=1e-9)
    np.testing.assert_allclose(rot(a).T, rot(-a), atol=1e-12)
    np.testing.assert_allclose(rot(a) @ rot(a).T, np.eye(3), atol=1e-12)


points = st.lists(st.tuples(finite, finite, finite), min_size=1, max_size=5).map(np.array)


@SETTINGS
@given(points, st.floats(-30, 30), st.floats(-70, 70), angles, st.tuples(finite, finite))
def test_projecting_and_back_projecting_a_point(pts, x_tilt, y_tilt, z_rot, shift):
    """Projection is p = Rz Ry Rx X + shift (RELION's Tomogram::setProjectionMatrix): with the depth row, the point comes
    back through the transpose; a point on the tilt axis (x_tilt 0) projects to the same place at every tilt.
    """
    r = _rodrigues([0, 0, 1], z_rot) @ _rodrigues([0, 1, 0], y_tilt) @ _rodrigues([1, 0, 0], x_tilt)
    np.testing.assert_allclose(geometry.projection_rotations(x_tilt, y_tilt, z_rot), r, atol=1e-12)
    uv = geometry.project_points(pts, [x_tilt], [y_tilt], [z_rot], [shift])[0]
    depth = pts @ r[2]
    back = np.column_stack([uv - np.asarray(shift), depth]) @ r  # R^T applied to each row
    np.testing.assert_allclose(back, pts, atol=1e-6 * (1 + np.abs(pts).max()))
    on_axis = np.column_stack([np.zeros(len(pts)), pts[:, 1], np.zeros(len(pts))])
    seen = geometry.project_points(on_axis, [0.0, 0.0], [y_tilt, -y_tilt / 2], [z_rot, z_rot])
    np.testing.assert_allclose(seen[0], seen[1], atol=1e-9 * (1 + np.abs(pts).max()))
    assume(np.abs(pts[:, 1]).max() > 1)
    direction = seen[0][np.argmax(np.abs(pts[:, 1]))]
    zr = math.radians(z_rot)  # the axis is +y rotated by ZRot: (-sin, cos)
    assert abs(direction[0] * math.cos(zr) + direction[1] * math.sin(zr)) < 1e-9 * (1 + np.abs(pts).max())
