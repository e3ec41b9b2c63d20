"""The clips role (docs/design.md §12): every alert's streams as MP4 clips, cut from `fw.media`.

A consumer group on `fw.alerts`. For each alert and each of its streams, the span from
`pre_roll` before the alert's window (from the keyframe at or before) to `post_roll` after
it is read back from `fw.media` and remuxed into the clip store as `<alert id>-<stream>`;
the `Clip` record then goes to Redis (`P:clips:<alert id>`) and `fw.clips`. The role waits
for the post-roll to be on the topic (at most `clips.wait` past it) before cutting.

Idempotent by alert id: a clip already in the store is not cut again, only its record is
published again, so a worker that restarts before its commit writes no file twice. An
alert that is not valid JSON, or whose clip cannot be cut (the media is beyond the topic's
retention, the stream sent nothing then), is logged, counted and dead-lettered with the
reason; the role goes on with the next alert.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from config.schema import ClipsConfig, FusewatchConfig
from daemon.telemetry.metrics import Telemetry
from streams.checkpoint import Checkpoint
from streams.clip_store import ClipStore, open_store
from streams.clipping import cut_clip
from streams.kafka import DeadLetters, PendingAcks, SourcePosition, ensure_topics, make_consumer, make_producer
from streams.media_span import BeyondRetention, MediaSpanReader, SpanError, SpanSource
from streams.models import Alert, Clip
from streams.redis_schema import RedisKeys, redis_client, until_redis
from streams.remux import RemuxError
from streams.wire import WireRecord

log = logging.getLogger(__name__)
_PRUNE_EVERY_S = 60.0
_END_MARGIN_MS = 1000  # past the clip's end, for the packets stamped just before it to arrive


@dataclass
class ClipCounters:
    """What the role did, by outcome (exported as `fusewatch_clips`)."""

    written: int = 0
    existing: int = 0
    failed: int = 0
    beyond_retention: int = 0
    malformed: int = 0
    bytes_written: int = 0


class Stopped(Exception):
    """The role was stopped while it waited for a clip's post-roll: the alert is read again later."""


class ClipsWorker:
    """An alert → one clip per stream in the store, each published once it is whole."""

    def __init__(
        self,
        config: ClipsConfig,
        reader: SpanSource,
        store: ClipStore,
        publish: Callable[[Clip], Awaitable[None]],
        stop: asyncio.Event | None = None,
        wallclock: Callable[[], float] = time.time,
    ) -> None:
        self._config = config
        self._reader = reader
        self.store = store
        self._publish = publish
        self._stop = stop or asyncio.Event()
        self._wallclock = wallclock
        self.counters = ClipCounters()
        self.cut_seconds: list[float] = []  # of the clips written since the last `take_cut_seconds`

    async def handle(self, alert: Alert) -> list[str]:
        """Clip every stream of `alert`; the reasons of the clips that could not be cut."""
        reasons = []
        for stream in alert.streams:
            reason = await self._clip(alert, stream)
            if reason is not None:
                reasons.append(f"clip of {stream}: {reason}")
        return reasons

    def take_cut_seconds(self) -> list[float]:
        taken, self.cut_seconds = self.cut_seconds, []
        return taken

    async def _clip(self, alert: Alert, stream: str) -> str | None:
        name = f"{alert.id}-{stream}"
        existing = await asyncio.to_thread(self.store.record, name)
        if existing is not None:
            self.counters.existing += 1
            await self._publish(existing)
            return None
        from_ms = alert.window_start - round(self._config.pre_roll * 1000)
        to_ms = alert.window_end + round(self._config.post_roll * 1000)
        await self._until_past(to_ms)
        staging = await asyncio.to_thread(self.store.staging_file)
        try:
            clip = await cut_clip(
                self._reader, stream, from_ms, to_ms, time.monotonic() + self._config.wait, staging, name, alert.id
            )
            await asyncio.to_thread(self.store.put, clip, staging)
        except BeyondRetention as exc:
            self.counters.beyond_retention += 1
            return str(exc)
        except (SpanError, RemuxError) as exc:
            self.counters.failed += 1
            return str(exc)
        finally:
            with contextlib.suppress(FileNotFoundError):
                staging.unlink()
        self.counters.written += 1
        self.counters.bytes_written += clip.bytes
        self.cut_seconds.append(clip.cut_ms / 1000)
        log.info(
            "clip %s: %d bytes, %.1f s, cut in %.0f ms",
            name,
            clip.bytes,
            (clip.end_ms - clip.start_ms) / 1000,
            clip.cut_ms,
        )
        await self._publish(clip)
        return None

    async def _until_past(self, to_ms: int) -> None:
        """Wait (at most `clips.wait`) until the wallclock is past the clip's end; `Stopped` if stopped meanwhile."""
        now_ms = round(self._wallclock() * 1000)
        delay = min(max(to_ms + _END_MARGIN_MS - now_ms, 0) / 1000, self._config.wait)
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)
        if self._stop.is_set():
            raise Stopped


