"""Defocus handedness (RELION's rlnTomoHand): which side of a tilted image is further from focus.

Why it matters: RELION models the defocus of a point in the tomogram from its depth, and the sign of that
depth-to-defocus mapping is not recorded anywhere; with the wrong sign every sub-tomogram gets the CTF of
its mirror depth and high-resolution averages suffer (WarpTools ``ts_defocus_hand``, AreTomo3 ``dfHand``).

How (CTFFIND5/ctfplotter idea, as WarpTools does): on a tilted image the defocus changes linearly
across the tilt axis. Per tilt the tile spectra are grouped into strips parallel to the tilt axis, the
defocus of each strip is fitted (:func:`tiltflow.ctffit.fit.fit_defocus`) and regressed on the strip's
signed distance ``q_x`` from the axis. RELION's model (``Tomogram::getCtf``; the simulator's
``ground_truth.json`` "hand") gives ``defocus = defocus_0 - hand * tan(tilt) * q_x`` with
``q = Rz(-tilt_axis) p``, so the slope is ``-hand * tan(tilt)``. Over all tilts the least-squares scale
``h = -sum(slope * tan) / sum(tan^2)`` is about +1 or -1; its sign is the hand, its standard error and
the fraction of tilts agreeing say how sure we are.

A hand of -1 with the nominal tilt axis can also mean the axis is 180 degrees off (AreTomo3's reading of
dfHand = -1); both are fixed the same way for RELION.

When the measurement is *confident* (the exclude step then writes it to rlnTomoHand; otherwise it keeps the
imported value and warns; RELION itself never changes rlnTomoHand): at least ``min_tilts`` = 3 tilts
measured, ``z = |h| / se(h)`` >= ``min_z`` = 6 and a share of agreeing tilts (weighted by ``|tan(tilt)|``)
>= ``min_agreement`` = 0.9. Measured on simulated series (``bench/bench_handedness.py``; 512^2 at 4 A,
tilts +-30/+-60, both hands, 2-6 seeds each): series with clear rings (0.3-3x specimen contrast, 1-40 e/A^2 per
tilt; 16 series) gave z 9.0-66 with every tilt agreeing and |h| 0.98-1.05; noise-dominated series
(1 e/A^2 at 0.5x contrast, 0.5 e/A^2 at 0.3x; 22 series) gave z 0.1-4.4 and 38-100% agreement, and the
wrong sign 5 times: four at z 0.2-0.8, one at z 3.7 with 87% agreeing (h -3.6), which the former limits
(z 3, 70%) wrote as the hand. In between (1 e/A^2 at 0.8x; 8 series) z was 1.9-42, always of the right sign. z 6 is about
the two-sided 99.5% point of Student's t with 3 degrees of freedom (4 tilts), so a series of pure noise
passes it by chance about 0.5% of the time; 0.9 lets no tilt of a 4-tilt series disagree (one 30-degree
tilt against leaves 87%), and in longer series only low tilts, whose gradient is smallest. Those numbers are
for 4 strips; re-run with 3 strips (2026-12-02, the first 35 of the 46 series: every clear and in-between series
and 11 of the 22 weak ones) no series gave a wrong sign at all: the 16 clear ones and 2 in-between ones were
confident (z 8.4-53, all tilts agreeing), the other 17 not (z 0.0-5.4). On the simulated
demo session (41 tilts at 3 e/A^2, dose-symmetric, 1024^2 at 3 A) every kept tilt from 15 degrees up is measured
(27): h +0.70, z 7.3, all 27 agreeing, hand +1 as simulated; the 12 highest alone (the former default, the last
and most damaged exposures) gave z 3.3 with 76% agreeing.

Why not the CTF step's own sign evidence (``tfCtfGradientSign``, the better of the two tilt-corrected 1-D
fits of each whole image): tried on the demo, its per-tilt log-likelihood ratios scatter +-8 around a sum of
+7 (56% of the evidence agreeing), so the difference of two maximised scores is too noisy to call a hand from;
the strips' defocus difference across the axis is a direct measurement of the gradient.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

log = logging.getLogger("tiltflow.qc.handedness")

#: tilts closer to zero than this carry too little gradient to be useful (deg)
MIN_TILT = 15.0


@dataclass(frozen=True)
class HandOptions:
    """Fitting band and effort: up to ``max_tilts`` kept tilts are measured (the highest first), ``strips``
    per tilt.

    Why every kept tilt by default, and 3 strips: in a dose-symmetric series the highest tilts are the
    last exposures, whose rings radiation damage has faded, so measuring only the 12 highest (as before)
    threw away the best-measured tilts; 3 strips give each strip a third of the tiles and so a steadier
    defocus than 4 (simulated demo session: 12 tilts x 4 strips z 3.3, 76% agreeing; 27 x 4 z 5.9, 85%;
    27 x 3 z 7.3, 100%).
    """

    res_min: float = 50.0  # A
    res_max: float = 12.0  # A
    strips: int = 3
    max_tilts: int = 60
    min_tilt: float = MIN_TILT
    min_z: float = 6.0  # |h| / standard error needed to call the hand (see the module docstring)
    min_agreement: float = 0.9  # fraction of tilts (weighted by |tan|) with the majority sign
    min_tilts: int = 3  # measured tilts needed to call the hand


@dataclass
class TiltGradient:
    """One tilt: strip positions ``q_x`` (A), fitted defoci (A), and the slope (A of defocus per A)."""

    index: int
    tilt_angle: float
    positions: list[float]
    defoci: list[float]
    scores: list[float]
    slope: float

    @property
    def hand_vote(self) -> float:
        """The scale this tilt alone gives (about +-1): ``-slope / tan(tilt)``."""
        return -self.slope / math.tan(math.radians(self.tilt_angle))


@dataclass
class HandResult:
    """Series verdict: ``hand`` (+1/-1 when confident, else 0), ``scale`` (LSQ h), ``z``, ``agreement``."""

    hand: int
    scale: float
    z: float
    agreement: float
    tilts: list[TiltGradient] = field(default_factory=list)
    note: str = ""

    @property
    def determined(self) -> bool:
        """Confident enough to be written to rlnTomoHand."""
        return self.hand != 0

    @property
    def measured(self) -> int:
        """The sign the measurement points to, confident or not (0 when nothing was measured)."""
        return int(np.sign(self.scale)) if math.isfinite(self.scale) else 0

    def describe(self) -> str:
        """One line for the log: the verdict and the numbers behind it."""
        if not self.tilts:
            return f"handedness not determined: {self.note or 'no usable tilts'}"
        word = f"hand {self.hand:+d}" if self.hand else f"measured hand {self.measured:+d}, not confident"
        return (f"{word}: defocus gradient scale {self.scale:+.2f} (expected +-1), z {self.z:.1f}, "
                f"{100 * self.agreement:.0f}% of {len(self.tilts)} tilts agree" + (f"; {self.note}" if self.note else ""))


def strip_positions(centres_xy: np.ndarray, tilt_axis: float) -> np.ndarray:
    """Signed distance (A) of points (x, y) from the tilt axis: ``q_x`` of ``Rz(-tilt_axis) p``."""
    a = math.radians(tilt_axis)
    c = np.asarray(centres_xy, dtype=np.float64).reshape(-1, 2)
    return c[:, 0] * math.cos(a) + c[:, 1] * math.sin(a)


def tilt_gradient(image: np.ndarray, pixel_size: float, tilt_angle: float, tilt_axis: float, defocus: float,
                  optics, options: HandOptions | None = None, index: int = -1, device=None) -> TiltGradient | None:
    """Fit the defocus in strips across the tilt axis of one micrograph; None if it is too small."""
    import torch

    from tiltflow.ctffit.fit import fit_defocus
    from tiltflow.ctffit.spectrum import TileSpectra, fitting_pixel_size, tile_spectra
    from tiltflow.errors import TiltflowError

    o = options or HandOptions()
    img = np.asarray(image, dtype=np.float32)
    h, w = img.shape
    fit_px = fitting_pixel_size(pixel_size, o.res_max)
    native = max(64, min(h, w) // 4)
    box = int(max(64, min(256, native * pixel_size / fit_px)))
    try:
        tiles = tile_spectra(img, pixel_size, box, fit_px, device=device)
    except TiltflowError:
        return None
    q = strip_positions(tiles.centres.cpu().numpy(), tilt_axis)
    n_strips = min(o.strips, max(2, len(np.unique(np.round(q, 1)))))
    if n_strips < 2:
        return None
    edges = np.quantile(q, np.linspace(0, 1, n_strips + 1))
    span = float(q.max() - q.min())
    search = max(2000.0, 1.5 * abs(math.tan(math.radians(tilt_angle))) * span)
    pos, dfs, scores = [], [], []
    for j in range(n_strips):
        sel = (q >= edges[j] - 1e-6) & (q <= edges[j + 1] + 1e-6) if j == n_strips - 1 else \
            (q >= edges[j] - 1e-6) & (q < edges[j + 1])
        if sel.sum() < 1:
            continue
        m = torch.from_numpy(sel).to(tiles.power.device)
        sub = TileSpectra(tiles.power[m], tiles.centres[m], tiles.pixel_size, tiles.native_pixel_size)
        try:
            fit = fit_defocus(sub, search_centre=defocus, search_range=search, optics=optics, res_min=o.res_min,
                              res_max=o.res_max, fit_astigmatism=False, device=device)
        except TiltflowError:
            continue
        pos.append(float(q[sel].mean()))
        dfs.append(float(fit.defocus))
        scores.append(float(fit.score))
    if len(pos) < 2:
        return None
    slope = float(np.polyfit(pos, dfs, 1)[0])
    return TiltGradient(index, float(tilt_angle), pos, dfs, scores, slope)


def combine(gradients: Sequence[TiltGradient], options: HandOptions | None = None) -> HandResult:
    """The series' hand from per-tilt slopes (least squares on tan(tilt), with a confidence)."""
    o = options or HandOptions()
    g = [t for t in gradients if t is not None and abs(t.tilt_angle) >= o.min_tilt and math.isfinite(t.slope)]
    if len(g) < 2:
        return HandResult(0, float("nan"), 0.0, 0.0, list(g), note="fewer than 2 tilts could be measured")
    tan = np.array([math.tan(math.radians(t.tilt_angle)) for t in g])
    s = np.array([t.slope for t in g])
    scale = float(-(s * tan).sum() / (tan * tan).sum())
    resid = s + scale * tan
    dof = max(1, len(g) - 1)
    se = math.sqrt(float((resid**2).sum()) / dof / float((tan * tan).sum())) if len(g) > 1 else float("inf")
    z = abs(scale) / se if se > 0 else float("inf")
    votes = np.sign(-s * tan)
    weight = np.abs(tan)
    agreement = float(weight[votes == np.sign(scale)].sum() / weight.sum()) if scale else 0.0
    short = [f"z {z:.1f} < {o.min_z:g}"] if z < o.min_z else []
    if agreement < o.min_agreement:
        short.append(f"{100 * agreement:.0f}% < {100 * o.min_agreement:.0f}% of tilts agree")
    if len(g) < o.min_tilts:
        short.append(f"{len(g)} < {o.min_tilts} tilts measured")
    hand = 0 if short or not scale else int(np.sign(scale))
    note = ""
    if hand and not 0.4 <= abs(scale) <= 2.5:
        note = f"gradient {abs(scale):.2f}x the expected size: check the tilt angles and the tilt axis"
    if not hand:
        note = "the defocus gradient is too weak or inconsistent to call (" + ", ".join(short or ["no gradient"]) + ")"
    return HandResult(hand, scale, float(z), agreement, list(g), note)


