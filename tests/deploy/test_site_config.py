"""The one site file of the deployments (deploy/helm/fusewatch/files/site.yaml): `fusewatch config
check` accepts it as each deployment fills it in, and refuses it without the token every probe needs."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.deploy.conftest import DEPLOY, SITE

ENVIRONMENTS = {
    "chart (SASL_SSL)": {"KAFKA_BOOTSTRAP": "kafka-0.kafka:9093", "KAFKA_PASSWORD": "k", "FUSEWATCH_WEB_TOKEN": "t"},
    "compose (PLAINTEXT)": {
        "KAFKA_BOOTSTRAP": "kafka:9092",
        "KAFKA_SECURITY_PROTOCOL": "PLAINTEXT",
        "KAFKA_REPLICATION_FACTOR": "1",
        "REDIS_PASSWORD": "r",
        "FUSEWATCH_WEB_TOKEN": "t",
    },
}


def config_check(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "daemon.cli", "config", "check", str(SITE)],
        capture_output=True,
        text=True,
        check=False,
        cwd=DEPLOY.parent,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "COLUMNS": "200", **env},
    )


@pytest.mark.parametrize("name", list(ENVIRONMENTS))
def test_config_check_accepts_the_site_file(name: str) -> None:
    done = config_check(ENVIRONMENTS[name])
    assert done.returncode == 0, done.stderr
    assert " ".join((done.stdout + done.stderr).split()) == f"ok {SITE}: 2 sources, 2 events"


def test_config_check_refuses_it_without_the_token_or_the_kafka_password() -> None:
    env = dict(ENVIRONMENTS["chart (SASL_SSL)"])
    del env["FUSEWATCH_WEB_TOKEN"]
    done = config_check(env)
    assert done.returncode == 2 and "FUSEWATCH_WEB_TOKEN is not set" in done.stderr
    env = dict(ENVIRONMENTS["chart (SASL_SSL)"])
    del env["KAFKA_PASSWORD"]
    done = config_check(env)
    assert done.returncode == 2 and "SASL_SSL needs sasl_mechanism, sasl_username and sasl_password" in done.stderr
