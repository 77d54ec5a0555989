"""Nextflow parameters -> each step's ``<Step>Options``: the one place that says which key feeds which option.

It mirrors ``modules/local/<step>/main.nf`` line by line (``--throw ${params.mc_throw}`` -> ``throw``), so
``tiltflow run`` and ``nextflow run`` give a step the same settings. A key a step does not know is an
error here, not a silently dropped setting.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

from tiltflow.errors import TiltflowError
from tiltflow.runner.params import RunParams
from tiltflow.steps import registry


def parse_patches(text: str | None) -> tuple[int, int] | None:
    """``mc_patches`` (``'X Y'`` or ``'X,Y'``) as two integers, or None when not set."""
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


#: RunParams key -> the (step, Options field) pairs it sets; the one table of which key feeds which option
#: (``tests/test_option_defaults.py`` checks each key's default against the field's)
PARAM_OPTIONS: dict[str, tuple[tuple[str, str], ...]] = {
    "gain_rotate": (("gain", "rotate"),), "gain_flip": (("gain", "flip"),), "gain_serialem_rf": (("gain", "serialem_rf"),),
    "kv": (("import", "kv"),), "cs": (("import", "cs"),), "amp_contrast": (("import", "amp_contrast"),),
    "hand": (("import", "hand"),), "tilt_axis": (("import", "tilt_axis"), ("align", "tilt_axis")),
    "dose_per_tilt": (("import", "dose_per_tilt"),),
    "motioncor_backend": (("motioncor", "backend"),), "mc_throw": (("motioncor", "throw"),),
    "mc_trunc": (("motioncor", "trunc"),), "mc_bin": (("motioncor", "bin"),), "mc_patches": (("motioncor", "patches"),),
    "even_odd": (("motioncor", "even_odd"), ("reconstruct", "halves")),
    "ctf_backend": (("ctf", "backend"),), "ctf_res_min": (("ctf", "res_min"),), "ctf_res_max": (("ctf", "res_max"),),
    "ctf_defocus_range": (("ctf", "defocus_range"),),
    "exclude_tilts": (("exclude", "exclude_tilts"),), "keep_tilts": (("exclude", "keep_tilts"),),
    "min_ctf_resolution": (("exclude", "min_ctf_resolution"),),
    "stack_backend": (("stack", "backend"),), "stack_bin": (("stack", "bin"),),
    "align_backend": (("align", "backend"),), "thickness": (("align", "thickness"), ("reconstruct", "thickness")),
    "dark_tol": (("align", "dark_tol"),),
    "rec_pixel_size": (("reconstruct", "pixel_size"),), "rec_method": (("reconstruct", "method"),),
    "rec_ctf_correction": (("reconstruct", "ctf_correction"),),
    "rec_dose_weighting": (("reconstruct", "dose_weighting"),),
    "device": tuple((s, "device") for s in ("motioncor", "ctf", "exclude", "align", "reconstruct")),
    "mc_skip_bad_movies": (("motioncor", "skip_bad_movies"),),
}


def param_values(step: str, p: RunParams, has_gain: bool = False, series: str | None = None) -> dict[str, Any]:
    """Option values of one step, named as its ``Options`` fields (= the CLI options of ``tiltflow <step>``)."""
    out = {f: getattr(p, key) for key, targets in PARAM_OPTIONS.items() for s, f in targets if s == step}
    if step == "gain" and p.gain_serialem_rf is not None:  # as modules/local/gain: r/f replaces --rotate/--flip
        out = {"serialem_rf": p.gain_serialem_rf}
    if step == "import":
        out["frames"] = frames_dir(p)
    if step == "motioncor":
        frames = frames_dir(p)
        out.update(gain=Path("gain/gain.mrc") if has_gain else None, frames=Path(frames) if frames else None,
                   patches=parse_patches(p.mc_patches))
    if step == "exclude":  # each series gets only its own entries (see tilts_for)
        out.update(exclude_tilts=tilts_for(p.exclude_tilts, series), keep_tilts=tilts_for(p.keep_tilts, series))
    return out


def step_options(step: str, p: RunParams, has_gain: bool, series: str | None = None) -> Any:
    """The step's ``Options`` the CLI would build for ``p`` (defaults for everything Nextflow does not set)."""
    cls = registry.options_class(step)
    names = {f.name for f in fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in param_values(step, p, has_gain, series).items():
        if value is None:
            continue  # not set: the step's default, as the Nextflow module then leaves the option out
        if key not in names:
            raise TiltflowError(f"{cls.__module__}.Options has no option '{key}'")
        kwargs[key] = value
    options = cls(**kwargs)
    options.validate()
    return options


def check_overrides(p: RunParams, names: list[str]) -> None:
    """Every series named in ``exclude_tilts``/``keep_tilts`` exists (checked once, after import)."""
    from tiltflow.qc.exclusion import parse_tilt_list, validate_overrides

    for key in ("exclude_tilts", "keep_tilts"):
        option = f"--{key.replace('_', '-')}"
        validate_overrides(parse_tilt_list(getattr(p, key), option), names, option)
