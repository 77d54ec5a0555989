"""The local runner behind ``tiltflow run``: the Nextflow pipeline's steps and layout on one machine.

Modules: ``params`` (settings with Nextflow's keys), ``options`` (keys -> each step's Options), ``plan``
(what each step is called with), ``resume`` (per-step records), ``execute`` (steps in worker processes),
``progress`` (live bars), ``summary`` (the end table), ``pipeline`` (the order and the process pool).
"""

from tiltflow.runner.params import RunParams, load_params
from tiltflow.runner.pipeline import RunResult, run_pipeline

__all__ = ["RunParams", "RunResult", "load_params", "run_pipeline"]
