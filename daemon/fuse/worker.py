"""The fuse stage: join every stream and modality of a site per window, score events, publish.

`WindowJoiner` collects `WindowFeatures` per (site, window). Each (stream, modality) is an
input with a watermark (the end of the latest window it delivered). A window closes when
every expected input has delivered it or moved past it — inputs that have been silent for
`windows.grace` seconds are not waited for (a camera that is down must not stop the site)
— and windows of a site close in order, so rules see them in order. Records for a window
that is already closed are counted as late.

`FuseWorker` evaluates the events on each closed window, publishes alerts and summaries
(Redis and Kafka), folds the window into the rolling period summaries (`daemon.fuse.rolling`)
and keeps each rule's small state (streak, cooldown) and the open periods in Redis, so a
restarted worker continues where the last one stopped. Offsets are committed only up to
the first record of the oldest open window, after the outputs are acknowledged. Why this
is not a faust-streaming agent with changelog tables: docs/fuse-without-faust.md.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiokafka import TopicPartition
from pydantic import ValidationError

from config.schema import FusewatchConfig
from daemon.fuse.learned import LearnedRule
from daemon.fuse.rolling import RollingSummarizer
from daemon.fuse.rules import EventRule, JoinedWindow, RuleState, summaries
from daemon.telemetry.metrics import LagGauge, Metrics, Telemetry
from streams.checkpoint import Checkpoint
from streams.kafka import (
    DeadLetters,
    SourcePosition,
    consumer_lag,
    ensure_topics,
    make_consumer,
    make_producer,
)
from streams.models import WINDOW_FEATURES, Alert, PeriodSummary, Summary, WindowFeatures
from streams.redis_schema import until_redis
from streams.sinks import KafkaOutputs, RedisOutputs
from streams.windows import window_size_ms
from streams.wire import WireRecord

log = logging.getLogger(__name__)
Input = tuple[str, str]
"""(stream, modality)"""


class Outputs(Protocol):
    """Where alerts and summaries go (Redis, Kafka, or a list in tests)."""

    async def publish_alert(self, alert: Alert) -> None: ...

    async def publish_summary(self, summary: Summary) -> None: ...

    async def publish_period_summary(self, summary: PeriodSummary) -> None: ...


class RuleStore(Protocol):
    """Keeps rule states, the last closed window and the open period summaries per site across restarts."""

    async def load_rule_states(self, site: str) -> dict[str, str]: ...

    async def save_rule_state(self, site: str, event: str, state_json: str) -> None: ...


@dataclass
class _OpenWindow:
    start: int
    end: int
    features: dict[Input, WindowFeatures] = field(default_factory=dict)
    first: SourcePosition | None = None


@dataclass
class _Site:
    windows: dict[int, _OpenWindow] = field(default_factory=dict)
    watermarks: dict[Input, int] = field(default_factory=dict)
    last_seen: dict[Input, float] = field(default_factory=dict)
    closed_upto: int = -1
    first_seen: float = 0.0


@dataclass
class JoinCounters:
    """Exported as metrics."""

    records: int = 0
    windows_closed: int = 0
    late: int = 0
    duplicates: int = 0
    out_of_range: int = 0
    marks_ignored: int = 0


class OutOfRange(ValueError):
    """A record whose window no site could be waiting for; the message is the dead-letter reason."""


class WindowJoiner:
    """Per-site window join with per-input watermarks and idle inputs (see module doc)."""

    def __init__(
        self,
        config: FusewatchConfig,
        clock: Callable[[], float] = time.monotonic,
        wallclock: Callable[[], float] = time.time,
    ) -> None:
        self._size = window_size_ms(config.windows.size)
        self._grace = config.windows.grace
        self._max_ahead_ms = round(config.windows.max_ahead * 1000)
        self._clock = clock
        self._wallclock = wallclock
        self._sites: dict[str, _Site] = defaultdict(_Site)
        self._site_partition: dict[str, tuple[str, int]] = {}
        self._expected: dict[str, set[Input]] = defaultdict(set)
        speech = config.detectors.transcriber is not None
        for source in config.sources:
            site = config.site_of(source)
            if source.video.enabled:
                self._expected[site].add((source.id, "video"))
            if source.audio.enabled:
                self._expected[site].add((source.id, "audio"))
                if speech:
                    self._expected[site].add((source.id, "speech"))
        self.counters = JoinCounters()

    def resume(self, site: str, closed_upto: int) -> None:
        """Windows up to `closed_upto` were closed by a previous worker: don't close them again.

        A mark beyond the wallclock by more than `max_ahead` (left by a record of a clock gone
        wrong, before such records were refused) is ignored: trusting it would silence the site.
        """
        horizon = self._wall_ms() + self._max_ahead_ms
        if closed_upto > horizon:
            self.counters.marks_ignored += 1
            log.error(
                "fuse: site %r: stored closed window %d is %.0f s ahead of the wallclock; ignored",
                site,
                closed_upto,
                (closed_upto - self._wall_ms()) / 1000,
            )
            return
        state = self._sites[site]
        state.closed_upto = max(state.closed_upto, closed_upto)

    def _wall_ms(self) -> int:
        return int(self._wallclock() * 1000)

    def check(self, features: WindowFeatures) -> None:
        """Raise `OutOfRange` for a record no window of its site can take (it must not move a watermark)."""
        if features.window_end - features.window_start != self._size:
            raise OutOfRange(
                f"window {features.window_start}-{features.window_end} is "
                f"{features.window_end - features.window_start} ms long; this site's windows are "
                f"{self._size} ms"
            )
        site = self._sites.get(features.site)
        newest = max([site.closed_upto, *site.watermarks.values()], default=-1) if site else -1
        reference = max(self._wall_ms(), newest)
        if features.window_start > reference + self._max_ahead_ms:
            raise OutOfRange(
                f"window {features.window_start} of {features.stream}/{features.modality} is "
                f"{(features.window_start - reference) // 1000} s ahead of the site's newest window "
                f"and the wallclock (windows.max_ahead: {self._max_ahead_ms / 1000:g} s)"
            )

    def add(self, features: WindowFeatures, position: SourcePosition | None = None) -> list[JoinedWindow]:
        """Take one record; return the windows of its site that are now complete, oldest first.

        Raises `OutOfRange` (see `check`) without touching any state.
        """
        self.check(features)
        self.counters.records += 1
        site = self._sites[features.site]
        if position is not None:
            self._site_partition[features.site] = (position.topic, position.partition)
        now = self._clock()
        if not site.last_seen:
            site.first_seen = now
        key: Input = (features.stream, features.modality)
        site.last_seen[key] = now
        site.watermarks[key] = max(site.watermarks.get(key, 0), features.window_end)
        self._expected[features.site].add(key)
        if features.window_start <= site.closed_upto:
            self.counters.late += 1
            return self._close_ready(features.site)
        window = site.windows.get(features.window_start)
        if window is None:
            window = site.windows[features.window_start] = _OpenWindow(features.window_start, features.window_end)
        if key in window.features:
            self.counters.duplicates += 1
        else:
            window.features[key] = features
            if window.first is None or (position is not None and position.offset < window.first.offset):
                window.first = position
        return self._close_ready(features.site)

    def release(self, partitions: set[tuple[str, int]]) -> list[str]:
        """Forget the sites read from `partitions` (open windows, watermarks); return them."""
        sites = [site for site, key in self._site_partition.items() if key in partitions]
        for site in sites:
            self._sites.pop(site, None)
            del self._site_partition[site]
        return sites

    def tick(self) -> list[JoinedWindow]:
        """Close windows that only waited for inputs gone idle (call periodically)."""
        return [w for site in list(self._sites) for w in self._close_ready(site)]

    def close_all(self) -> list[JoinedWindow]:
        """Close every open window (end of input)."""
        closed = []
        for name, site in self._sites.items():
            for start in sorted(site.windows):
                closed.append(self._close(name, site, start))
        return closed

    def _close_ready(self, name: str) -> list[JoinedWindow]:
        site = self._sites[name]
        closed = []
        now = self._clock()
        while site.windows:
            start = min(site.windows)
            window = site.windows[start]
            waiting = [
                key
                for key in self._expected[name]
                if site.watermarks.get(key, 0) < window.end and not self._idle(site, key, now)
            ]
            if waiting:
                break
            closed.append(self._close(name, site, start))
        return closed

    def _idle(self, site: _Site, key: Input, now: float) -> bool:
        return now - site.last_seen.get(key, site.first_seen) >= self._grace

    def _close(self, name: str, site: _Site, start: int) -> JoinedWindow:
        window = site.windows.pop(start)
        site.closed_upto = max(site.closed_upto, start)
        self.counters.windows_closed += 1
        ordered = tuple(window.features[key] for key in sorted(window.features))
        return JoinedWindow(name, window.start, window.end, ordered)

    def oldest_open(self) -> dict[tuple[str, int], int]:
        """Per (topic, partition): the offset of the first record of the oldest open window."""
        oldest: dict[tuple[str, int], int] = {}
        for site in self._sites.values():
            for window in site.windows.values():
                if window.first is not None:
                    key = (window.first.topic, window.first.partition)
                    oldest[key] = min(oldest.get(key, window.first.offset), window.first.offset)
        return oldest

    def watermark(self, site: str) -> int:
        return max(self._sites[site].watermarks.values(), default=0)


@dataclass
class FuseCounters:
    """Exported as metrics."""

    alerts: int = 0
    evaluations: int = 0
    summaries: int = 0
    period_summaries: int = 0
    partitions_released: int = 0


class FuseWorker:
    """Closed windows → event evaluations → alerts and summaries, with rule state kept in a store."""

    CLOSED_KEY = "__closed_upto__"

    def __init__(
        self,
        config: FusewatchConfig,
        outputs: list[Outputs],
        store: RuleStore | None = None,
        clock: Callable[[], float] = time.monotonic,
        wallclock: Callable[[], float] = time.time,
    ) -> None:
        self._size = window_size_ms(config.windows.size)
        self.joiner = WindowJoiner(config, clock, wallclock)
        self._rules = [
            EventRule(event, self._size) if event.fusion == "weighted" else LearnedRule(event, self._size)
            for event in config.events
        ]
        self._outputs = outputs
        self._store = store
        self._states: dict[tuple[str, str], RuleState] = {}
        self._dirty: dict[tuple[str, str], str] = {}
        self._loaded: set[str] = set()
        self.rolling = RollingSummarizer(config.summaries)
        self.counters = FuseCounters()
        self.on_alert: Callable[[Alert], None] = lambda alert: None

    async def handle(self, features: WindowFeatures, position: SourcePosition | None = None) -> None:
        """Join one record and evaluate the windows it closes; `OutOfRange` for a record to dead-letter."""
        await self._load(features.site)
        for window in self.joiner.add(features, position):
            await self._on_closed(window)

    async def tick(self) -> None:
        for window in self.joiner.tick():
            await self._on_closed(window)

    async def finish(self) -> None:
        """End of input: close every open window, then show the open periods as they stand (incomplete)."""
        for window in self.joiner.close_all():
            await self._on_closed(window)
        await self._publish_periods(self.rolling.partial())

    async def _load(self, site: str) -> None:
        if site in self._loaded or self._store is None:
            return
        saved = await self._store.load_rule_states(site)
        self._loaded.add(site)
        for rule in self._rules:
            if rule.event.name in saved:
                self._states[(rule.event.name, site)] = RuleState(**json.loads(saved[rule.event.name]))
        if self.CLOSED_KEY in saved:
            self.joiner.resume(site, int(saved[self.CLOSED_KEY]))
        self.rolling.restore(site, saved)

    async def _on_closed(self, window: JoinedWindow) -> None:
        fired: list[Alert] = []
        for rule in self._rules:
            if not rule.applies_to(window.site):
                continue
            state = self._states.setdefault((rule.event.name, window.site), RuleState())
            evaluation = rule.evaluate(window, state)
            self.counters.evaluations += 1
            if evaluation.fired:
                alert = rule.alert(window, evaluation).model_copy(update={"published_ns": time.time_ns()})
                self.counters.alerts += 1
                for output in self._outputs:
                    await output.publish_alert(alert)
                self.on_alert(alert)  # after the outputs: the alert latency metric ends here
                fired.append(alert)
            self._dirty[(window.site, rule.event.name)] = json.dumps(state.to_dict())
        for summary in summaries(window):
            self.counters.summaries += 1
            for output in self._outputs:
                await output.publish_summary(summary)
        await self._publish_periods(self.rolling.fold(window, fired))
        self._dirty[(window.site, self.CLOSED_KEY)] = str(window.window_start)

    async def _publish_periods(self, periods: list[PeriodSummary]) -> None:
        for period in periods:
            self.counters.period_summaries += 1
            for output in self._outputs:
                await output.publish_period_summary(period)

    def release(self, partitions: set[tuple[str, int]]) -> list[str]:
        """Forget the sites of `partitions` (revoked in a rebalance): their windows, rule states and closed mark.

        Call after `persist()`. Whoever reads the partition next loads the stored rule state
        and closed mark, as a restarted worker does, and closes the open windows.
        """
        sites = self.joiner.release(partitions)
        self.counters.partitions_released += len(partitions)
        for site in sites:
            self._loaded.discard(site)
            self.rolling.forget(site)
            for key in [key for key in self._states if key[1] == site]:
                del self._states[key]
            for key in [key for key in self._dirty if key[0] == site]:
                del self._dirty[key]
        return sites

    async def persist(self) -> None:
        """Store rule states and closed windows; call once the outputs before them are acknowledged.

        Saved only then, a restarted worker that re-reads from the committed offsets re-evaluates
        exactly the windows whose outputs may not have been delivered (duplicates are harmless:
        alert ids are deterministic and Redis writes idempotent). The closed marks go last, so a
        stored mark never runs ahead of the stored open periods: windows after the mark are read
        again, and the summarizer skips those it already folded.
        """
        if self._store is None:
            return
        dirty, self._dirty = self._dirty, {}
        marks = {key: value for key, value in dirty.items() if key[1] == self.CLOSED_KEY}
        rules = {key: value for key, value in dirty.items() if key[1] != self.CLOSED_KEY}
        for (site, key), value in [*rules.items(), *self.rolling.take_dirty().items(), *marks.items()]:
            await self._store.save_rule_state(site, key, value)


async def run_fuse(
    config: FusewatchConfig,
    stop: asyncio.Event | None = None,
    idle_timeout: float | None = None,
    commit_every: float = 0.5,
    telemetry: Telemetry | None = None,
    on_alert: Callable[[Alert], None] | None = None,
) -> FuseWorker:
    """A consumer-group worker on `fw.features`: alerts and summaries to Redis and Kafka.

    Offsets are committed only after Kafka acknowledged the outputs and Redis holds them
    (nothing buffered), and only up to the first record of the oldest open window.
    `on_alert` sees each alert this worker fires, after the metrics did.
    """
    await ensure_topics(config.kafka)
    role = _FuseRole(config, stop, telemetry or Telemetry(), commit_every)
    if on_alert is not None:
        role.worker.on_alert = _both(role.worker.on_alert, on_alert)
    return await role.run(idle_timeout)


def _both(first: Callable[[Alert], None], then: Callable[[Alert], None]) -> Callable[[Alert], None]:
    def call(alert: Alert) -> None:
        first(alert)
        then(alert)

    return call


class _FuseRole:
    """One run of the fuse role: its clients, the worker, the checkpoint, and the poll loop."""

    def __init__(
        self, config: FusewatchConfig, stop: asyncio.Event | None, telemetry: Telemetry, commit_every: float
    ) -> None:
        self.config, self.stop, self.telemetry = config, stop, telemetry
        self.metrics = telemetry.metrics
        self.mirror = self.metrics.mirror()
        group = f"{config.kafka.group_prefix}-fuse"
        self.producer = make_producer(config.kafka)
        self.consumer = make_consumer(config.kafka, group=group)
        self.redis_outputs = RedisOutputs(config.redis, summaries_keep=config.summaries.keep)
        self.kafka_outputs = KafkaOutputs(config.kafka, self.producer)
        outputs: list[Outputs] = []
        if config.outputs.redis:
            outputs.append(self.redis_outputs)
        if config.outputs.kafka:
            outputs.append(self.kafka_outputs)
        self.worker = FuseWorker(config, outputs, self.redis_outputs)
        self.worker.on_alert = functools.partial(_observe_alert, self.metrics)
        self.dead = DeadLetters(self.producer, config.kafka.topics.dead_letter, stage="fuse")
        self.lag_gauge = LagGauge(self.metrics, group)
        self.checkpoint = Checkpoint(
            self.consumer,
            "fuse",
            flush=self.flush,
            holds=[self.worker.joiner.oldest_open],
            release=self.release,
            every=commit_every,
            reset=config.kafka.offset_reset,
        )

    async def flush(self) -> bool:
        await asyncio.gather(self.kafka_outputs.flush(), self.dead.flush())
        await self.worker.persist()
        return await self.redis_outputs.flush(raise_on_error=False)  # Redis down: offsets stay until it is back

    def release(self, revoked: set[TopicPartition]) -> None:
        self.worker.release({(tp.topic, tp.partition) for tp in revoked})

    async def export(self) -> None:
        metrics, mirror = self.metrics, self.mirror
        mirror.sync(metrics.late_records, self.worker.joiner.counters.late)
        mirror.sync(metrics.dead_letters, self.dead.count, "fuse")
        metrics.redis_buffer_depth.set(self.redis_outputs.pending)
        mirror.sync(metrics.redis_buffer_dropped, self.redis_outputs.counters.buffer_dropped)
        mirror.sync(metrics.partitions_revoked, self.worker.counters.partitions_released, "fuse")
        mirror.sync(metrics.offset_resets, self.checkpoint.counters.offset_resets, "fuse")
        self.telemetry.consumers["fuse"] = self.checkpoint.health
        self.lag_gauge.show(await consumer_lag(self.consumer, self.checkpoint.positions))

    async def handle(self, record: Any, fetched_in: int) -> None:
        """One record, under the checkpoint's lock: a bad one is dead-lettered, never raised."""
        if self.checkpoint.revocations.stale(record.topic, record.partition, fetched_in):
            return  # revoked while this batch waited: read again from the committed offset
        position = SourcePosition(record.topic, record.partition, record.offset)
        reason = None
        try:
            features = WINDOW_FEATURES.validate_json(record.value or b"")
        except ValidationError as exc:
            reason = f"invalid WindowFeatures: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}"
        else:
            try:
                await until_redis(functools.partial(self.worker.handle, features, position), self.stop, "fuse")
            except OutOfRange as exc:
                self.worker.joiner.counters.out_of_range += 1
                reason = str(exc)
        if reason is not None:
            await self.dead.send(WireRecord(record.key, record.value, list(record.headers or ())), position, reason)
        self.checkpoint.processed(record.topic, record.partition, record.offset)

    async def run(self, idle_timeout: float | None) -> FuseWorker:
        self.consumer.subscribe([self.config.kafka.topics.features], listener=self.checkpoint.listener())
        await self.producer.start()
        await self.consumer.start()
        self.telemetry.loaded.add("fuse")
        try:
            await self._poll(idle_timeout)
            await self.redis_outputs.flush_with_retry(stop=self.stop)
            await self.checkpoint.commit()
            await self.export()
        finally:
            self.telemetry.loaded.discard("fuse")
            self.telemetry.consumers.pop("fuse", None)
            await self.consumer.stop()
            await self.producer.stop()
            await self.redis_outputs.close()
        return self.worker

    async def _poll(self, idle_timeout: float | None) -> None:
        checkpoint, idle = self.checkpoint, 0.0
        while self.stop is None or not self.stop.is_set():
            batches = await self.consumer.getmany(timeout_ms=200, max_records=500)
            fetched_in = checkpoint.revocations.epoch
            records = [r for batch in batches.values() for r in batch]
            idle = 0.0 if records else idle + 0.2
            for record in records:
                async with checkpoint.lock:
                    await self.handle(record, fetched_in)
            async with checkpoint.lock:
                await self.worker.tick()
                if idle_timeout is not None and idle >= idle_timeout:
                    await self.worker.finish()
                    return
            if checkpoint.due():
                await checkpoint.commit()
                await self.export()


def _observe_alert(metrics: Metrics, alert: Alert) -> None:
    metrics.alerts.labels(alert.event, alert.site).inc()
    metrics.alert_latency.labels(alert.event).observe(max(time.time() - alert.window_end / 1000, 0.0))
