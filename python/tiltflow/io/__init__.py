"""Image input/output: MRC files, movies (TIFF, MRC, EER) and gain references."""
