"""One session-discovery rule for tiltflow inspect, tiltflow run/watch and Nextflow's --input."""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
from pathlib import Path

import pytest

from tiltflow.cli import main as cli_main
from tiltflow.errors import TiltflowError
from tiltflow.metadata.discover import MDOC_GLOB, session_mdocs
from tiltflow.runner import pipeline

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data"
GROOVY = REPO / "subworkflows" / "local" / "utils_tiltflow_pipeline" / "main.nf"

# session layouts seen in the field: SerialEM (TS_01.mrc.mdoc, frames/ with per-movie mdocs), PACEtomo
# (<name>_tgt_NNN.mrc.mdoc), a copy through Windows (.MDOC), macOS AppleDouble files on an SMB share
LAYOUTS = {
    "serialem": ["TS_01.mrc.mdoc", "TS_02.mrc.mdoc", "TS_01.mrc", "frames/TS_01_000_0.0.tif",
                 "frames/TS_01_000_0.0.tif.mdoc"],
    "pacetomo": ["grid1_tgt_001.mrc.mdoc", "grid1_tgt_002.mrc.mdoc", "grid1_tgts.txt", "grid1.nav"],
    "windows-copy": ["TS_01.MDOC", "TS_02.mrc.Mdoc", "notes.txt"],
    "smb-share": ["TS_01.mrc.mdoc", "._TS_01.mrc.mdoc", ".hidden.mdoc", "folder.mdoc/readme.txt"],
    "nested": ["grid1/TS_01.mrc.mdoc", "grid2/TS_02.mrc.mdoc"],
}
EXPECTED = {  # what a person looking at the folder calls the session's tilt series (top level only)
    "serialem": ["TS_01.mrc.mdoc", "TS_02.mrc.mdoc"],
    "pacetomo": ["grid1_tgt_001.mrc.mdoc", "grid1_tgt_002.mrc.mdoc"],
    "windows-copy": ["TS_01.MDOC", "TS_02.mrc.Mdoc"],
    "smb-share": ["TS_01.mrc.mdoc"],
    "nested": [],
}


def _layout(root: Path, files: list[str]) -> Path:
    for name in files:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("")
    return root


def _nextflow_side(folder: Path) -> list[str]:
    """The folder branch of sessionInput: files(FOLDER/<glob>) (Nextflow's files() skips hidden files), then its filter."""
    text = GROOVY.read_text()
    pattern = re.search(r'mdocs = files\("\$\{path\}/([^"]+)"\)', text).group(1)
    assert pattern == MDOC_GLOB  # the same glob as the Python rule
    assert ("f.isFile() && f.name.toLowerCase().endsWith('.mdoc') && !f.name.startsWith('.')" in text)
    hits = [Path(p) for p in glob.glob(os.path.join(glob.escape(str(folder)), pattern))]  # no dotfiles, as files()
    return sorted(p.name for p in hits if p.is_file() and p.name.lower().endswith(".mdoc") and not p.name.startswith("."))


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_the_python_rule_and_nextflows_glob_agree(tmp_path, layout):
    folder = _layout(tmp_path / layout, LAYOUTS[layout])
    assert _nextflow_side(folder) == EXPECTED[layout]
    if EXPECTED[layout]:
        assert [p.name for p in session_mdocs(folder)] == EXPECTED[layout]
        assert [p.name for p in pipeline.find_mdocs(folder)] == EXPECTED[layout]  # tiltflow run / watch
    else:
        with pytest.raises(TiltflowError, match="no .mdoc file in the session folder"):
            session_mdocs(folder)


def test_inspect_and_run_see_the_same_mdocs(tmp_path, capsys):
    folder = _layout(tmp_path / "s", ["frames/TS_01_000_0.0.mrc.mdoc"])
    shutil.copy(DATA / "mdocfile__TS_01.mrc.mdoc", folder / "TS_01.mrc.mdoc")
    shutil.copy(DATA / "mdocfile__frame_set_single.mdoc", folder / "TS_01_000_0.0.mrc.mdoc")  # per-movie, top level
    shutil.copy(DATA / "mdocfile__frame_set_single.mdoc", folder / "frames" / "TS_01_000_0.0.mrc.mdoc")
    assert cli_main(["inspect", str(folder), "--json", "--dose-per-tilt", "3"]) == 0
    data = json.loads(capsys.readouterr().out)
    seen = sorted([Path(s["mdoc"]).name for s in data["series"]] + [Path(s["path"]).name for s in data["skipped"]])
    assert seen == sorted(p.name for p in pipeline.find_mdocs(folder)) == ["TS_01.mrc.mdoc", "TS_01_000_0.0.mrc.mdoc"]
    assert [s["kind"] for s in data["skipped"]] == ["frames"]


def test_one_mdoc_a_glob_and_errors(tmp_path):
    folder = _layout(tmp_path, ["TS_01.mrc.mdoc", "TS_02.MDOC", "TS_01.mrc"])
    assert session_mdocs(folder / "TS_02.MDOC") == [folder / "TS_02.MDOC"]
    assert session_mdocs(folder / "TS_*") == [folder / "TS_01.mrc.mdoc", folder / "TS_02.MDOC"]
    with pytest.raises(TiltflowError, match="not an mdoc file"):
        session_mdocs(folder / "TS_01.mrc")
    with pytest.raises(TiltflowError, match="no such file or folder"):
        session_mdocs(folder / "nope")
    with pytest.raises(TiltflowError, match="no .mdoc file matches"):
        session_mdocs(folder / "XX_*.mdoc")
