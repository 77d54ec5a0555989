"""Built-in CTF estimation in torch (CPU or GPU), following CTFFIND4's method.

Modules: ``model`` (CTF^2 in the fitted parametrisation), ``spectrum`` (Welch spectra, tilt correction),
``background`` (smooth-basis background removal), ``search`` (1-D defocus search), ``refine`` (2-D
astigmatism refinement), ``resolution`` (fit resolution), ``fit`` (the entry point), ``diagnostic``
(diagnostic MRC and PNG), ``ctffind_files`` (CTFFIND's text outputs), (test images: ``tiltflow.testing.ctf_micrograph``).

Library use: ``from tiltflow.ctffit import fit_defocus``; see :func:`tiltflow.ctffit.fit.fit_defocus`.
"""

from tiltflow.ctffit.fit import CtfFit, fit_defocus
from tiltflow.ctffit.model import Optics
from tiltflow.ctffit.spectrum import TileSpectra, tile_spectra

__all__ = ["CtfFit", "Optics", "TileSpectra", "fit_defocus", "tile_spectra"]
