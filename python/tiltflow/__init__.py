"""tiltflow: SerialEM cryo-ET sessions to aligned tilt series, tomograms and RELION 5 input."""

__version__ = "0.1.0"
