"""CTF^2 in the parametrisation the fit optimises: mean defocus and a linear astigmatism vector.

Why not call :func:`tiltflow.ctfmodel.ctf_2d` directly: the refinement differentiates the CTF with autograd
with respect to defocus, astigmatism and phase shift, and ``ctfmodel`` takes those as Python floats.
This is the same formula (checked against ``ctfmodel`` in the tests), written as

    defocus(phi) = mean + ax * cos(2 phi) + ay * sin(2 phi)

which is ``rlnDefocusU/V/Angle`` with ``U - V = 2 |(ax, ay)|`` and ``angle = atan2(ay, ax) / 2``. The pair
(ax, ay) has no wrap-around and no singularity at zero astigmatism, so gradient steps behave.
"""

from __future__ import annotations

import math

from tiltflow.star import Optics  # one optics model (DEFAULT_OPTICS there); re-exported: ctffit.Optics


def chi(k2, defocus, optics: Optics, phase_shift=0.0):
    """Phase aberration (rad) at squared frequency ``k2`` (1/A^2) for ``defocus`` (A, underfocus > 0).

    ``phase_shift`` in radians. Works on tensors or floats, and is differentiable in every argument.
    """
    lam = optics.wavelength
    cs_a = optics.cs * 1e7
    return math.pi * lam * defocus * k2 - 0.5 * math.pi * cs_a * lam**3 * k2 * k2 + phase_shift


def ctf_squared(k2, cos2, sin2, defocus, ax, ay, optics: Optics, phase_shift=0.0):
    """CTF^2 at pixels with squared frequency ``k2`` and azimuth terms ``cos2 = cos 2phi, sin2 = sin 2phi``.

    ``defocus``/``ax``/``ay`` in A, ``phase_shift`` in rad; tensors broadcast (a leading batch dimension of
    candidates works).
    """
    import torch

    dz = defocus + ax * cos2 + ay * sin2
    return torch.sin(chi(k2, dz, optics, phase_shift) + optics.amplitude_phase) ** 2


def equiphase_k2(k2, dz, mean, optics: Optics):
    """The squared frequency at which defocus ``mean`` has the phase that defocus ``dz`` has at ``k2``.

    Used to stretch spectra onto a common defocus: astigmatism (``dz`` varies with azimuth) and tilted
    images (``dz`` varies across the image). Solves the quadratic in ``k2`` of :func:`chi` exactly.
    """
    import torch

    lam = optics.wavelength
    cs_a = optics.cs * 1e7
    c = chi(k2, dz, optics)  # without the constant terms: they cancel on both sides
    a = 0.5 * math.pi * cs_a * lam**3
    b = math.pi * lam * mean
    if isinstance(b, torch.Tensor) or isinstance(c, torch.Tensor):
        disc = torch.clamp(b * b - 4 * a * c, min=0.0)
        return 2 * c / (b + torch.sqrt(disc))
    return 2 * c / (b + math.sqrt(max(0.0, b * b - 4 * a * c)))


def dose_envelope(k, pre_exposure: float, voltage: float = 300.0):
    """Expected relative power of the Thon-ring signal at frequency ``k`` (1/A) after ``pre_exposure`` e/A^2.

    Radiation damage fades high-resolution signal first (Grant & Grigorieff 2015, critical exposure
    Ne(k) = 0.245 k^-1.665 + 2.81 e/A^2 at 300 kV, 0.8x at 200 kV); the power falls as exp(-N / Ne).
    Weighting the fit by it keeps frequencies that hold no more signal from adding noise to the score,
    the smooth version of RELION's dose-dependent maximum resolution.
    """
    import torch

    scale = 0.8 if voltage < 250 else 1.0
    kk = torch.as_tensor(k).clamp(min=1e-4)
    ne = scale * (0.245 * kk.pow(-1.665) + 2.81)
    return torch.exp(-max(pre_exposure, 0.0) / ne)


def to_relion(defocus: float, ax: float, ay: float) -> tuple[float, float, float]:
    """(mean, ax, ay) -> (rlnDefocusU, rlnDefocusV, rlnDefocusAngle) with U >= V, angle in (-90, 90]."""
    half = math.hypot(ax, ay)
    angle = math.degrees(0.5 * math.atan2(ay, ax)) if half > 0 else 0.0
    return defocus + half, defocus - half, normalise_angle(angle)


def from_relion(defocus_u: float, defocus_v: float, angle_deg: float) -> tuple[float, float, float]:
    """(U, V, angle) -> (mean, ax, ay)."""
    half = 0.5 * (defocus_u - defocus_v)
    a = math.radians(2 * angle_deg)
    return 0.5 * (defocus_u + defocus_v), half * math.cos(a), half * math.sin(a)


def normalise_angle(angle_deg: float) -> float:
    """Astigmatism azimuth folded into (-90, 90] (it has period 180 deg), as CTFFIND reports it."""
    a = math.fmod(angle_deg, 180.0)
    if a <= -90.0:
        a += 180.0
    elif a > 90.0:
        a -= 180.0
    return a


def angle_difference(a_deg: float, b_deg: float) -> float:
    """Smallest absolute difference between two astigmatism azimuths (period 180 deg), in degrees."""
    d = math.fmod(abs(a_deg - b_deg), 180.0)
    return min(d, 180.0 - d)
