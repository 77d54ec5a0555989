"""The Nextflow pipeline checked without a Nextflow runtime.

Nextflow cannot be installed here, so these tests hold the contract between the .nf files and the rest:
the files parse with Nextflow's own front end (tools/nflint), every `tiltflow` call in a module uses a
subcommand and options the CLI accepts, every `params.x` is declared in nextflow.config and
nextflow_schema.json, and modules publish into the layout the local runner writes.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import shutil
from pathlib import Path

import pytest

from programs import missing

REPO = Path(__file__).resolve().parents[1]
MODULES = sorted((REPO / "modules").rglob("*.nf"))
NF_FILES = [REPO / "main.nf", REPO / "main_noschema.nf", *sorted((REPO / "workflows").rglob("*.nf")),
            *sorted((REPO / "subworkflows").rglob("*.nf")), *MODULES]
CONFIGS = [REPO / "nextflow.config", *sorted((REPO / "conf").glob("*.config"))]

_spec = importlib.util.spec_from_file_location("nflint", REPO / "tools" / "nflint" / "nflint.py")
nflint = importlib.util.module_from_spec(_spec)  # a script, not a package: loaded from its file
_spec.loader.exec_module(nflint)


def _lint_jar() -> Path:
    """Nextflow's parser (java and the nf-lang jar): missing is a failure in CI, a skip elsewhere."""
    if shutil.which("java") is None:
        missing("java is not installed (the .nf lint runs Nextflow's own parser)")
    jar = nflint.default_jar()
    if not jar.is_file():
        missing(f"{jar} missing: `make test` installs it (tools/nflint/nflint.py --install .tools)")
    return jar


def _strip_comments(text: str) -> str:
    # block comments start a line; a glob such as reconstruct/*/*.star inside a command is not one
    text = re.sub(r"(?ms)^\s*/\*.*?\*/", "", text)
    return re.sub(r"(?m)^\s*//.*$", "", text)


def _script_blocks(text: str) -> list[str]:
    """The bodies of `script:` sections (between script: and stub: or the end of the process)."""
    out = []
    for m in re.finditer(r"\n\s*script:\s*\n(.*?)(?=\n\s*stub:|\n\}\s*\n)", text, flags=re.S):
        out.append(m.group(1))
    return out


def _tiltflow_calls(text: str, keep_interpolations: bool = False) -> list[list[str]]:
    """Each `tiltflow ...` command line in a script block, continuation lines joined, as tokens (Groovy
    interpolations as a placeholder X unless ``keep_interpolations``).
    """
    calls = []
    for block in _script_blocks(_strip_comments(text)):
        joined = re.sub(r"\\\\\n", " ", block)
        for line in joined.splitlines():
            line = line.strip()
            if line.startswith("tiltflow "):
                if not keep_interpolations:
                    line = re.sub(r"\$\{[^}]*\}", "X", line)  # Groovy interpolations -> a placeholder
                line = line.split(">")[0]
                calls.append(shlex.split(line))
    return calls


def _cli_commands() -> dict[str, set[str]]:
    import typer

    from tiltflow.cli import app

    group = typer.main.get_command(app)
    out = {}
    for name, cmd in group.commands.items():
        opts: set[str] = set()
        for p in cmd.params:
            opts.update(o for o in (*p.opts, *p.secondary_opts) if o.startswith("-"))
        out[name] = opts
    return out


def test_nf_and_config_files_parse_with_nextflows_own_parser():
    jar = _lint_jar()
    files = nflint.pipeline_files()
    assert REPO / "main.nf" in files and len(files) >= 12
    res = nflint.lint(files, jar)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "0 errors" in res.stdout


def test_the_linter_catches_a_broken_script(tmp_path):
    jar = _lint_jar()
    bad = tmp_path / "bad.nf"
    bad.write_text("process A {\n  input:\n  val x from ch\n  script:\n  'echo'\n}\nworkflow { B(1) }\n")
    res = nflint.lint([bad], jar)
    assert res.returncode == 1
    assert "Unexpected input: 'from'" in res.stdout


