"""Alerts and summaries in a real Redis: idempotent, live, buffered through an outage."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from config.schema import FusewatchConfig, RedisConfig
from daemon.console.alerts import AlertStore
from daemon.console.summaries import SummaryStore
from daemon.runtime.services import EmbeddedService
from streams.models import Alert, PeriodSummary, Summary
from streams.sinks import RedisOutputs
from tests.helpers import make_alert

pytestmark = pytest.mark.integration


def _alert(window_start: int, event: str = "distress") -> Alert:
    return make_alert(event, "hq", window_start)


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
        await outputs.publish_summary(
            Summary(
                stream="cam", site="hq", window_start=start, window_end=start + 2000, objects={"person": start // 1000}
            )
        )
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


async def test_alert_id_keys_leave_with_the_entries_maxlen_trims(fw_config: FusewatchConfig) -> None:
    config = fw_config.redis.model_copy(update={"alerts_maxlen": 100})
    sink = RedisOutputs(config)
    try:
        for n in range(300):
            await sink.publish_alert(_alert(n * 2000))
        entries: Any = await sink.client.xrange(sink.keys.alerts)
        assert [json.loads(f[b"alert"])["window_start"] for _, f in entries] == [n * 2000 for n in range(200, 300)]
        id_keys = {key async for key in sink.client.scan_iter(match=sink.keys.alert_id("*"), count=1000)}
        assert id_keys == {sink.keys.alert_id(_alert(n * 2000).id).encode() for n in range(200, 300)}
        assert [await sink.client.ttl(key) for key in id_keys] == [-1] * 100, "an id key lives as long as its entry"

        # Still idempotent while an alert is in the stream; one trimmed away may be stored again.
        for n in (200, 299, 250):
            await sink.publish_alert(_alert(n * 2000))
        assert sink.counters.alerts_duplicate == 3 and await sink.client.xlen(sink.keys.alerts) == 100
        store = AlertStore(sink.client, config.key_prefix)
        found = await store.get(_alert(250 * 2000).id)
        assert found is not None and found.alert.window_start == 250 * 2000
        assert await store.get(_alert(10 * 2000).id) is None
        await sink.publish_alert(_alert(10 * 2000))
        assert sink.counters.alerts_published == 301
        again = await store.get(_alert(10 * 2000).id)
        assert again is not None and again.alert.window_start == 10 * 2000
        assert await sink.client.exists(sink.keys.alert_id(_alert(200 * 2000).id)) == 0, "the oldest made room"
    finally:
        await sink.close()


async def test_an_id_key_whose_entry_is_gone_does_not_block_the_alert(fw_config: FusewatchConfig) -> None:
    sink = RedisOutputs(fw_config.redis)
    try:
        await sink.publish_alert(_alert(2000))
        await sink.client.delete(sink.keys.alerts)  # e.g. an operator cleared the feed
        await sink.publish_alert(_alert(2000))
        entries: Any = await sink.client.xrange(sink.keys.alerts)
        assert [json.loads(f[b"alert"])["window_start"] for _, f in entries] == [2000]
        assert await sink.client.get(sink.keys.alert_id(_alert(2000).id)) == entries[0][0]
    finally:
        await sink.close()


async def test_an_alert_stored_by_an_older_version_leaves_with_its_id_key(fw_config: FusewatchConfig) -> None:
    config = fw_config.redis.model_copy(update={"alerts_maxlen": 100})
    sink = RedisOutputs(config)
    try:
        old = _alert(0)  # as the previous script stored it: no `id` field in the entry, a TTL on the key
        entry = await sink.client.xadd(sink.keys.alerts, {"alert": old.model_dump_json()})
        await sink.client.set(sink.keys.alert_id(old.id), entry, ex=3600)
        for n in range(1, 101):
            await sink.publish_alert(_alert(n * 2000))
        assert await sink.client.xlen(sink.keys.alerts) == 100
        assert await sink.client.exists(sink.keys.alert_id(old.id)) == 0
    finally:
        await sink.close()


def _period(start_min: int, windows: int = 30, complete: bool = True) -> PeriodSummary:
    start = start_min * 60_000
    return PeriodSummary(
        stream="cam",
        site="hq",
        period_s=60,
        period_start=start,
        period_end=start + 60_000,
        complete=complete,
        windows=windows,
        first_window=start,
        last_window=start + (windows - 1) * 2000,
    )


async def test_period_summaries_keep_one_per_period_the_newest_kept_and_read_back_by_time(
    fw_config: FusewatchConfig,
) -> None:
    sink = RedisOutputs(fw_config.redis, summaries_keep=5)
    try:
        await sink.publish_period_summary(_period(0, windows=4, complete=False))  # the end of a replay
        await sink.publish_period_summary(_period(0))  # the period completed later: replaces it
        for minute in range(1, 8):
            await sink.publish_period_summary(_period(minute))
        await sink.publish_period_summary(_period(7))  # emitted again after a restart: still one
        store = SummaryStore(sink.client, fw_config.redis.key_prefix)
        kept = await store.recent("cam", 60)
        assert [s.period_start // 60_000 for s in kept] == [3, 4, 5, 6, 7], "the newest 5, oldest first"
        since = await store.recent("cam", 60, since_ms=5 * 60_000 + 30_000)
        assert [s.period_start // 60_000 for s in since] == [5, 6, 7], "periods that end after `since`"
        assert [s.period_start // 60_000 for s in await store.recent("cam", 60, limit=2)] == [6, 7]
        assert await store.recent("cam", 3600) == [] and await store.recent("other", 60) == []
        await sink.client.zadd(sink.keys.period_summaries("cam", 60), {"not a summary": 9 * 60_000})
        assert len(await store.recent("cam", 60)) == 5 and store.invalid == 1
    finally:
        await sink.close()
