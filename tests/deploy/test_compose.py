"""deploy/compose.yaml: validated and normalised by Docker Compose itself (`docker-compose config`,
the Compose Specification's schema, offline), then the same roles as the chart, on the same site
file, with health checks, start order, secrets from the environment and the site file's volumes."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest

from config import load_config
from streams.kafka import topic_partitions
from tests.deploy.conftest import DEPLOY, SITE, SITE_ENV

SECRETS = {"REDIS_PASSWORD": "test-redis", "FUSEWATCH_WEB_TOKEN": "test-token"}
FUSEWATCH = ("analyze", "fuse", "clips", "index", "web")


def compose_config(tools: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(tools / "bin" / "docker-compose"), "-f", str(DEPLOY / "compose.yaml"), "config", "--format", "json"],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/nonexistent", **env},
        cwd=DEPLOY.parent,
    )


@pytest.fixture(scope="module")
def compose(tools: Path) -> dict[str, Any]:
    done = compose_config(tools, SECRETS)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_compose_refuses_to_start_without_its_secrets(tools: Path) -> None:
    done = compose_config(tools, {"FUSEWATCH_WEB_TOKEN": "t"})
    assert done.returncode != 0
    assert "set REDIS_PASSWORD in deploy/.env" in done.stderr


def test_compose_catches_what_the_spec_forbids(tools: Path, tmp_path: Path) -> None:
    broken = tmp_path / "compose.yaml"
    broken.write_text((DEPLOY / "compose.yaml").read_text().replace("stop_grace_period: 60s", "stop_grace: 60s"))
    done = subprocess.run(
        [str(tools / "bin" / "docker-compose"), "-f", str(broken), "config", "-q"],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **SECRETS},
    )
    assert done.returncode != 0 and "stop_grace" in done.stderr


def test_one_service_per_role_and_source_like_the_chart(compose: dict[str, Any]) -> None:
    sources = [s.id for s in load_config(SITE, env=SITE_ENV).sources]
    services = compose["services"]
    assert set(services) == {"kafka", "kafka-topics", "redis", *FUSEWATCH, *(f"ingest-{s}" for s in sources)}
    for source in sources:
        assert services[f"ingest-{source}"]["command"] == [
            "run",
            "/etc/fusewatch/site.yaml",
            "--role",
            f"ingest:{source}",
            "--metrics-port",
            "9100",
        ]
    for role in FUSEWATCH:
        tail = [] if role == "web" else ["--metrics-port", "9100"]
        assert services[role]["command"] == ["run", "/etc/fusewatch/site.yaml", "--role", role, *tail]


def test_every_role_runs_the_image_on_the_site_file_with_its_health_check(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        assert "healthcheck" in service or name == "kafka-topics", name
        if name in ("kafka", "kafka-topics", "redis"):
            continue
        assert service["build"]["dockerfile"] == "deploy/Dockerfile"
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"]
        site = next(v for v in service["volumes"] if v["target"] == "/etc/fusewatch/site.yaml")
        assert Path(site["source"]) == SITE and site["read_only"] is True
        assert service["healthcheck"]["test"] == ["CMD", "python", "-m", "daemon.runtime.probe", "/healthz"]
        port = "8686" if name == "web" else "9100"
        assert service["environment"]["FUSEWATCH_HEALTH_PORT"] == port
        assert service["depends_on"] == {
            "kafka-topics": {"condition": "service_completed_successfully", "required": True},
            "redis": {"condition": "service_healthy", "required": True},
        }
        assert service["environment"]["FUSEWATCH_WEB_TOKEN"] == SECRETS["FUSEWATCH_WEB_TOKEN"]
        config = load_config(SITE, env=service["environment"])  # every ${VAR} the file needs is given
        assert config.kafka.security_protocol == "PLAINTEXT" and config.kafka.replication_factor == 1
        assert config.redis.password is not None
    assert compose["services"]["kafka-topics"]["depends_on"]["kafka"]["condition"] == "service_healthy"


def test_volumes_sit_where_the_site_file_writes(compose: dict[str, Any]) -> None:
    config = load_config(SITE, env=SITE_ENV)
    snapshots, clips, search = config.outputs.snapshots_dir, config.clips.store.path, config.search.path
    expected = {
        "analyze": {snapshots: "snapshots"},
        "clips": {clips: "clips"},
        "index": {search: "search"},
        "web": {snapshots: "snapshots", clips: "clips", search: "search"},
    }
    for name, service in compose["services"].items():
        if name.startswith("ingest-") or name in FUSEWATCH:
            named = {v["target"]: v["source"] for v in service["volumes"] if v["type"] == "volume"}
            assert named == expected.get(name, {}), name


def test_topics_are_made_with_the_site_files_partitions_and_settings(compose: dict[str, Any]) -> None:
    script = compose["services"]["kafka-topics"]["command"][0].replace("$$", "$")  # as the container gets it
    made = {}
    for line in script.replace("\\\n", " ").splitlines():
        words = shlex.split(line)
        if words[:1] == ["topic"]:
            made[words[1]] = (int(words[2]), " ".join(words[3:]))
    kafka = load_config(SITE, env=SITE_ENV).kafka
    assert {topic: count for topic, (count, _) in made.items()} == topic_partitions(kafka)
    media = made[kafka.topics.media][1]
    assert "compression.type=producer" in media and "message.timestamp.type=CreateTime" in media
    assert f"max.message.bytes={kafka.max_request_size}" in media
    for topic, (_, settings) in made.items():
        if topic != kafka.topics.media:
            assert settings == "$json", topic
    assert 'json="--config compression.type=zstd' in script
