"""``tiltflow report``: option parsing only; the work is in ``tiltflow.qc.report``."""

from __future__ import annotations

from pathlib import Path

import typer


def main(
    out: Path = typer.Argument(..., help="Results folder (OUT of `tiltflow run`, or Nextflow's --outdir)."),
    output: Path = typer.Option(None, "--output", help="HTML file to write (default OUT/report/report.html)."),
) -> None:
    """Write the session report: one self-contained HTML page with every series, plus its PNGs.

    Reads whatever steps exist under OUT (import ... reconstruct, relion/); missing steps are noted.
    """
    from tiltflow.qc.report import write_report

    typer.echo(str(write_report(out, output.resolve() if output else None)))