async def run_clips(
    config: FusewatchConfig,
    stop: asyncio.Event | None = None,
    idle_timeout: float | None = None,
    telemetry: Telemetry | None = None,
) -> ClipsWorker:
    """The clips role until `stop` (or `idle_timeout` seconds without alerts)."""
    await ensure_topics(config.kafka)
    role = _ClipsRole(config, stop or asyncio.Event(), telemetry or Telemetry())
    return await role.run(idle_timeout)


class _ClipsRole:
    """One run of the clips role: its clients, the worker, the checkpoint and the poll loop."""

    def __init__(self, config: FusewatchConfig, stop: asyncio.Event, telemetry: Telemetry) -> None:
        self.config, self.stop, self.metrics = config, stop, telemetry.metrics
        self.mirror = self.metrics.mirror()
        self.keys = RedisKeys(config.redis.key_prefix)
        self.redis = redis_client(config.redis)
        self.producer = make_producer(config.kafka)
        self.consumer = make_consumer(config.kafka, group=f"{config.kafka.group_prefix}-clips")
        self.reader = MediaSpanReader(config.kafka, config.clips.max_keyframe_interval)
        self.acks = PendingAcks()
        self.dead = DeadLetters(self.producer, config.kafka.topics.dead_letter, stage="clips")
        self.worker = ClipsWorker(config.clips, self.reader, open_store(config.clips.store), self.publish, stop)
        self.checkpoint = Checkpoint(self.consumer, "clips", flush=self.flush, reset=config.kafka.offset_reset)

    async def publish(self, clip: Clip) -> None:
        """The clip's record to Redis (retried while Redis is down) and to `fw.clips`, keyed by alert id."""
        key = self.keys.clips_of(clip.alert_id or clip.id)

        async def to_redis() -> None:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hset(key, clip.stream, clip.model_dump_json())
                pipe.expire(key, max(round(self.config.clips.store.max_age), 1))
                await pipe.execute()

        await until_redis(to_redis, self.stop, "clips")
        self.acks.add(
            await self.producer.send(
                self.config.kafka.topics.clips,
                key=(clip.alert_id or clip.id).encode(),
                value=clip.model_dump_json().encode(),
            )
        )

    async def flush(self) -> bool:
        await asyncio.gather(self.acks.wait(), self.dead.flush())
        return True

    async def handle(self, record: Any, fetched_in: int) -> None:
        if self.checkpoint.revocations.stale(record.topic, record.partition, fetched_in):
            return
        position = SourcePosition(record.topic, record.partition, record.offset)
        try:
            alert = Alert.model_validate_json(record.value or b"")
        except ValidationError as exc:
            self.worker.counters.malformed += 1
            reasons = [f"invalid Alert: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}"]
        else:
            reasons = await self.worker.handle(alert)
        if reasons:
            wire = WireRecord(record.key, record.value, list(record.headers or ()))
            await self.dead.send(wire, position, "; ".join(reasons))
        self.checkpoint.processed(record.topic, record.partition, record.offset)

    def export(self) -> None:
        counters, mirror, clips = self.worker.counters, self.mirror, self.metrics.clips
        for outcome in ("written", "existing", "failed", "beyond_retention"):
            mirror.sync(clips, getattr(counters, outcome), outcome)
        mirror.sync(self.metrics.clip_bytes, counters.bytes_written)
        mirror.sync(self.metrics.dead_letters, self.dead.count, "clips")
        for seconds in self.worker.take_cut_seconds():
            self.metrics.clip_seconds.observe(seconds)

    async def run(self, idle_timeout: float | None) -> ClipsWorker:
        self.consumer.subscribe([self.config.kafka.topics.alerts], listener=self.checkpoint.listener())
        await self.producer.start()
        await self.reader.start()
        await self.consumer.start()
        try:
            await self._poll(idle_timeout)
            await self.checkpoint.commit()
        finally:
            self.export()
            await self.consumer.stop()
            await self.reader.stop()
            await self.producer.stop()
            await self.redis.aclose()
        return self.worker

    async def _poll(self, idle_timeout: float | None) -> None:
        idle, pruned = 0.0, 0.0
        while not self.stop.is_set():
            if time.monotonic() - pruned > _PRUNE_EVERY_S:
                await asyncio.to_thread(self.worker.store.prune)
                pruned = time.monotonic()
            batches = await self.consumer.getmany(timeout_ms=500, max_records=10)
            fetched_in = self.checkpoint.revocations.epoch
            records = [r for batch in batches.values() for r in batch]
            idle = 0.0 if records else idle + 0.5
            for record in records:
                try:
                    async with self.checkpoint.lock:
                        await self.handle(record, fetched_in)
                except Stopped:
                    return
                await self.checkpoint.commit()
                self.export()
            if idle_timeout is not None and idle >= idle_timeout:
                return
