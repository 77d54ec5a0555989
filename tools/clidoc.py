#!/usr/bin/env python3
"""Write docs/cli.md from the CLI itself, so the documented options are the ones that exist.

    .venv/bin/python tools/clidoc.py          # rewrite docs/cli.md
    .venv/bin/python tools/clidoc.py --check  # exit 1 when docs/cli.md is out of date (used by the tests)
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "python"))

HEADER = """# tiltflow command line

Generated from the CLI by `tools/clidoc.py`; `tiltflow <command> --help` says the same with more words.
Every per-series step runs as `tiltflow <step> IN.star --outdir <stepdir> [options]` from the project root and
writes `<stepdir>/<name>/<name>.star`, its files, `console.log` and `error.log` in `<stepdir>/<name>/`.
The Nextflow modules (`modules/local/*/main.nf`) call exactly these commands; `tests/test_nextflow.py` checks it.

"""


def _is_argument(p) -> bool:
    return type(p).__name__.endswith("Argument")


def render() -> str:
    import typer

    from tiltflow.cli import app

    group = typer.main.get_command(app)
    out = [HEADER]
    for name, cmd in group.commands.items():
        summary = (cmd.help or "").strip().split("\n\n")[0].replace("\n", " ")
        args = " ".join((p.name or "").upper() for p in cmd.params if _is_argument(p))
        out.append(f"## `tiltflow {name}{' ' + args if args else ''}`\n\n{summary}\n\n")
        rows = []
        for p in cmd.params:
            if _is_argument(p) or p.name == "help":
                continue
            names = " / ".join(f"`{o}`" for o in (*p.opts, *p.secondary_opts))
            help_text = " ".join((getattr(p, "help", None) or "").split()).replace("|", "\\|")
            default = getattr(p, "default", None)
            if default not in (None, False, "", ()) and not callable(default):
                help_text += f" (default: {default})"
            rows.append(f"| {names} | {help_text} |")
        if rows:
            out.append("| option | meaning |\n|---|---|\n" + "\n".join(rows) + "\n\n")
    return "".join(out).rstrip() + "\n"


def main(argv: list[str]) -> int:
    target = REPO / "docs" / "cli.md"
    text = render()
    if "--check" in argv:
        if not target.is_file() or target.read_text() != text:
            print("docs/cli.md is out of date: run tools/clidoc.py", file=sys.stderr)
            return 1
        return 0
    target.write_text(text)
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
