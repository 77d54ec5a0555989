"""Pick the torch device: CUDA when present, CPU otherwise (or what the user asks for)."""

from __future__ import annotations

from tiltflow import threads
from tiltflow.errors import TiltflowError


def get_device(preference: str = "auto"):
    """Return a ``torch.device`` for ``auto``, ``cpu``, ``cuda`` or ``cuda:N``."""
    import torch

    pref = (preference or "auto").lower()
    if pref == "auto":
        pref = "cuda" if torch.cuda.is_available() else "cpu"
    if pref.startswith("cuda") and not torch.cuda.is_available():
        raise TiltflowError(f"device {preference!r} requested but no CUDA GPU is available")
    if pref == "cpu":
        threads.set_torch_threads()
    return torch.device(pref)


def device_name(device) -> str:
    """A short human label for benchmark tables and logs."""
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"
