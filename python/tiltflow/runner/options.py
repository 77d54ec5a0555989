"""Nextflow parameters -> each step's ``<Step>Options``: the one place that says which key feeds which option.

It mirrors ``modules/local/<step>/main.nf`` line by line (``--throw ${params.mc_throw}`` -> ``throw``), so
``tiltflow run`` and ``nextflow run`` give a step the same settings. A key a step does not know is an
error here, not a silently dropped setting.
"""

from __future__ import annotations

import importlib
from dataclasses import fields
from pathlib import Path
from typing import Any

from tiltflow.errors import TiltflowError
from tiltflow.runner.params import RunParams


def parse_patches(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    parts = str(text).replace(",", " ").split()
    if len(parts) != 2 or not all(s.isdigit() for s in parts):
        raise TiltflowError(f"mc_patches must be two integers 'X Y', got {text!r}")
    return int(parts[0]), int(parts[1])


def frames_dir(p: RunParams) -> str | None:
    """Where the movies are: ``frames``, else the session folder (``input``), else the mdoc's folder."""
    if p.frames:
        return str(Path(p.frames).resolve())
    if p.input:
        src = Path(p.input).resolve()
        return str(src if src.is_dir() else src.parent)
    return None


def step_function(step: str) -> str:
    """``module:function`` taking ``(in_star, step_dir, options)`` and returning the written STAR path."""
    module = importlib.import_module(f"tiltflow.steps.{step}")
    name = "run_from_star" if hasattr(module, "run_from_star") else "run"
    return f"tiltflow.steps.{step}:{name}"


def tilts_for(text: str | None, series: str | None) -> str | None:
    """The entries of an ``--exclude-tilts``/``--keep-tilts`` list that name ``series`` (None: all).

    The exclude step ignores other series' entries, so its result is the same; giving each series only its
    own means that adding an exclusion for TS_02 re-runs TS_02 and leaves TS_01's records valid.
    """
    if not text or series is None:
        return text
    import re

    mine = [part for part in re.split(r"[;\s]+", text.strip()) if part.rpartition(":")[0] == series]
    return ";".join(mine) or None


def _values(step: str, p: RunParams, has_gain: bool, series: str | None = None) -> dict[str, Any]:
    """Option values per step, named after the CLI options of ``tiltflow <step>`` (dashes -> underscores)."""
    if step == "motioncor":
        frames = frames_dir(p)
        return {"gain": Path("gain/gain.mrc") if has_gain else None, "frames": Path(frames) if frames else None,
                "backend": p.motioncor_backend, "throw": p.mc_throw,
                "trunc": p.mc_trunc, "bin": p.mc_bin, "patches": parse_patches(p.mc_patches), "even_odd": p.even_odd,
                "device": p.device, "skip_bad_movies": p.mc_skip_bad_movies}
    if step == "ctf":
        return {"backend": p.ctf_backend, "res_min": p.ctf_res_min, "res_max": p.ctf_res_max,
                "defocus_range": p.ctf_defocus_range, "device": p.device}
    if step == "exclude":
        from tiltflow.qc.exclusion import Thresholds

        # --min-ctf-resolution: the CLI's 0 = off
        thresholds = Thresholds(min_ctf_resolution=p.min_ctf_resolution if p.min_ctf_resolution > 0 else None)
        return {"exclude_tilts": tilts_for(p.exclude_tilts, series), "keep_tilts": tilts_for(p.keep_tilts, series),
                "thresholds": thresholds, "device": p.device}
    if step == "stack":
        return {"backend": p.stack_backend, "bin": p.stack_bin}
    if step == "align":
        return {"backend": p.align_backend, "thickness": p.thickness, "dark_tol": p.dark_tol,
                "tilt_axis": p.tilt_axis, "device": p.device}
    if step == "reconstruct":
        return {"pixel_size": p.rec_pixel_size, "thickness": p.thickness, "method": p.rec_method,
                "halves": p.even_odd, "device": p.device, "ctf_correction": p.rec_ctf_correction,
                "dose_weighting": p.rec_dose_weighting}
    raise KeyError(step)


#: CLI option name -> the field of the step's Options dataclass where the names differ
_ALIASES: dict[str, tuple[str, ...]] = {
    "bin": ("binning", "bin_factor"),  # stack, motioncor
    "thickness": ("thickness_nm",),  # align, reconstruct
    "frames": ("frames_dir",),  # motioncor
}


def options_class(step: str) -> type:
    """The step's ``<Step>Options`` dataclass (``steps/<step>.py``)."""
    try:
        module = importlib.import_module(f"tiltflow.steps.{step}")
    except ModuleNotFoundError as exc:
        if exc.name == f"tiltflow.steps.{step}":
            raise TiltflowError(f"step '{step}' is not available in this tiltflow installation") from None
        raise
    candidates = [v for k, v in vars(module).items() if k.lower() == f"{step}options" and isinstance(v, type)]
    if not candidates:
        raise TiltflowError(f"step '{step}' has no {step.capitalize()}Options class (tiltflow.steps.{step})")
    return candidates[0]


def step_options(step: str, p: RunParams, has_gain: bool, series: str | None = None) -> Any:
    """The ``<Step>Options`` the CLI would build for ``p`` (defaults for everything Nextflow does not set)."""
    cls = options_class(step)
    names = {f.name for f in fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in _values(step, p, has_gain, series).items():
        if value is None:
            continue  # not set: the step's default, as the Nextflow module then leaves the option out
        field = next((a for a in _ALIASES.get(key, (key,)) if a in names), None)
        if field is None:
            raise TiltflowError(f"tiltflow.steps.{step}.{cls.__name__} has no option for '{key}'")
        kwargs[field] = value
    return cls(**kwargs)


def check_overrides(p: RunParams, names: list[str]) -> None:
    """Every series named in ``exclude_tilts``/``keep_tilts`` exists (checked once, after import)."""
    from tiltflow.qc.exclusion import parse_tilt_list, validate_overrides

    for key in ("exclude_tilts", "keep_tilts"):
        option = f"--{key.replace('_', '-')}"
        validate_overrides(parse_tilt_list(getattr(p, key), option), names, option)


def report_target() -> str | None:
    """``module:function`` of the report step, or None while it is not part of this installation."""
    for module, name in (("tiltflow.qc.report", "write_report"), ("tiltflow.qc.report", "run"),
                         ("tiltflow.steps.report", "run")):
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError:
            continue
        if hasattr(mod, name):
            return f"{module}:{name}"
    return None
