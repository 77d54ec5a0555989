"""The built-in tilt-series aligner (AreTomo-like, in torch: runs on CUDA when present, CPU otherwise).

Stages, one module each: ``dark`` (dark/blank tilts), ``filters`` (binning, bandpass, taper),
``warp`` (resampling in the tilt-axis frame), ``xcorr`` (stretch cross-correlation + sub-pixel peaks),
``axis`` (tilt-axis refinement), ``projmatch`` (projection matching), ``offset`` (tilt-angle offset),
``gauge`` (fixing and removing the shift gauge), ``pipeline`` (the aligner returning a
:class:`tiltflow.alignment.TiltSeriesAlignment`).
"""