def test_every_module_calls_tiltflow_with_existing_subcommands_and_options():
    commands = _cli_commands()
    seen = set()
    for nf in MODULES:
        calls = _tiltflow_calls(nf.read_text())
        assert calls, f"{nf.relative_to(REPO)} calls no tiltflow subcommand"
        for tokens in calls:
            sub = tokens[1]
            assert sub in commands, f"{nf.relative_to(REPO)}: unknown subcommand `tiltflow {sub}`"
            seen.add(sub)
            for tok in tokens[2:]:
                if tok.startswith("--"):
                    opt = tok.split("=")[0]
                    assert opt in commands[sub], f"{nf.relative_to(REPO)}: `tiltflow {sub}` has no option {opt}"
    steps = {"simulate", "gain", "import", "motioncor", "ctf", "exclude", "stack", "align", "reconstruct",
             "export", "report", "version"}
    assert steps <= seen


def _declared_params() -> set[str]:
    text = _strip_comments((REPO / "nextflow.config").read_text())
    block = re.search(r"\nparams\s*\{(.*?)\n\}", text, flags=re.S).group(1)
    return set(re.findall(r"(?m)^\s*(\w+)\s*=", block))


def _schema_params() -> dict[str, dict]:
    schema = json.loads((REPO / "nextflow_schema.json").read_text())
    props: dict[str, dict] = {}
    for group in schema["$defs"].values():
        props.update(group["properties"])
    return props


def test_every_param_used_is_declared_in_config_and_schema():
    used = set()
    for f in [*NF_FILES, *CONFIGS]:
        used |= set(re.findall(r"params\.(\w+)", _strip_comments(f.read_text())))
    declared = _declared_params()
    schema = _schema_params()
    assert used - declared == set(), f"used but not in nextflow.config: {sorted(used - declared)}"
    assert used - set(schema) == set(), f"used but not in nextflow_schema.json: {sorted(used - set(schema))}"
    assert declared == set(schema), f"config vs schema differ: {sorted(declared ^ set(schema))}"


def test_schema_defaults_match_config_defaults():
    text = _strip_comments((REPO / "nextflow.config").read_text())
    block = re.search(r"\nparams\s*\{(.*?)\n\}", text, flags=re.S).group(1)
    config = {}
    for name, value in re.findall(r"(?m)^\s*(\w+)\s*=\s*(.+?)\s*$", block):
        config[name] = json.loads(value.replace("'", '"')) if value != "null" else None
    for name, prop in _schema_params().items():
        if "default" in prop or config.get(name) is not None:
            assert prop.get("default") == config[name], f"{name}: schema {prop.get('default')!r} vs config {config[name]!r}"


def test_modules_follow_nf_core_habits():
    for nf in MODULES:
        text = nf.read_text()
        rel = nf.relative_to(REPO)
        assert re.search(r"\n\s*label ", text), f"{rel}: no label"
        assert "\n    stub:\n" in text, f"{rel}: no stub block"
        assert 'path "versions.yml", emit: versions' in text, f"{rel}: no versions.yml emit"
        ext = dict(re.findall(r"def (\w+) = task\.ext\.(args2?)\b", text))
        assert "args" in ext.values(), f"{rel}: ignores task.ext.args"
        calls = " ".join(" ".join(c) for c in _tiltflow_calls(text, keep_interpolations=True))
        for name, key in ext.items():  # defined is not enough: the command must use it
            assert f"${{{name}}}" in calls, f"{rel}: task.ext.{key} read into {name} but not on the tiltflow line"
        assert "task.ext.when == null || task.ext.when" in text, f"{rel}: no `when: task.ext.when`"
        assert "params." not in _strip_comments(text), f"{rel}: reads params (options come from conf/modules.config)"
        assert "export TILTFLOW_THREADS=${task.cpus} OMP_NUM_THREADS=${task.cpus}" in text, f"{rel}: threads not from task.cpus"
        assert (nf.parent / "meta.yml").is_file(), f"{rel}: no meta.yml"
        assert re.search(r"emit: \w+", text)
        if "val(meta)" in text:
            assert 'tag "${meta.id}"' in text, f"{rel}: per-series process without tag"


def _config_blocks(path: Path) -> dict[str, str]:
    """`withName: 'X|Y' { ... }` bodies of a config file, by process name (first level only)."""
    text = _strip_comments(path.read_text())
    blocks: dict[str, str] = {}
    for m in re.finditer(r"withName: '([\w|]+)' \{(.*?)\n    \}", text, flags=re.S):
        for name in m.group(1).split("|"):
            blocks[name] = blocks.get(name, "") + m.group(2)
    return blocks


