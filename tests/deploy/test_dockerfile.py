"""deploy/Dockerfile: linted by hadolint (all rules, warnings included), then its structure as
parsed by dockerfile-parse: the stages and the variant switch, the same model commands and torch
pins as deploy/install.sh, a non-root final stage with the models and a health check that sends
the token, and a build context (.dockerignore) that holds what the COPYs need and no more.
The image itself is not built here (no Docker daemon): docs/operations.md says how."""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import subprocess

import pytest
from dockerfile_parse import DockerfileParser

from tests.deploy.conftest import DEPLOY, SITE, venv_tool

ROOT = DEPLOY.parent
DOCKERFILE = DEPLOY / "Dockerfile"


def instructions() -> list[dict[str, str]]:
    parsed = DockerfileParser(str(DOCKERFILE))
    return [i for i in parsed.structure if i["instruction"] != "COMMENT"]


def stages() -> dict[str, list[dict[str, str]]]:
    found: dict[str, list[dict[str, str]]] = {}
    current: list[dict[str, str]] = []
    for item in instructions():
        if item["instruction"] == "FROM":
            words = item["value"].split()
            assert len(words) == 3 and words[1].upper() == "AS", item["value"]
            current = found.setdefault(words[2], [])
        current.append(item)
    return found


def values(stage: list[dict[str, str]], instruction: str) -> list[str]:
    return [i["value"] for i in stage if i["instruction"] == instruction]


def global_args() -> dict[str, str]:
    args = {}
    for item in instructions():
        if item["instruction"] == "FROM":
            break
        name, _, default = item["value"].partition("=")
        args[name] = default
    return args


def test_hadolint_finds_nothing() -> None:
    done = subprocess.run(
        [venv_tool("hadolint"), "--format", "json", "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0 and json.loads(done.stdout) == [], done.stdout + done.stderr


def test_hadolint_does_flag_a_root_image_with_latest() -> None:
    bad = "FROM python:latest\nRUN pip install fusewatch\n"
    done = subprocess.run(
        [venv_tool("hadolint"), "--format", "json", "-"], input=bad, capture_output=True, text=True, check=False
    )
    codes = {finding["code"] for finding in json.loads(done.stdout)}
    assert done.returncode != 0 and {"DL3007", "DL3013"} <= codes


def test_stages_and_the_variant_switch() -> None:
    found = stages()
    assert list(found) == ["python-base", "torch-cpu", "torch-cuda", "build", "models", "runtime"]
    args = global_args()
    assert args["VARIANT"] == "cpu" and args["TORCH_CPU_INDEX"] == "https://download.pytorch.org/whl/cpu"
    assert values(found["build"], "FROM") == ["torch-${VARIANT} AS build"]
    for name, stage in found.items():  # images from a registry carry a fixed tag, never latest
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], stage[0]["value"].split()[0])
        assert image in found or re.fullmatch(r"[\w./-]+:\d[\w.-]*", image), (name, image)
    cpu = " ".join(values(found["torch-cpu"], "RUN"))
    cuda = " ".join(values(found["torch-cuda"], "RUN"))
    assert '--index-url "$TORCH_CPU_INDEX"' in cpu and "--index-url" not in cuda
    assert "nvidia-cublas-cu12" in cuda  # CTranslate2's libcublas.so.12 beside torch's CUDA 13


def test_torch_pins_and_model_commands_are_install_shs() -> None:
    install = (DEPLOY / "install.sh").read_text()
    args = global_args()
    assert f"torch==${{FUSEWATCH_TORCH:-{args['TORCH_VERSION']}}}" in install
    assert f"torchvision==${{FUSEWATCH_TORCHVISION:-{args['TORCHVISION_VERSION']}}}" in install
    expected = [
        line.removeprefix(".venv/bin/")
        for line in install.splitlines()
        if re.match(r"\.venv/bin/python -m detectors\.", line)
    ]
    assert len(expected) == 3
    models = stages()["models"]
    commands = [part.strip() for run in values(models, "RUN") for part in run.split("&&")]
    assert commands == expected
    assert "FUSEWATCH_MODELS=/opt/fusewatch/models" in values(models, "ENV")


def test_the_runtime_is_non_root_with_the_models_the_site_file_and_a_token_health_check() -> None:
    runtime = stages()["runtime"]
    user = values(runtime, "USER")
    assert user == ["10001:10001"]
    assert "useradd --system --uid 10001" in " ".join(values(runtime, "RUN"))
    copies = values(runtime, "COPY")
    assert "--from=models /opt/fusewatch/models /opt/fusewatch/models" in copies
    assert "--from=build /opt/fusewatch/.venv /opt/fusewatch/.venv" in copies
    assert f"{SITE.relative_to(ROOT)} /etc/fusewatch/site.yaml" in copies
    env = " ".join(values(runtime, "ENV"))
    assert "FUSEWATCH_MODELS=/opt/fusewatch/models" in env and "PATH=/opt/fusewatch/.venv/bin:$PATH" in env
    health = values(runtime, "HEALTHCHECK")
    assert len(health) == 1
    command = health[0].split("CMD", 1)[1].strip()
    assert json.loads(command) == ["python", "-m", "daemon.runtime.probe", "/healthz"]
    assert json.loads(values(runtime, "ENTRYPOINT")[0]) == ["fusewatch"]
    assert json.loads(values(runtime, "CMD")[0]) == ["run", "/etc/fusewatch/site.yaml", "--role", "all"]
    assert [i["instruction"] for i in runtime][-4:] == ["EXPOSE", "HEALTHCHECK", "ENTRYPOINT", "CMD"]


def ignored(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore semantics for the patterns used here: the last match wins."""
    verdict = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        bare = pattern.lstrip("!").rstrip("/")
        parts = path.split("/")
        hit = any(fnmatch.fnmatch("/".join(parts[:n]), bare) for n in range(1, len(parts) + 1))
        if bare.startswith("**/"):
            hit = hit or any(fnmatch.fnmatch(part, bare[3:]) for part in parts)
        if hit:
            verdict = not negate
    return verdict


@pytest.mark.parametrize("path", ["daemon/runtime/probe.py", "config/examples/demo.yaml", "pyproject.toml"])
def test_the_build_context_holds_what_the_copies_need(path: str) -> None:
    patterns = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]
    assert not ignored(path, patterns)
    sources = []
    for stage in stages().values():
        for copy in values(stage, "COPY"):
            words = shlex.split(copy)
            if not words[0].startswith("--from"):
                sources += words[:-1]
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), source
        assert not ignored(source, patterns), source
    for heavy in (".cache/models/x", ".venv/bin/python", ".git/HEAD", "tests/conftest.py", "bench/run_all.py"):
        assert ignored(heavy, patterns), heavy
