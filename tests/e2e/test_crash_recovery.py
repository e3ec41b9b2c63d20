"""SIGKILL a worker mid-replay, start it again: the alerts equal an undisturbed run's.

Workers run as real `fusewatch analyze` / `fusewatch fuse` processes against a broker and
Redis of this module's own; the reference run is the same pipeline, undisturbed.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiokafka import TopicPartition

from config import load_config
from config.schema import FusewatchConfig, KafkaTopics
from daemon.analyze.worker import run_analyze
from daemon.cli.main import default_config_path
from daemon.fuse.worker import run_fuse
from daemon.runtime.services import ServiceSet
from streams.kafka import MediaPublisher, make_consumer
from streams.models import Alert, Summary
from streams.redis_schema import RedisKeys, redis_client
from streams.sources import ReplayOptions, replay

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Site:
    """A running broker + Redis and a config file for worker processes."""

    services: ServiceSet
    config_file: Path
    workdir: Path

    def config(self, prefix: str) -> FusewatchConfig:
        """The config with topics, consumer groups and Redis keys of one run."""
        base = load_config(self.config_file, env=self.env())
        topics = KafkaTopics(**{name: f"{prefix}.{value}" for name, value in base.kafka.topics.model_dump().items()})
        return base.model_copy(
            update={
                "kafka": base.kafka.model_copy(update={"topics": topics, "group_prefix": prefix}),
                "redis": base.redis.model_copy(update={"key_prefix": prefix}),
            }
        )

    def env(self) -> dict[str, str]:
        return {
            "FUSEWATCH_KAFKA": self.services.kafka.address,
            "FUSEWATCH_REDIS": f"redis://{self.services.redis.address}/0",
        }


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    workdir = tmp_path_factory.mktemp("crash")
    services = ServiceSet(workdir / "services")
    services.start()
    text = default_config_path().read_text()
    # Every frame analysed (no dropping under load), so two runs are comparable window by window.
    text = text.replace("detectors:\n", "detectors:\n  when_behind: wait\n", 1)
    config_file = workdir / "site.yaml"
    config_file.write_text(text)
    try:
        yield Site(services, config_file, workdir)
    finally:
        services.stop()


class WorkerProcess:
    """`fusewatch ROLE --config FILE` as a child process, reading a run's topic prefix."""

    def __init__(self, site: Site, role: str, prefix: str) -> None:
        self.site, self.role, self.prefix = site, role, prefix
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = site.workdir / f"{prefix}-{role}.log"

    def start(self) -> None:
        # The run's topics/groups/keys go through the config file: write one per run.
        config = self.site.config(self.prefix)
        run_file = self.site.workdir / f"{self.prefix}.yaml"
        if not run_file.exists():
            lines = (
                self.site.config_file.read_text()
                .replace(
                    "kafka:\n",
                    f"kafka:\n  group_prefix: {self.prefix}\n  topics: "
                    f"{{media: {config.kafka.topics.media}, features: {config.kafka.topics.features}, "
                    f"alerts: {config.kafka.topics.alerts}, summaries: {config.kafka.topics.summaries}, "
                    f"dead_letter: {config.kafka.topics.dead_letter}}}\n",
                    1,
                )
                .replace("redis:\n", f"redis:\n  key_prefix: {self.prefix}\n", 1)
            )
            run_file.write_text(lines)
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "daemon.cli", self.role, "--config", str(run_file)],
                cwd=ROOT,
                env=os.environ | self.site.env(),
                stdout=log,
                stderr=log,
            )

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)


async def _replay(config: FusewatchConfig, path: Path) -> int:
    async with MediaPublisher(config.kafka) as publisher:
        result = await replay(
            str(path), "lobby", config.site, publisher, ReplayOptions(speed=None, align_s=config.windows.size)
        )
        await publisher.flush()
    return result.wall_start_ns // 1_000_000


