"""PLACEHOLDER: `tiltflow gain` is being built (see the issues)."""

import typer


def main(args: list[str] = typer.Argument(None)) -> None:
    """Not implemented yet."""
    raise typer.Exit(3)