def choose_tilts(angles: Sequence[float], usable: Sequence[bool], options: HandOptions | None = None) -> list[int]:
    """Row positions of the tilts to measure: usable, |tilt| >= min_tilt, the highest first, both signs."""
    o = options or HandOptions()
    cand = [i for i, (a, u) in enumerate(zip(angles, usable, strict=True)) if u and abs(a) >= o.min_tilt]
    pos = sorted((i for i in cand if angles[i] > 0), key=lambda i: -abs(angles[i]))
    neg = sorted((i for i in cand if angles[i] < 0), key=lambda i: -abs(angles[i]))
    out: list[int] = []
    while (pos or neg) and len(out) < o.max_tilts:
        for lst in (pos, neg):
            if lst and len(out) < o.max_tilts:
                out.append(lst.pop(0))
    return sorted(out)


@dataclass
class SessionHand:
    """Session verdict: the hands found per series and whether they agree."""

    hands: dict[str, int]
    consensus: int
    disagree: list[str]

    @property
    def consistent(self) -> bool:
        """Whether every series with a determined hand agrees."""
        return not self.disagree

    def warning(self) -> str | None:
        """The warning to give when the series disagree, naming them; None when they agree."""
        if self.consistent:
            return None
        if not self.consensus:
            return ("defocus handedness differs between tilt series (no majority): "
                    + ", ".join(f"{n} ({self.hands[n]:+d})" for n in self.disagree))
        return (f"defocus handedness differs between tilt series: consensus {self.consensus:+d}, "
                f"but {', '.join(f'{n} ({self.hands[n]:+d})' for n in self.disagree)}")


def session_hand(hands: dict[str, int]) -> SessionHand:
    """Majority hand over the series with a determined hand (0 = undetermined, ignored); who disagrees."""
    known = {n: h for n, h in hands.items() if h in (1, -1)}
    total = sum(known.values())
    consensus = int(np.sign(total)) if total else (next(iter(known.values())) if known else 0)
    if total == 0 and known:  # a tie: every series is in the minority
        return SessionHand(dict(hands), 0, sorted(known))
    return SessionHand(dict(hands), consensus, sorted(n for n, h in known.items() if h != consensus))
