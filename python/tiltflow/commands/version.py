"""``tiltflow version``: versions of tiltflow, its main libraries and the external tool (for versions.yml)."""

from __future__ import annotations

import typer


def tool_version(backend: str) -> tuple[str, str] | None:
    """(program, version) of an external ``--backend`` (``None`` for ``builtin``), as the step finds it.

    Why: Nextflow's versions.yml should name the MotionCor/CTFFIND/AreTomo/IMOD build a task really ran.
    The version is what the step itself probes (``--version`` or the banner); ``unknown`` when it says nothing,
    ``not found`` when the program is not there (the step then fails with its own message).
    """
    from tiltflow.backends import aretomo, toolrun
    from tiltflow.backends.tools import TOOLS
    from tiltflow.errors import ToolError

    if backend not in TOOLS:
        return None
    tool = TOOLS[backend]
    try:
        exe = toolrun.find_executable(tool)
        if backend in ("aretomo2", "aretomo3"):
            found = aretomo.detect_version(exe)
            return tool.name, (found.version if found and found.version else "unknown")
        label = {"relion": "RELION relion_run_motioncorr", "imod": "IMOD newstack"}.get(backend, tool.name)
        return label, toolrun.detect_version(exe, tool) or "unknown"  # IMOD: no version option (see $IMOD_DIR)
    except ToolError:
        return backend, "not found"


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