def test_every_process_has_a_container_and_ext_args_use_existing_cli_options():
    commands = _cli_commands()
    processes = {re.search(r"process (\w+)", nf.read_text()).group(1): nf.parent.name for nf in MODULES}
    blocks = _config_blocks(REPO / "conf" / "modules.config")
    with_container = {name for name, body in blocks.items() if "container = " in body}
    assert set(processes) <= with_container, f"no container in conf/modules.config: {set(processes) - with_container}"
    for config in (REPO / "conf" / "modules.config", REPO / "conf" / "test.config"):
        for name, body in _config_blocks(config).items():
            sub = processes[name]
            for opt in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", body):
                assert opt in commands[sub], f"{config.name} {name}: `tiltflow {sub}` has no option {opt}"


def test_published_layout_is_the_local_runner_layout():
    from tiltflow.steps.common import series_dir
    from tiltflow.steps.registry import STEPS

    written = {s.writes for s in STEPS}
    for nf in MODULES:
        text = nf.read_text()
        for step in re.findall(r'path\("(\w+)/\$\{meta\.id\}"\)', text):
            assert step in written, f"{nf.relative_to(REPO)} publishes {step}/ which the runner does not write"
            assert str(series_dir(step, "TS_01")) == f"{step}/TS_01"
    config = (REPO / "conf" / "modules.config").read_text()
    assert "path: { params.outdir }" in config  # <outdir>/<step>/<series>, no extra nesting


def test_gpu_requests_only_in_profile_gpu_and_oom_is_retried():
    base = (REPO / "conf" / "base.config").read_text()
    config = (REPO / "nextflow.config").read_text()
    gpu = re.search(r"\n    gpu \{(.*?)\n    \}", config, flags=re.S).group(1)
    assert "accelerator = 1" in gpu and "maxForks = params.max_gpus as int" in gpu
    assert "'--gpus all'" in gpu and "'--nv'" in gpu  # docker / apptainer GPU flags only here
    docker = re.search(r"\n    docker \{(.*?)\n    \}", config, flags=re.S).group(1)
    assert "--gpus" not in docker and "CUDA_VISIBLE_DEVICES" in docker
    assert "accelerator" not in _strip_comments(base) and "--nv" not in _strip_comments(config.replace(gpu, ""))
    # what each exit status gets: tiltflow exits 75 on CUDA out of memory, 2 on bad input (cli.py)
    default = re.search(r"\n    errorStrategy = \{(.*?)\}\n", base).group(1)
    per_series = re.search(r"withName: 'MOTIONCOR\|CTF\|EXCLUDE\|STACK\|ALIGN\|RECONSTRUCT' \{\s*errorStrategy = "
                           r"\{(.*?)\}\n", base).group(1)
    assert {c: _error_strategy(default, c) for c in (75, 137, 104, 1, 2)} == {
        75: "retry", 137: "retry", 104: "retry", 1: "finish", 2: "finish"}
    assert {c: _error_strategy(per_series, c) for c in (75, 143, 2, 1)} == {
        75: "retry", 143: "retry", 2: "ignore", 1: "finish"}
    assert int(re.search(r"\n    maxRetries = (\d+)", base).group(1)) >= 1
    assert "resourceLimits" in base and "params.max_cpus" in base and "params.max_memory" in base
    for name in ("timeline", "report", "trace"):
        block = re.search(rf"\n{name} \{{(.*?)\n\}}", config, flags=re.S).group(1)
        assert "overwrite = true" in block, f"{name}: a second launch into the same --outdir would abort"
    from tiltflow.cli import EXIT_GPU_OOM

    assert EXIT_GPU_OOM == 75


def _error_strategy(closure: str, status: int) -> str:
    """The value of a Groovy ``errorStrategy`` closure body (``c ? 'a' : (c2 ? 'b' : 'c')`` with conditions
    ``task.exitStatus in (ranges + ints)`` or ``task.exitStatus == n``) for exit status ``status``.
    """
    expr = closure.strip()
    while expr.startswith("(") and _top_level(expr[1:-1], ")") is None and expr.endswith(")"):
        expr = expr[1:-1].strip()
    q = _top_level(expr, "?")
    if q is None:
        assert re.fullmatch(r"'\w+'", expr), f"not a strategy name: {expr}"
        return expr.strip("'")
    c = q + 1 + _top_level(expr[q + 1:], ":")
    cond = expr[:q].replace("task.exitStatus", "s")
    cond = re.sub(r"\+ (\d+)", r"+ [\1]", cond)  # Groovy list + int appends
    cond = re.sub(r"\((\d+)\.\.(\d+)\)", r"list(range(\1, \2 + 1))", cond)  # (a..b): inclusive range
    assert re.fullmatch(r"[\s\w()\[\],+=]*", cond), f"unexpected condition: {cond}"
    chosen = expr[q + 1:c] if eval(cond, {"range": range, "list": list}, {"s": status}) else expr[c + 1:]
    return _error_strategy(chosen, status)


