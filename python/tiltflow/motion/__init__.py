"""Built-in beam-induced motion correction (the ``builtin`` backend of ``tiltflow motioncor``), in torch.

Why our own implementation and not ``torch-motion-correction``: measured on the same synthetic movies
(docs dependencies.md 3.1) its optimiser does not converge from zero (2.9 px off), its global estimate
finds integer peaks only, and ``correct_motion_fast`` applies Angstrom shifts as pixels. What MotionCor2 and
RELION's own implementation do is small enough to own and test, and runs on CPU and GPU alike:

* :mod:`~tiltflow.motion.estimate` - iterative cross-correlation of every frame (or frame group) against the
  sum of all the others (so a frame's own noise never correlates with itself), B-factor weighted, on a
  Fourier-cropped copy of the movie, with a sub-pixel Gaussian fit of the smooth correlation peak. Because
  every iteration re-correlates the already shifted frames, the residual peak converges to the origin,
  where the 3-point fit is unbiased; the result is exact to ~0.01 px on noise-free data.
* :mod:`~tiltflow.motion.trajectory` - the trajectory in RELION's convention, a smoothing fit whose
  strength is chosen by generalised cross-validation, and RELION's accumulated-motion statistics.
* :mod:`~tiltflow.motion.local` - optional patch alignment on the globally aligned movie and RELION's
  third-order polynomial motion model (a smooth field in space and time, also readable by RELION).
* :mod:`~tiltflow.motion.apply` - Fourier-shift summation (exact sub-pixel shifts), the local field by
  bicubic resampling, dose weighting (:mod:`~tiltflow.motion.doseweight`), Fourier binning, even/odd sums.
* :mod:`~tiltflow.motion.spectrum` - the amplitude-spectrum thumbnail (RELION's ``_PS.mrc``).
* :mod:`~tiltflow.motion.correct` - one movie from frames to sums and trajectory.
"""
