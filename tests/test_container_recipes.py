"""The container recipes without a container engine: pins and checksums, the download check, the Nextflow
engine profiles (GPU options only under ``gpu``).
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from programs import missing

REPO = Path(__file__).resolve().parents[1]
CONTAINERS = REPO / "containers"
TOOLS = ("aretomo2", "aretomo3", "ctffind", "imod", "motioncor")


def _dockerfile(name: str) -> str:
    return (CONTAINERS / name / "Dockerfile").read_text()


@pytest.mark.parametrize("tool", TOOLS)
def test_tool_recipe_says_how_it_was_verified_and_pins_what_it_downloads(tool):
    text = _dockerfile(tool)
    assert "# Last verified:" in text
    args = dict(re.findall(r"^ARG (\w+)=?(.*)$", text, flags=re.M))
    for url in (k for k in args if k.endswith("_URL")):
        assert f"{url[:-4]}_SHA256" in args, f"{tool}: {url} has no checksum argument"
        assert f'fetch-verified "${{{url}}}" "${{{url[:-4]}_SHA256}}"' in text, f"{tool}: {url} is not verified"
    for commit in (k for k in args if k.endswith("_COMMIT")):
        assert re.fullmatch(r"[0-9a-f]{40}", args[commit]), f"{tool}: {commit} is not a full commit id"
    assert "--branch" not in text and "main" not in re.findall(r"ARG \w+=(\S+)", text)


def test_tiltflow_image_takes_torch_from_the_tests_constraints():
    text = _dockerfile("tiltflow")
    assert not re.search(r"torch==|TORCH_VERSION", text), "the torch pin belongs to constraints.txt"
    assert "-c /opt/tiltflow-src/constraints.txt torch" in text
    assert re.search(r"^torch==2\.13\.0$", (REPO / "constraints.txt").read_text(), flags=re.M)
    assert re.search(r"^ARG BASE_IMAGE=debian:bookworm$", text, flags=re.M)
    assert "procps" in text and "bash" in text  # Nextflow's task scripts and metrics


def _fetch(tmp_path: Path, payload: bytes, sha256: str) -> subprocess.CompletedProcess:
    source = tmp_path / "tool.tar.gz"
    source.write_bytes(payload)
    return subprocess.run(["sh", str(CONTAINERS / "fetch-verified.sh"), source.as_uri(), sha256,
                           str(tmp_path / "out")], capture_output=True, text=True, timeout=60)


def test_fetch_verified_checks_the_sha256(tmp_path):
    if shutil.which("curl") is None:
        missing("curl is not installed (containers/fetch-verified.sh needs it)")
    payload = b"not really a tarball\n"
    good = hashlib.sha256(payload).hexdigest()
    assert _fetch(tmp_path, payload, good).returncode == 0
    assert (tmp_path / "out").read_bytes() == payload

    bad = _fetch(tmp_path, payload, "0" * 64)
    assert bad.returncode == 1 and f"has sha256 {good}, expected {'0' * 64}" in bad.stderr

    unpinned = _fetch(tmp_path, payload, "")
    assert unpinned.returncode == 0 and f"is not pinned; its sha256 is {good}" in unpinned.stderr


def _profiles() -> dict[str, str]:
    """Each profile's block in nextflow.config, by brace matching."""
    text = (REPO / "nextflow.config").read_text()
    start = text.index("{", text.index("\nprofiles {"))
    blocks, depth, name, body_start = {}, 0, None, 0
    for i in range(start + 1, len(text)):
        if text[i] == "{":
            if depth == 0:
                name, body_start = text[text.rindex("\n", 0, i) + 1:i].strip(), i + 1
            depth += 1
        elif text[i] == "}":
            if depth == 0:
                return blocks
            depth -= 1
            if depth == 0:
                blocks[name] = text[body_start:i]
    raise AssertionError("profiles block not closed")


def test_engine_profiles_ask_for_a_gpu_only_under_the_gpu_profile():
    profiles = _profiles()
    for engine in ("docker", "podman", "apptainer", "singularity"):
        body = profiles[engine]
        assert f"{engine}.enabled = true" in body
        assert "--nv" not in body and "--gpus" not in body and "nvidia.com/gpu" not in body
        others = {"docker", "podman", "apptainer", "singularity"} - {engine}
        assert all(f"{o}.enabled = false" in body for o in others), f"{engine} leaves another engine on"
    gpu = profiles["gpu"]
    for option in ("docker: '--gpus all'", "podman: '--device nvidia.com/gpu=all'", "apptainer: '--nv'",
                   "singularity: '--nv'"):
        assert option in gpu
    assert "containerOptions" in gpu and "workflow.containerEngine" in gpu
