"""The run's settings: Nextflow's parameter names, so one params file drives both ``nextflow run`` and
``tiltflow run``.

Why one table: a facility writes ``params.yaml`` once (``mc_throw: 1``, ``ctf_backend: ctffind5``) and
passes it to either runner; a misspelt key must stop both. :class:`RunParams` mirrors ``params { }`` in
``nextflow.config`` (a test keeps them equal); keys that only matter on a cluster (containers, resource
caps) are accepted and ignored here. Precedence: defaults < params file < command-line options.
"""

from __future__ import annotations

import json
import math
import typing
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from tiltflow.errors import TiltflowError


@dataclass(frozen=True)
class RunParams:
    """Every Nextflow parameter with the default of ``nextflow.config``."""

    # input / output
    input: str | None = None
    frames: str | None = None
    outdir: str = "results"
    simulate: str | None = None
    publish_dir_mode: str = "copy"
    # --watch (Nextflow only: the FOLLOW task's options; `tiltflow watch` has its own)
    watch: bool = False
    watch_tilts: int | None = None
    watch_series_idle: float = 60
    watch_until: float = 600
    watch_stop_file: str | None = None
    # gain reference
    gain: str | None = None
    gain_rotate: int = 0
    gain_flip: int = 0
    gain_serialem_rf: int | None = None
    # instrument and acquisition
    kv: float | None = None  # the mdoc's Voltage, else 300 (the import step decides)
    cs: float = 2.7
    amp_contrast: float = 0.1
    tilt_axis: float | None = None
    dose_per_tilt: float | None = None
    hand: int = -1
    # step backends
    motioncor_backend: str = "builtin"
    ctf_backend: str = "builtin"
    stack_backend: str = "builtin"
    align_backend: str = "builtin"
    # motion correction
    mc_throw: int = 0
    mc_trunc: int = 0
    mc_bin: float = 1
    mc_patches: str | None = None
    even_odd: bool = True
    mc_skip_bad_movies: bool = False
    # CTF estimation
    ctf_res_min: float = 30
    ctf_res_max: float = 5
    ctf_defocus_range: float = 2.0
    # tilt exclusion
    exclude_tilts: str | None = None
    keep_tilts: str | None = None
    min_ctf_resolution: float = 20
    # stack, alignment, reconstruction
    stack_bin: int = 1
    thickness: float = 300
    dark_tol: float = 0.7
    rec_pixel_size: float = 10
    rec_method: str = "wbp"
    rec_ctf_correction: str = "phaseflip"
    rec_dose_weighting: bool = True
    # compute
    device: str = "auto"
    max_gpus: int = 1
    # containers and cluster resources: Nextflow only (accepted so that one file serves both)
    tiltflow_image: str = "ghcr.io/tiltflow/tiltflow:0.1.0"
    motioncor_image: str | None = None
    ctffind_image: str = "ghcr.io/tiltflow/ctffind:5.0"
    imod_image: str = "ghcr.io/tiltflow/imod:5.1"
    aretomo2_image: str = "ghcr.io/tiltflow/aretomo2:1.1.3"
    aretomo3_image: str = "ghcr.io/tiltflow/aretomo3:2.3.1"
    max_cpus: int = 16
    max_memory: str = "128.GB"
    max_time: str = "48.h"
    slurm_options: str | None = None

    def with_values(self, values: dict[str, Any], origin: str = "options") -> RunParams:
        """A copy with ``values`` (Nextflow keys) set; ``None`` values are ignored (= not given)."""
        known = {f.name for f in fields(self)}
        for key in values:
            if key not in known:
                raise TiltflowError(f"unknown parameter '{key}' (not a Nextflow parameter of tiltflow)", origin)
        given = {k: _coerce(k, v, origin) for k, v in values.items() if v is not None}
        for key, value in given.items():
            _check_range(key, value, origin)
        return replace(self, **given)

    def to_dict(self) -> dict[str, Any]:
        """The parameters as a plain dict (for records and config files)."""
        return asdict(self)