async def _alert_offsets(config: FusewatchConfig, base: int) -> tuple[list[tuple[str, int]], set[tuple[str, int]]]:
    """Alerts in Redis (in order) and the distinct alerts on fw.alerts, as (event, ms after the replay start)."""
    redis = redis_client(config.redis)
    try:
        entries = await redis.xrange(RedisKeys(config.redis.key_prefix).alerts)
    finally:
        await redis.aclose()
    in_redis = [(a.event, a.window_start - base) for a in (Alert.model_validate_json(f[b"alert"]) for _, f in entries)]
    consumer = make_consumer(config.kafka, group=None)
    await consumer.start()
    try:
        tp = TopicPartition(config.kafka.topics.alerts, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        on_kafka: set[tuple[str, int]] = set()
        while batch := await consumer.getmany(timeout_ms=2000):
            for record in batch.get(tp, []):
                alert = Alert.model_validate_json(record.value)
                assert record.key == alert.id.encode()
                on_kafka.add((alert.event, alert.window_start - base))
    finally:
        await consumer.stop()
    return in_redis, on_kafka


async def _features_count(config: FusewatchConfig) -> int:
    consumer = make_consumer(config.kafka, group=None)
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(config.kafka.topics.features) or set()
        if not parts:
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(config.kafka.topics.features) or set()
        ends = await consumer.end_offsets([TopicPartition(config.kafka.topics.features, p) for p in parts])
        return sum(ends.values())
    finally:
        await consumer.stop()


async def _last_summary(config: FusewatchConfig) -> int:
    redis = redis_client(config.redis)
    try:
        raw = await redis.hget(RedisKeys(config.redis.key_prefix).latest, "lobby")
    finally:
        await redis.aclose()
    return Summary.model_validate_json(raw).window_start if raw else 0


@pytest.fixture(scope="module")
async def reference(site: Site, media_dir: Path) -> tuple[list[tuple[str, int]], set[tuple[str, int]]]:
    config = site.config("ref")
    base = await _replay(config, media_dir / "lobby.ts")
    await asyncio.wait_for(run_analyze(config, idle_timeout=5.0), 300)
    await asyncio.wait_for(run_fuse(config, idle_timeout=6.0), 120)
    in_redis, on_kafka = await _alert_offsets(config, base)
    assert in_redis and set(in_redis) == on_kafka
    return in_redis, on_kafka


async def _disturbed_run(site: Site, media_dir: Path, prefix: str, victim: str) -> tuple[list, set]:
    """Replay through worker processes; `victim` is a worker to SIGKILL and restart, or "redis" to stop for 10 s."""
    config = site.config(prefix)
    workers = {role: WorkerProcess(site, role, prefix) for role in ("analyze", "fuse")}
    for worker in workers.values():
        worker.start()
    try:
        base = await _replay(config, media_dir / "lobby.ts")
        last_window = base + 78_000
        deadline = time.monotonic() + 240
        # Let the pipeline get a quarter (Redis: the outage then spans the call for help at 30 s)
        # or half of the way, then strike without warning.
        while await _features_count(config) < (30 if victim == "redis" else 60):
            assert time.monotonic() < deadline, "pipeline made no progress"
            await asyncio.sleep(0.5)
        if victim == "fuse":
            while await _last_summary(config) < base + 20_000:
                assert time.monotonic() < deadline, "fuse made no progress"
                await asyncio.sleep(0.5)
        if victim == "redis":
            site.services.redis.stop()
            await asyncio.sleep(10.0)
            site.services.redis.start()
        else:
            workers[victim].kill()
            await asyncio.sleep(1.0)
            workers[victim].start()
        while await _last_summary(config) < last_window:
            assert time.monotonic() < deadline, f"pipeline did not finish; see logs in {site.workdir}"
            await asyncio.sleep(0.5)
        await asyncio.sleep(2.0)
    finally:
        codes = {role: worker.stop() for role, worker in workers.items()}
    assert codes == {"analyze": 0, "fuse": 0}, "SIGTERM is a clean exit"
    return await _alert_offsets(config, base)


async def test_sigkill_of_the_analyze_worker_loses_and_duplicates_nothing(
    site: Site, media_dir: Path, reference: tuple[list[tuple[str, int]], set[tuple[str, int]]]
) -> None:
    in_redis, on_kafka = await _disturbed_run(site, media_dir, "killanalyze", "analyze")
    assert in_redis == reference[0], "same alerts in Redis, none twice"
    assert on_kafka == reference[1]


async def test_sigkill_of_the_fuse_worker_loses_and_duplicates_nothing(
    site: Site, media_dir: Path, reference: tuple[list[tuple[str, int]], set[tuple[str, int]]]
) -> None:
    in_redis, on_kafka = await _disturbed_run(site, media_dir, "killfuse", "fuse")
    assert in_redis == reference[0], "same alerts in Redis, none twice"
    assert on_kafka == reference[1]


async def test_redis_down_for_ten_seconds_loses_no_alert(
    site: Site, media_dir: Path, reference: tuple[list[tuple[str, int]], set[tuple[str, int]]]
) -> None:
    in_redis, on_kafka = await _disturbed_run(site, media_dir, "redisdown", "redis")
    assert in_redis == reference[0], "the alert waited in the buffer and was written when Redis came back"
    assert on_kafka == reference[1]
