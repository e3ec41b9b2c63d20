"""The index role (docs/design.md §13): `fw.features` and `fw.alerts` → moments in the search index.

A consumer group on both topics. Each record is kept in the `WindowLog` under its (stream,
window); the aligned blocks whose records changed are rebuilt into moments
(`daemon.search.moments`), the moments that changed are embedded and upserted, those a
rebuild no longer makes are deleted, and only then are offsets committed. A record read
again changes nothing; a window that arrives late rebuilds its block. A record that is not
valid JSON of its topic is counted, logged and dead-lettered; the role goes on. Moments
and window records older than `search.retention` are forgotten every few minutes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from config.schema import FusewatchConfig, SearchConfig
from daemon.search.index import MomentIndex
from daemon.search.moments import block_of, build_moments
from daemon.search.store import open_index
from daemon.search.windows import WindowLog
from daemon.telemetry.metrics import Telemetry
from detectors.text_embedding import TextEmbedder, load_embedder
from streams.checkpoint import Checkpoint
from streams.kafka import DeadLetters, SourcePosition, ensure_topics, make_consumer, make_producer
from streams.models import WINDOW_FEATURES, Alert
from streams.wire import WireRecord

log = logging.getLogger(__name__)
_RETENTION_EVERY_S = 300.0

Block = tuple[str, str, int]
"""(site, stream, block start)"""


@dataclass
class IndexCounters:
    """What the index role did (the fast tests and `fusewatch status` read them)."""

    records: int = 0
    unchanged: int = 0  # records read again, identical: nothing rebuilt
    malformed: int = 0
    blocks: int = 0
    upserted: int = 0
    deleted: int = 0
    moments: int = 0  # in the index when the role stopped


class MomentIndexer:
    """Window records and alerts → moments in the index, block by block (blocking: run it in a thread)."""

    def __init__(self, config: SearchConfig, windows: WindowLog, index: MomentIndex, embedder: TextEmbedder) -> None:
        self._config = config
        self._block_ms = max(round(config.moment_max * 1000), 1)
        self.windows = windows
        self.index = index
        self._embedder = embedder
        self.counters = IndexCounters()

    def add(self, features: Sequence[Any], alerts: Sequence[Alert]) -> None:
        """Keep the records, rebuild the blocks they changed, and make it durable."""
        dirty: set[Block] = set()
        for record in features:
            self.counters.records += 1
            if self.windows.put_features(record):
                dirty.add((record.site, record.stream, block_of(record.window_start, self._block_ms)[0]))
            else:
                self.counters.unchanged += 1
        for alert in alerts:
            self.counters.records += 1
            streams = self.windows.put_alert(alert)
            self.counters.unchanged += not streams
            dirty |= {(alert.site, stream, block_of(alert.window_start, self._block_ms)[0]) for stream in streams}
        for block in sorted(dirty):
            self._rebuild(*block)
        self.windows.commit()

    def _rebuild(self, site: str, stream: str, start: int) -> None:
        parts, alerts = self.windows.block(stream, start, start + self._block_ms)
        moments = build_moments(site, stream, parts, alerts, self._config)
        possible = sorted({f"{stream}@{part.window_start}" for part in parts})
        existing = {moment.id: moment for moment in self.index.get(possible)}
        changed = [moment for moment in moments if existing.get(moment.id) != moment]
        stale = sorted(existing.keys() - {moment.id for moment in moments})
        if stale:
            self.index.delete(stale)
            self.counters.deleted += len(stale)
        if changed:
            self.index.upsert(changed, self._embedder.embed([m.description for m in changed]))
            self.counters.upserted += len(changed)
        self.counters.blocks += 1

    def forget_before(self, now_ms: int) -> int:
        """Retention: moments and records older than `search.retention`."""
        horizon = now_ms - round(self._config.retention * 1000)
        return self.index.delete_before(horizon) + self.windows.delete_before(horizon)


def open_indexer(config: SearchConfig, embedder: TextEmbedder | None = None) -> MomentIndexer:
    """The index and window log under `search.path`, with the sentence model (loaded here when not given)."""
    root = Path(config.path)
    return MomentIndexer(config, WindowLog(root), open_index(root / "moments"), embedder or load_embedder())


async def run_index(
    config: FusewatchConfig,
    stop: asyncio.Event | None = None,
    idle_timeout: float | None = None,
    telemetry: Telemetry | None = None,
    embedder: TextEmbedder | None = None,
) -> MomentIndexer:
    """The index role until `stop` (or `idle_timeout` seconds without records)."""
    await ensure_topics(config.kafka)
    indexer = await asyncio.to_thread(open_indexer, config.search, embedder)
    role = _IndexRole(config, stop or asyncio.Event(), telemetry or Telemetry(), indexer)
    try:
        await role.run(idle_timeout)
    finally:
        indexer.counters.moments = await asyncio.to_thread(indexer.index.count)
        await asyncio.to_thread(indexer.windows.close)
        await asyncio.to_thread(indexer.index.close)
    return indexer


class _IndexRole:
    """One run of the index role: its consumer, dead letters, checkpoint and poll loop."""

    def __init__(self, config: FusewatchConfig, stop: asyncio.Event, telemetry: Telemetry, indexer: MomentIndexer):
        self.config, self.stop, self.telemetry, self.indexer = config, stop, telemetry, indexer
        self.producer = make_producer(config.kafka)
        self.consumer = make_consumer(config.kafka, group=f"{config.kafka.group_prefix}-index")
        self.dead = DeadLetters(self.producer, config.kafka.topics.dead_letter, stage="index")
        self.checkpoint = Checkpoint(self.consumer, "index", flush=self.flush, reset=config.kafka.offset_reset)

    async def flush(self) -> bool:
        await self.dead.flush()
        return True

    async def run(self, idle_timeout: float | None) -> None:
        topics = self.config.kafka.topics
        self.consumer.subscribe([topics.features, topics.alerts], listener=self.checkpoint.listener())
        await self.producer.start()
        await self.consumer.start()
        self.telemetry.loaded.add("index")
        try:
            await self._poll(idle_timeout, time.time)
            await self.checkpoint.commit()
        finally:
            self.telemetry.loaded.discard("index")
            await self.consumer.stop()
            await self.producer.stop()

    async def _poll(self, idle_timeout: float | None, wallclock: Callable[[], float]) -> None:
        idle, forgotten = 0.0, 0.0
        while not self.stop.is_set():
            if time.monotonic() - forgotten > _RETENTION_EVERY_S:
                await asyncio.to_thread(self.indexer.forget_before, round(wallclock() * 1000))
                forgotten = time.monotonic()
            batches = await self.consumer.getmany(timeout_ms=500, max_records=500)
            fetched_in = self.checkpoint.revocations.epoch
            records = [r for batch in batches.values() for r in batch]
            idle = 0.0 if records else idle + 0.5
            if records:
                async with self.checkpoint.lock:
                    await self._handle(records, fetched_in)
                await self.checkpoint.maybe_commit()
            if idle_timeout is not None and idle >= idle_timeout:
                return

    async def _handle(self, records: list[Any], fetched_in: int) -> None:
        features, alerts = [], []
        # A partition revoked while this batch waited is read again from its committed offset.
        fresh = [r for r in records if not self.checkpoint.revocations.stale(r.topic, r.partition, fetched_in)]
        for record in fresh:
            parsed = await self._parse(record)
            if isinstance(parsed, Alert):
                alerts.append(parsed)
            elif parsed is not None:
                features.append(parsed)
        await asyncio.to_thread(self.indexer.add, features, alerts)
        for record in fresh:
            self.checkpoint.processed(record.topic, record.partition, record.offset)

    async def _parse(self, record: Any) -> Any:
        try:
            if record.topic == self.config.kafka.topics.alerts:
                return Alert.model_validate_json(record.value or b"")
            return WINDOW_FEATURES.validate_json(record.value or b"")
        except ValidationError as exc:
            self.indexer.counters.malformed += 1
            reason = f"invalid {'Alert' if record.topic == self.config.kafka.topics.alerts else 'WindowFeatures'}: "
            reason += f"{exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}"
            wire = WireRecord(record.key, record.value, list(record.headers or ()))
            await self.dead.send(wire, SourcePosition(record.topic, record.partition, record.offset), reason)
            return None