def _kind(key: str) -> type | None:
    """The type a key's value must have (bool, int or float; None for text): from RunParams' own field types,
    as YAML may deliver strings and JSON floats for ints.
    """
    hint = _HINTS[key]
    allowed = typing.get_args(hint) or (hint,)
    return next((t for t in (bool, int, float) if t in allowed), None)


_HINTS = typing.get_type_hints(RunParams)


def _coerce(key: str, value: Any, origin: str) -> Any:
    kind = _kind(key)
    try:
        if kind is bool:
            if isinstance(value, str):
                if value.lower() not in ("true", "false"):
                    raise ValueError(value)
                return value.lower() == "true"
            return bool(value)
        if kind is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if kind is float:
            return float(value)
    except (TypeError, ValueError):
        raise TiltflowError(f"parameter '{key}': {value!r} is not a valid value", origin) from None
    if key in ("mc_patches", "exclude_tilts", "keep_tilts") and isinstance(value, (list, tuple)):
        return " ".join(map(str, value)) if key == "mc_patches" else ",".join(map(str, value))
    return str(value) if not isinstance(value, (int, float, bool)) else value


#: key -> (lowest, highest, lowest allowed itself, what the value is): checked before any work starts, so a
#: typo fails in a second with the option the user typed, not minutes later at the step that uses it
_RANGES: dict[str, tuple[float, float, bool, str]] = {
    "kv": (10, 1000, True, "an accelerating voltage in kV (e.g. 300)"),
    "cs": (0, 100, True, "the spherical aberration in mm (e.g. 2.7)"),
    "amp_contrast": (0, 1, True, "a fraction in [0, 1) (e.g. 0.1)"),
    "dose_per_tilt": (0, math.inf, False, "a dose in e/A^2 above 0"),
    "mc_throw": (0, math.inf, True, "a number of frames, 0 or more"),
    "mc_trunc": (0, math.inf, True, "a number of frames, 0 or more"),
    "mc_bin": (1, math.inf, True, "a binning factor, 1 or more"),
    "ctf_res_min": (0, math.inf, False, "a resolution in A above 0"),
    "ctf_res_max": (0, math.inf, False, "a resolution in A above 0"),
    "ctf_defocus_range": (0, math.inf, False, "a defocus range in um above 0"),
    "stack_bin": (1, math.inf, True, "a binning factor, 1 or more"),
    "thickness": (0, math.inf, False, "a thickness in nm above 0"),
    "dark_tol": (0, 1, True, "a fraction in [0, 1]"),
    "rec_pixel_size": (0, math.inf, False, "a pixel size in A above 0"),
    "max_gpus": (1, math.inf, True, "1 or more"),
    "max_cpus": (1, math.inf, True, "1 or more"),
}


def option_name(key: str, origin: str) -> str:
    """How the user wrote ``key``: ``--rec-pixel-size`` on the command line, ``rec_pixel_size`` in a file."""
    return f"--{key.replace('_', '-')}" if origin == "command line" else f"'{key}' in {origin}"


def _check_range(key: str, value: Any, origin: str) -> None:
    if key not in _RANGES:
        return
    low, high, low_ok, what = _RANGES[key]
    upper_ok = key != "amp_contrast"
    fine = math.isfinite(value) and (value >= low if low_ok else value > low) and (
        value <= high if upper_ok else value < high)
    if not fine:
        raise TiltflowError(f"{option_name(key, origin)} {value:g}: expected {what}")