def _top_level(text: str, char: str) -> int | None:
    """Index of the first ``char`` outside brackets and quotes, or None (also when a bracket closes early)."""
    depth, quoted = 0, False
    for i, ch in enumerate(text):
        if ch == "'":
            quoted = not quoted
        elif quoted:
            continue
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                return i if char == ")" else None
        elif ch == char and depth == 0:
            return i
    return None


def test_schema_is_valid_draft_2020_12_and_accepts_the_config_defaults():
    import jsonschema

    schema = json.loads((REPO / "nextflow_schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    defaults = {k: v["default"] for k, v in _schema_params().items() if "default" in v}
    jsonschema.Draft202012Validator(schema).validate(defaults)
    bad = jsonschema.Draft202012Validator(schema)
    assert not bad.is_valid({**defaults, "motioncor_backend": "motioncor9"})
    assert not bad.is_valid({**defaults, "max_gpus": -1})


def test_profiles_exist():
    text = (REPO / "nextflow.config").read_text()
    for profile in ("standard", "slurm", "apptainer", "singularity", "docker", "gpu", "test"):
        assert re.search(rf"\n    {profile} \{{", text), f"profile {profile} missing"


def test_nf_test_files_are_shipped():
    tests = sorted((REPO / "tests" / "nextflow").glob("*.nf.test"))
    assert tests, "no nf-test files"
    assert (REPO / "nf-test.config").is_file()
    for t in tests:
        assert "nextflow_pipeline" in t.read_text() or "nextflow_process" in t.read_text()


def test_versions_name_the_external_tool(tmp_path, monkeypatch):
    """versions.yml records the backend's program; without it on PATH it says so instead of a version."""
    from tiltflow.commands.version import tool_version

    monkeypatch.setenv("PATH", str(tmp_path))
    for var in ("TILTFLOW_MOTIONCOR3", "TILTFLOW_CTFFIND", "RELION_CTFFIND_EXECUTABLE", "RELION_ARETOMO_EXECUTABLE"):
        monkeypatch.delenv(var, raising=False)
    assert tool_version("builtin") is None
    assert tool_version("motioncor3") == ("motioncor3", "not found")
    assert tool_version("ctffind5") == ("ctffind5", "not found")
    for nf in ("motioncor", "ctf", "stack", "align"):
        text = (REPO / "modules" / "local" / nf / "main.nf").read_text()
        assert '--tool ${backend} > versions.yml' in text and "task.ext.backend" in text, nf


def test_tiltflow_run_finds_the_series_nextflows_input_finds(tmp_path):
    """One --input rule for both runners: FOLDER/*.mdoc, one .mdoc, or a glob (the stub runs of
    tests/test_nextflow_run.py check the Nextflow side with the same three forms).
    """
    from tiltflow.errors import TiltflowError
    from tiltflow.runner.pipeline import find_mdocs

    for name in ("TS_01.mrc.mdoc", "TS_02.mrc.mdoc", "TS_01_000_0.0.tif", "frames/TS_01_000_0.0.tif.mdoc"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("")
    both = [tmp_path / "TS_01.mrc.mdoc", tmp_path / "TS_02.mrc.mdoc"]
    assert find_mdocs(tmp_path) == both  # top level only, as FOLDER/*.mdoc
    assert find_mdocs(tmp_path / "TS_02.mrc.mdoc") == both[1:]
    assert find_mdocs(tmp_path / "TS_*.mdoc") == both
    assert find_mdocs(tmp_path / "TS_0[1].mrc.mdoc") == both[:1]
    with pytest.raises(TiltflowError, match="no .mdoc file matches"):
        find_mdocs(tmp_path / "XX_*.mdoc")
    groovy = (REPO / "subworkflows" / "local" / "utils_tiltflow_pipeline" / "main.nf").read_text()
    assert 'files("${path}/*.[mM][dD][oO][cC]")' in groovy and "input =~ /[*?\\[{]/" in groovy  # test_discovery.py
