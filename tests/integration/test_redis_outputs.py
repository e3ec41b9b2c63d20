"""Alerts and summaries in a real Redis: idempotent, live, buffered through an outage."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from config.schema import FusewatchConfig, RedisConfig
from daemon.rules import alert_id
from daemon.services import EmbeddedService
from streams.models import Alert, Summary, TermContribution
from streams.sinks import RedisOutputs

pytestmark = pytest.mark.integration


def _alert(window_start: int, event: str = "distress") -> Alert:
    return Alert(id=alert_id(event, "hq", window_start), event=event, site="hq", streams=["cam"],
                 window_start=window_start, window_end=window_start + 2000, score=0.9, threshold=0.8,
                 terms=[TermContribution(signal="video.person.count", weight=0.9, value=2, g=1, contribution=0.9)],
                 severity="high")


@pytest.fixture
async def outputs(fw_config: FusewatchConfig) -> AsyncIterator[RedisOutputs]:
    sink = RedisOutputs(fw_config.redis)
    try:
        yield sink
    finally:
        await sink.close()


async def test_the_same_alert_is_stored_and_announced_once(outputs: RedisOutputs) -> None:
    pubsub = outputs.client.pubsub()
    await pubsub.subscribe(outputs.keys.live)
    await pubsub.get_message(timeout=1.0)  # subscription confirmation
    for _ in range(3):
        await outputs.publish_alert(_alert(1000))
    await outputs.publish_alert(_alert(3000))
    entries = await outputs.client.xrange(outputs.keys.alerts)
    assert [json.loads(fields[b"alert"])["window_start"] for _, fields in entries] == [1000, 3000]
    assert outputs.counters.alerts_published == 2 and outputs.counters.alerts_duplicate == 2
    live = []
    for _ in range(2):
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=2.0)
        assert message is not None
        live.append(Alert.model_validate_json(message["data"]).window_start)
    assert live == [1000, 3000]
    await pubsub.aclose()


async def test_latest_summary_per_stream_only_moves_forward(outputs: RedisOutputs) -> None:
    for start in (4000, 2000, 6000):
        await outputs.publish_summary(Summary(stream="cam", site="hq", window_start=start, window_end=start + 2000,
                                              objects={"person": start // 1000}))
    latest = await outputs.client.hget(outputs.keys.latest, "cam")
    assert Summary.model_validate_json(latest).window_start == 6000


async def test_alerts_wait_in_a_bounded_buffer_while_redis_is_down(tmp_path: Path) -> None:
    redis = EmbeddedService("redis", tmp_path)
    redis.start()
    sink = RedisOutputs(RedisConfig(url=f"redis://{redis.address}/0", buffer_max=50))
    try:
        await sink.publish_alert(_alert(0))
        redis.stop()
        for n in range(1, 11):
            await sink.publish_alert(_alert(n * 2000))
        assert sink.pending == 10 and sink.counters.redis_errors >= 1
        redis.start()
        await asyncio.wait_for(sink.flush_with_retry(), 20)
        entries = await sink.client.xrange(sink.keys.alerts)
        assert [json.loads(f[b"alert"])["window_start"] for _, f in entries] == [n * 2000 for n in range(11)]
        assert sink.pending == 0 and sink.counters.buffer_dropped == 0
    finally:
        await sink.close()
        redis.stop()


async def test_a_full_buffer_drops_the_oldest_and_counts_it(tmp_path: Path) -> None:
    redis = EmbeddedService("redis", tmp_path)
    sink = RedisOutputs(RedisConfig(url=f"redis://{redis.address}/0", buffer_max=5))
    try:
        for n in range(8):
            await sink.publish_alert(_alert(n * 2000))
        assert sink.pending == 5 and sink.counters.buffer_dropped == 3
    finally:
        await sink.close()
