"""``tiltflow version``: versions of tiltflow and its main libraries (for versions.yml)."""

from __future__ import annotations

import typer


def main(
    yaml_for: str = typer.Option("", "--yaml", help="Print a Nextflow versions.yml block for this process name."),
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
    if yaml_for:
        typer.echo(f'"{yaml_for}":')
        typer.echo(f"    tiltflow: {__version__}")
        for k, v in libs.items():
            typer.echo(f"    {k}: {v}")
        return
    typer.echo(f"tiltflow {__version__}")
    for k, v in libs.items():
        typer.echo(f"  {k} {v}")
