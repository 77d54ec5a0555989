"""The column registry is the only home of STAR labels (issue 11: one home per concept)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tiltflow import columns, star

PACKAGE = Path(columns.__file__).parent
REGISTRY_MODULES = {PACKAGE / "columns.py"}
LABEL = re.compile(r"(rln|tf)[A-Z]\w*")


def _label_literals(path: Path, root: Path = PACKAGE) -> list[str]:
    """Every string constant of ``path`` that is a STAR label, or an f-string that starts with one."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    in_fstrings = {id(v) for n in ast.walk(tree) if isinstance(n, ast.JoinedStr) for v in n.values}
    found = []
    for node in ast.walk(tree):
        where = f"{path.relative_to(root)}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Constant) and id(node) not in in_fstrings and isinstance(node.value, str) \
                and LABEL.fullmatch(node.value):
            found.append(f"{where}: {node.value!r}")
        elif isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant) \
                and LABEL.fullmatch(str(node.values[0].value)):
            found.append(f"{where}: f-string {node.values[0].value!r}...")
    return sorted(found)


def test_no_label_literal_outside_the_registry():
    offenders = [hit for p in sorted(PACKAGE.rglob("*.py")) if p not in REGISTRY_MODULES for hit in _label_literals(p)]
    assert offenders == [], "use the constant from tiltflow.columns (star.X):\n" + "\n".join(offenders)


def test_the_scan_finds_a_literal(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text('x = t["tfExcluded"]\ny = f"rlnTomoProj{a}"\nz = "the rlnTomoHand column"\nw = "tf"\n')
    assert _label_literals(bad, tmp_path) == ["bad.py:1: 'tfExcluded'", "bad.py:2: f-string 'rlnTomoProj'..."]


def test_every_column_says_unit_owner_and_meaning():
    assert len(columns.REGISTRY) > 90
    for c in columns.REGISTRY.values():
        assert LABEL.fullmatch(c.label), c
        assert c.owner and c.meaning and c.table, c
        assert set(c.table.split(", ")) <= {"global", "tilt", "motion", "optics", "movies"}, c


def test_every_exported_constant_is_registered_and_reachable_from_star():
    labels = []
    constants = [n for n, v in vars(columns).items() if n.isupper() and n != "REGISTRY" and isinstance(v, (str, tuple))]
    for name in constants:
        value = getattr(columns, name)
        labels += list(value) if isinstance(value, tuple) else [value]
        assert getattr(star, name) == value, name  # star re-exports the registry
    assert sorted(labels) == sorted(columns.REGISTRY)


def test_the_markdown_table_lists_every_column():
    table = columns.markdown_table()
    assert all(f"`{label}`" in table for label in columns.REGISTRY)
    assert "| `rlnDefocusU` | tilt | A | ctf |" in table
