"""``tiltflow version``: versions of tiltflow, its main libraries and the external tool (for versions.yml)."""

from __future__ import annotations

import typer


def tool_version(backend: str) -> tuple[str, str] | None:
    """(program, version) of an external ``--backend`` (``None`` for ``builtin``), as the step finds it.

    Why: Nextflow's versions.yml should name the MotionCor/CTFFIND/AreTomo/IMOD build a task really ran.
    The version is what the step itself probes (``--version`` or the banner); ``unknown`` when it says nothing,
    ``not found`` when the program is not there (the step then fails with its own message).
    """
    from tiltflow.backends import toolrun
    from tiltflow.errors import ToolError

    try:
        if backend in ("motioncor2", "motioncor3"):
            from tiltflow.backends.motioncor import EXECUTABLES, VERSION_PATTERN

            names, env_vars = EXECUTABLES[backend]
            exe = toolrun.find_executable(None, names=names, env_vars=env_vars, tool=names[0])
            return names[0], toolrun.detect_version(exe, pattern=VERSION_PATTERN) or "unknown"
        if backend == "relion":
            from tiltflow.backends import relion

            names, env_vars = relion.EXECUTABLES
            exe = toolrun.find_executable(None, names=names, env_vars=env_vars, tool=names[0])
            return "RELION relion_run_motioncorr", relion.version(exe) or "unknown"
        if backend in ("ctffind4", "ctffind5"):
            from tiltflow.backends import ctffind

            exe = ctffind.find(None, int(backend[-1]))
            return "CTFFIND", ctffind.detect_version(exe) or "unknown"
        if backend in ("aretomo2", "aretomo3"):
            from tiltflow.backends import aretomo, imod

            name = "AreTomo3" if backend == "aretomo3" else "AreTomo2"
            exe = imod.find_executable(None, name, env_vars=("RELION_ARETOMO_EXECUTABLE",))
            found = aretomo.detect_version(exe)
            return name, (found.version if found and found.version else "unknown")
        if backend == "imod":
            from tiltflow.backends import imod

            imod.find_executable(None, "newstack")
            return "IMOD newstack", "unknown"  # IMOD programs have no version option; see $IMOD_DIR
    except ToolError:
        return backend, "not found"
    return None


def main(
    yaml_for: str = typer.Option("", "--yaml", help="Print a Nextflow versions.yml block for this process name."),
    tool: str = typer.Option("builtin", "--tool", help="Also the version of this external backend "
                             "(motioncor2/3, ctffind4/5, aretomo2/3, imod; builtin = none)."),
) -> None:
    """Print the versions of tiltflow and the libraries it computes with."""
    from importlib.metadata import PackageNotFoundError, version

    from tiltflow import __version__

    libs = {}
    for pkg in ("numpy", "torch", "mrcfile", "tifffile", "starfile"):
        try:
            libs[pkg] = version(pkg)
        except PackageNotFoundError:
            libs[pkg] = "absent"
    external = tool_version(tool)
    if external:
        libs[external[0]] = external[1]
    if yaml_for:
        typer.echo(f'"{yaml_for}":')
        typer.echo(f"    tiltflow: {__version__}")
        for k, v in libs.items():
            typer.echo(f'    "{k}": "{v}"')
        return
    typer.echo(f"tiltflow {__version__}")
    for k, v in libs.items():
        typer.echo(f"  {k} {v}")
