"""Tomogram reconstruction in torch: projector pair, filters, WBP, SIRT, binning (CPU or GPU)."""