def read_params_file(path: str | Path) -> dict[str, Any]:
    """The mapping in a Nextflow ``-params-file`` (YAML or JSON); keys are checked by :meth:`with_values`."""
    path = Path(path)
    if not path.is_file():
        raise TiltflowError("params file not found", path)
    text = path.read_text()
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:  # yaml and json raise several types
        raise TiltflowError(f"not a readable params file ({' '.join(str(exc).split())[:160]})", path) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise TiltflowError("a params file must be a mapping of parameter names to values", path)
    # Nextflow accepts kebab-case on its command line; in files the names are snake_case
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def load_params(params_file: str | Path | None, options: dict[str, Any]) -> RunParams:
    """Defaults, then the params file, then the command-line ``options`` (Nextflow keys, None = not given)."""
    params = RunParams()
    if params_file is not None:
        params = params.with_values(read_params_file(params_file), str(params_file))
    params = params.with_values(options, "command line")
    check_params(params)
    return params


BACKENDS = {
    "motioncor_backend": ("builtin", "motioncor2", "motioncor3", "relion"),
    "ctf_backend": ("builtin", "ctffind4", "ctffind5"),
    "stack_backend": ("builtin", "imod"),
    "align_backend": ("builtin", "aretomo2", "aretomo3"),
}


def check_params(p: RunParams) -> None:
    """Stop before any work on values no step could use, and on external tools that are not installed."""
    for key, allowed in BACKENDS.items():
        value = getattr(p, key)
        if value not in allowed:
            raise TiltflowError(f"--{key.replace('_', '-')} {value!r}: choose one of {', '.join(allowed)}")
        if value != "builtin":
            _require_tool(key, value)
    if p.motioncor_backend == "relion" and p.even_odd:
        _require_relion_even_odd()
    if p.gain_rotate not in (0, 1, 2, 3):
        raise TiltflowError(f"gain_rotate must be 0-3, got {p.gain_rotate}")
    if p.gain_flip not in (0, 1, 2):
        raise TiltflowError(f"gain_flip must be 0-2, got {p.gain_flip}")
    if p.hand not in (-1, 1):
        raise TiltflowError(f"hand must be -1 or 1, got {p.hand}")
    from tiltflow.tomo.ctfcorrect import MODES

    if p.rec_ctf_correction not in MODES:
        raise TiltflowError(f"rec_ctf_correction must be one of {', '.join(MODES)}, got {p.rec_ctf_correction!r}")
    if not (p.device in ("auto", "cpu", "cuda") or p.device.startswith("cuda:")):
        raise TiltflowError(f"device must be auto, cpu, cuda or cuda:N, got {p.device!r}")
    if p.ctf_res_min <= p.ctf_res_max:
        raise TiltflowError(f"ctf_res_min ({p.ctf_res_min:g} A) must be a lower resolution (a larger number) "
                            f"than ctf_res_max ({p.ctf_res_max:g} A)")
    from tiltflow.runner.options import parse_patches
    from tiltflow.steps.reconstruct import METHODS

    parse_patches(p.mc_patches)
    if p.rec_method not in METHODS:
        raise TiltflowError(f"--rec-method {p.rec_method!r}: choose one of {', '.join(METHODS)}")


def _require_relion_even_odd() -> None:
    """RELION writes even/odd sums only from version 5 on: say so before any movie is read."""
    from tiltflow.backends import relion, toolrun
    from tiltflow.backends.tools import TOOLS

    exe = toolrun.find_executable(TOOLS["relion"])
    if not relion.offers_even_odd(exe):
        raise TiltflowError(f"--motioncor-backend relion: this RELION ({relion.version(exe) or 'version unknown'}) "
                            "cannot write even/odd sums (--even_odd_split came with RELION 5); set even_odd false")


def _require_tool(key: str, backend: str) -> None:
    """The step's own lookup (:data:`tiltflow.backends.tools.TOOLS`), so that the runner and the step agree."""
    from tiltflow.backends import toolrun
    from tiltflow.backends.tools import TOOLS
    from tiltflow.errors import ToolError

    try:
        toolrun.find_executable(TOOLS[backend])
    except ToolError as exc:
        raise TiltflowError(f"--{key.replace('_', '-')} {backend}: {exc} (or use the builtin backend)") from None
