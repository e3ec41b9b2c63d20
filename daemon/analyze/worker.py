"""The analyze stage: decoded media in, one `WindowFeatures` per (stream, modality, window) out.

`AnalyzeWorker` routes each decoded item to its stream's analyzer of that modality
(`VideoWindows`, `AudioWindows` and, behind it, `SpeechWindows`), each owning its window
state and emitting its windows in order through the worker. Detection is batched across
streams (`DetectionBatcher`); loudness, VAD and Whisper run per stream in order. All
inference runs in worker threads.

Delivery (docs/design.md §8): every window remembers the position of the `init` record it
would be decoded again from (`StreamContext.redo_from`: the newest init stamped at or before
the window's start, or, for video, before the start of its motion-gate period).
`commit_offsets()` gives, per partition, the oldest such position among windows not yet
emitted (or the next offset when nothing is pending), so a worker restarted from committed
offsets decodes from a keyframe and emits the same windows again. Windows that start before
the point a worker began reading a stream are incomplete and never emitted.

`run_analyze` wires the worker to Kafka: a consumer-group member on `fw.media`, features to
`fw.features` keyed by site, offsets committed only after the broker acknowledged them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from config.schema import FasterWhisperConfig, FusewatchConfig, VideoInput
from daemon.analyze.audio import AudioWindows
from daemon.analyze.batcher import DetectionBatcher
from daemon.analyze.context import AnalyzeCounters, Shared, StreamContext
from daemon.analyze.snapshots import keep_snapshots
from daemon.analyze.speech import SpeechSegmenter
from daemon.analyze.speech_windows import SpeechWindows
from daemon.analyze.video import VideoWindows
from daemon.telemetry.metrics import LagGauge, Telemetry
from daemon.telemetry.status import StatusStore, StreamStatus, now_ms
from detectors import registry
from detectors.base import AudioAnalyzer, ObjectDetector, Transcriber
from detectors.keywords import KeywordSpotter
from streams.checkpoint import Checkpoint, merge_offsets
from streams.decode import DecodedItem, MediaConsumer, StreamEnded
from streams.kafka import (
    DeadLetters,
    PendingAcks,
    SourcePosition,
    consumer_lag,
    ensure_topics,
    make_consumer,
    make_producer,
)
from streams.models import (
    AudioChunk,
    Frame,
    WindowFeatures,
)
from streams.redis_schema import REDIS_DOWN, redis_client
from streams.windows import FrameSampler, window_size_ms
from streams.wire import WireRecord

log = logging.getLogger(__name__)
OUTPUT_DOWN = (KafkaError,)
"""Failures of the outputs, not of an item: they stop the worker (the supervisor restarts it)."""


async def _ignore_failure(stream: str, position: SourcePosition | None, reason: str) -> None:
    """Where failures go when nobody dead-letters them (tests, in-process evaluation): counted only."""


class FeatureSink(Protocol):
    """Where window features go; `flush` returns once everything emitted is acknowledged."""

    async def emit(self, features: WindowFeatures) -> None: ...

    async def flush(self) -> None: ...


class _StreamState:
    """One stream: its delivery state and the analyzer of each enabled modality."""

    def __init__(self, context: StreamContext, video: VideoWindows | None, audio: AudioWindows | None) -> None:
        self.context = context
        self.video = video
        self.audio = audio


_SPEECH_DEFAULTS = FasterWhisperConfig(type="faster-whisper")
"""How utterances are cut when a transcriber is handed in without a transcriber config (tests, benches)."""


class AnalyzeWorker:
    """Turns decoded items into window features (transport-independent; see `run_analyze`)."""

    def __init__(
        self,
        config: FusewatchConfig,
        detector: ObjectDetector,
        analyzer: AudioAnalyzer,
        transcriber: Transcriber | None,
        sink: FeatureSink,
        snapshot_dir: Path | None = None,
    ) -> None:
        self.config = config
        self.size_ms = window_size_ms(config.windows.size)
        self.default_fps = VideoInput().sample_fps  # a stream not in the config
        self.labels = list(detector.labels)
        self.snapshot_dir = snapshot_dir
        self._speech = config.detectors.transcriber or _SPEECH_DEFAULTS
        self._spotter = KeywordSpotter(list(self._speech.keywords))
        self._analyzer = analyzer
        self._transcriber = transcriber
        self._sink = sink
        self.counters = AnalyzeCounters()
        self._detect_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fw-detect")
        self._audio_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fw-audio")
        self._motion_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fw-motion")
        objects = config.detectors.objects
        self.batcher = DetectionBatcher(
            detector,
            self._detect_executor,
            objects.max_batch,
            objects.max_wait,
            config.detectors.frame_queue,
            config.detectors.when_behind,
            on_inference=self._on_inference,
        )
        self._results = asyncio.Event()
        self._shared = Shared(
            size_ms=self.size_ms,
            counters=self.counters,
            emit=self._emit,
            failed=self._failed,
            observe=lambda model, seconds: self.observe_inference(model, seconds),
            latency=self._latency,
        )
        self._streams: dict[str, _StreamState] = {}
        self._last_position: dict[tuple[str, int], int] = {}
        self._sources = {source.id: source for source in config.sources}
        self._tasks: asyncio.TaskGroup | None = None
        self._logged_failure: dict[str, float] = {}
        self.observe_inference: Callable[[str, float], None] = lambda model, seconds: None
        self.on_failure: Callable[[str, SourcePosition | None, str], Awaitable[None]] = _ignore_failure

    @property
    def streams(self) -> dict[str, tuple[str, int | None]]:
        """Streams open now: site and partition of each."""
        return {
            name: (state.context.site, state.context.partition[1] if state.context.partition else None)
            for name, state in self._streams.items()
        }

    def sample_rates(self) -> dict[str, float]:
        """Frames per second to analyse, per configured stream (others get the default)."""
        return {s.id: (s.video.sample_fps if s.video.enabled else 0.0) for s in self.config.sources}

    def _on_inference(self, seconds: float, frames: int) -> None:
        self.counters.inference_seconds += seconds
        self.observe_inference("detector", seconds)
        self._results.set()

    # ------------------------------------------------------------------ driving

    async def run(
        self,
        items: AsyncIterator[DecodedItem],
        on_item: Callable[[DecodedItem], Awaitable[None]] | None = None,
        finish: Callable[[], bool] = lambda: True,
    ) -> None:
        """Process `items` until they end; then, if `finish()`, close every stream that has not ended.

        A shutdown passes `finish` returning False: open windows stay unfinished, so the
        committed offsets make the next worker redo them from their keyframe.
        """
        try:
            async with asyncio.TaskGroup() as tasks:
                self._tasks = tasks
                batcher = tasks.create_task(self.batcher.run())
                drainer = tasks.create_task(self._drain_loop())
                async for decoded in items:
                    await self.handle(decoded)
                    if on_item is not None:
                        await on_item(decoded)
                if finish():
                    for stream in list(self._streams):
                        await self._end_stream(stream)
                else:
                    for state in self._streams.values():
                        if state.audio is not None:
                            state.audio.cancel()
                batcher.cancel()
                drainer.cancel()
        finally:
            self._tasks = None
            self._detect_executor.shutdown(wait=False, cancel_futures=True)
            self._audio_executor.shutdown(wait=False, cancel_futures=True)
            self._motion_executor.shutdown(wait=False, cancel_futures=True)

    async def handle(self, decoded: DecodedItem) -> None:
        """Take one decoded item; an item that cannot be analysed is reported and skipped, never raised.

        Only the outputs failing (the broker refusing features) stops the worker: that is not
        one item's fault, and losing the window would break at-least-once delivery.
        """
        item = decoded.item
        self._last_position[(decoded.position.topic, decoded.position.partition)] = decoded.position.offset
        try:
            if isinstance(item, StreamEnded):
                if item.stream in self._streams:
                    await self._end_stream(item.stream)
                return
            state = self._state(decoded, item)
            state.context.note_init(decoded.restart, decoded.restart_wall_ns)
            if isinstance(item, Frame):
                if state.video is not None:
                    await state.video.on_frame(item)
            elif isinstance(item, AudioChunk) and state.audio is not None:
                await state.audio.on_audio(item)
        except OUTPUT_DOWN:
            raise
        except Exception as exc:
            await self._failed(item.stream, decoded.position, f"{type(item).__name__} not analysed", exc)

    async def _failed(self, stream: str, position: SourcePosition | None, what: str, exc: BaseException) -> None:
        """Count, log (with the traceback, at most once a minute per stream) and dead-letter one failure."""
        self.counters.item_errors += 1
        reason = f"{what}: {type(exc).__name__}: {exc}"
        now = time.monotonic()
        if now - self._logged_failure.get(stream, -60.0) >= 60.0:
            self._logged_failure[stream] = now
            log.error("analyze: %s of stream %r; the stream goes on", what, stream, exc_info=exc)
        await self.on_failure(stream, position, reason)

    def _state(self, decoded: DecodedItem, item: Frame | AudioChunk) -> _StreamState:
        state = self._streams.get(item.stream)
        if state is None:
            state = self._streams[item.stream] = self._open(decoded, item)
        return state

    def _open(self, decoded: DecodedItem, item: Frame | AudioChunk) -> _StreamState:
        """A stream's first item: its context, and an analyzer for each modality its source enables."""
        context = StreamContext(item.stream, item.site, 0 if decoded.origin_seq == 0 else decoded.origin_wall_ns)
        context.partition = (decoded.position.topic, decoded.position.partition)
        context.origin = decoded.restart
        source = self._sources.get(item.stream)
        video_input = source.video if source is not None else VideoInput()
        video = None
        if video_input.enabled:
            zones = {zone.name: list(zone.polygon) for zone in video_input.zones}
            video = VideoWindows.for_source(
                context,
                self._shared,
                self.labels,
                zones,
                video_input.sample_fps,
                self.snapshot_dir,
                video_input.motion,
                self.batcher,
                self._motion_executor,
            )
        audio = None
        if source is None or source.audio.enabled:
            speech = None
            if self._transcriber is not None:
                segmenter = SpeechSegmenter(
                    threshold=self.config.detectors.audio.vad_threshold,
                    pad_s=self._speech.segment_overlap,
                    max_segment_s=self._speech.max_segment,
                    min_silence_s=self._speech.min_silence,
                )
                speech = SpeechWindows(
                    context, self._shared, segmenter, self._transcriber, self._spotter, self._audio_executor
                )
            audio = AudioWindows(context, self._shared, self._analyzer, self._audio_executor, speech)
            assert self._tasks is not None, "AnalyzeWorker.handle runs inside run()"
            audio.start(self._tasks)
        return _StreamState(context, video, audio)

    # ------------------------------------------------------------------ per modality

    async def _drain_loop(self) -> None:
        while True:
            await self._results.wait()
            self._results.clear()
            for state in list(self._streams.values()):
                if state.video is not None:
                    await state.video.drain()

    async def _end_stream(self, stream: str) -> None:
        state = self._streams.get(stream)
        if state is None:  # released by a rebalance meanwhile
            return
        if state.video is not None:
            await state.video.finish()
        if state.audio is not None:
            await state.audio.finish()
        state.context.unfinished.clear()
        if self._streams.get(stream) is state:
            del self._streams[stream]

    async def _emit(self, context: StreamContext, modality: str, start: int, features: WindowFeatures) -> None:
        if context.released:
            return
        await self._sink.emit(features)
        self.counters.windows[modality] += 1
        self.counters.windows_by_stream[(context.stream, modality)] += 1
        self.counters.last_window_end[context.stream] = max(
            self.counters.last_window_end.get(context.stream, 0), features.window_end
        )
        context.unfinished.pop((modality, start), None)

    def _latency(self, window_end_ms: int) -> dict[str, float]:
        return {"window_end_to_emit": round(time.time() * 1000 - window_end_ms, 1)}

    @property
    def last_positions(self) -> dict[tuple[str, int], int]:
        """Per (topic, partition): the offset of the last record handled."""
        return dict(self._last_position)

    def release(self, partitions: Iterable[TopicPartition]) -> None:
        """Drop every stream read from `partitions` (revoked in a rebalance), emitting nothing more of theirs.

        Their unfinished windows are redone by whoever is assigned the partition next, from
        the committed init; a window in flight here that is finished anyway is not emitted.
        """
        keys = {(tp.topic, tp.partition) for tp in partitions}
        for stream, state in list(self._streams.items()):
            if state.context.partition in keys:
                state.context.released = True
                if state.audio is not None:
                    state.audio.cancel()
                del self._streams[stream]
        for key in keys:
            self._last_position.pop(key, None)
        self.counters.partitions_released += len(keys)

    def unfinished_positions(self) -> dict[tuple[str, int], int]:
        """Per partition: the init of the oldest window not yet emitted; no commit may pass it."""
        held: dict[tuple[str, int], int] = {}
        for state in self._streams.values():
            oldest = state.context.oldest_unfinished()
            if oldest is not None:
                key = (oldest.topic, oldest.partition)
                held[key] = min(held.get(key, oldest.offset), oldest.offset)
        return held

    def commit_offsets(self, unstarted: Mapping[tuple[str, int], int] | None = None) -> dict[TopicPartition, int]:
        """Per partition: the init of the oldest unfinished window, else the next unread offset.

        `unstarted` (`MediaConsumer.unstarted_positions`): inits of streams that gave no item
        yet; no commit passes them either. (What the `Checkpoint` of `run_analyze` commits.)
        """
        return merge_offsets(self._last_position, unstarted or {}, self.unfinished_positions())


class KafkaFeatureSink:
    """`FeatureSink` on `fw.features`, keyed by site; `flush` waits for the broker's acks."""

    def __init__(self, producer: AIOKafkaProducer, topic: str) -> None:
        self._producer = producer
        self._topic = topic
        self._acks = PendingAcks()

    async def emit(self, features: WindowFeatures) -> None:
        self._acks.add(
            await self._producer.send(
                self._topic, key=features.site.encode(), value=features.model_dump_json().encode()
            )
        )

    async def flush(self) -> None:
        await self._acks.wait()


async def run_analyze(
    config: FusewatchConfig,
    stop: asyncio.Event | None = None,
    idle_timeout: float | None = None,
    commit_every: float = 1.0,
    telemetry: Telemetry | None = None,
    report_every: float = 2.0,
) -> AnalyzeCounters:
    """A consumer-group worker on `fw.media` producing `fw.features`, until `stop` or idle.

    With `telemetry`, it also exports metrics and writes per-stream status to Redis every
    `report_every` seconds (best effort: Redis being down never stops the analysis).
    """
    telemetry = telemetry or Telemetry()
    await ensure_topics(config.kafka)
    # Loading weights takes seconds: off the event loop, so the other roles of the process go on.
    detector = await asyncio.to_thread(registry.object_detector, config.detectors.objects)
    analyzer = await asyncio.to_thread(registry.audio_analyzer, config.detectors.audio)
    transcriber = (
        await asyncio.to_thread(registry.transcriber, config.detectors.transcriber)
        if config.detectors.transcriber is not None
        else None
    )
    group = f"{config.kafka.group_prefix}-analyze"
    producer = make_producer(config.kafka)
    consumer = make_consumer(config.kafka, group=group)
    sink = KafkaFeatureSink(producer, config.kafka.topics.features)
    worker = AnalyzeWorker(
        config,
        detector,
        analyzer,
        transcriber,
        sink,
        Path(config.outputs.snapshots_dir) if config.outputs.snapshots_dir else None,
    )
    sampler = FrameSampler(worker.sample_rates(), worker.default_fps)
    media = MediaConsumer(consumer, producer, config.kafka.topics.dead_letter, frame_filter=sampler)
    worker.observe_inference = lambda model, seconds: telemetry.metrics.inference_seconds.labels(model).observe(seconds)
    analyze_dead = DeadLetters(producer, config.kafka.topics.dead_letter, stage="analyze")

    async def dead_letter(stream: str, position: SourcePosition | None, reason: str) -> None:
        # The record itself stays on fw.media; the dead letter names it (stream key, dl-* origin headers).
        origin = position or SourcePosition(config.kafka.topics.media, -1, -1)
        await analyze_dead.send(WireRecord(stream.encode(), None, []), origin, reason)

    worker.on_failure = dead_letter

    async def flush() -> bool:
        await asyncio.gather(sink.flush(), media.flush(), analyze_dead.flush())
        return True

    def release(revoked: set[TopicPartition]) -> None:
        media.release(revoked)
        worker.release(revoked)

    checkpoint = Checkpoint(
        consumer,
        "analyze",
        flush=flush,
        progress=[lambda: media.handled_positions, lambda: worker.last_positions],
        holds=[lambda: media.unstarted_positions, worker.unfinished_positions],
        release=release,
        every=commit_every,
        reset=config.kafka.offset_reset,
    )
    reporter = _AnalyzeReporter(config, telemetry, worker, media, consumer, group, checkpoint)
    consumer.subscribe([config.kafka.topics.media], listener=checkpoint.listener())
    await producer.start()
    await consumer.start()
    telemetry.loaded.add("analyze")

    async def maybe_commit(_: DecodedItem) -> None:
        await checkpoint.maybe_commit()

    try:
        async with asyncio.TaskGroup() as tasks:
            background = [tasks.create_task(reporter.run(report_every))]
            if worker.snapshot_dir is not None:
                retention = config.outputs.snapshots_retention
                background.append(tasks.create_task(keep_snapshots(worker.snapshot_dir, retention)))
            await worker.run(
                media.items(idle_timeout=idle_timeout, stop=stop, on_idle=checkpoint.maybe_commit),
                on_item=maybe_commit,
                finish=lambda: stop is None or not stop.is_set(),
            )
            await checkpoint.commit()
            for task in background:
                task.cancel()
        await reporter.report()
    finally:
        telemetry.loaded.discard("analyze")
        telemetry.consumers.pop("analyze", None)
        media.close()
        await reporter.close()
        await consumer.stop()
        await producer.stop()
    return worker.counters


class _AnalyzeReporter:
    """Mirrors the worker's counters into metrics and writes per-stream status to Redis."""

    def __init__(
        self,
        config: FusewatchConfig,
        telemetry: Telemetry,
        worker: AnalyzeWorker,
        media: MediaConsumer,
        consumer: AIOKafkaConsumer,
        group: str,
        checkpoint: Checkpoint,
    ) -> None:
        self._telemetry = telemetry
        self._checkpoint = checkpoint
        self._metrics = telemetry.metrics
        self._process = telemetry.process
        self._mirror = self._metrics.mirror()
        self._worker = worker
        self._media = media
        self._consumer = consumer
        self._lag_gauge = LagGauge(telemetry.metrics, group)
        self._redis = redis_client(config.redis)
        self._store = StatusStore(self._redis, config.redis.key_prefix)
        self._previous: tuple[float, dict[str, int]] = (time.monotonic(), {})
        self._known: dict[str, tuple[str, int | None]] = {}

    async def run(self, every: float) -> None:
        while True:
            await asyncio.sleep(every)
            await self.report()

    async def report(self) -> None:
        decoded = self._media.counters
        counters = self._worker.counters
        metrics, mirror = self._metrics, self._mirror
        frames_decoded = dict(decoded.frames_by_stream)  # one copy: the decode thread adds streams meanwhile
        for stream, count in frames_decoded.items():
            mirror.sync(metrics.frames_decoded, count, stream)
        for stream, count in counters.analysed_by_stream.items():
            mirror.sync(metrics.frames_analysed, count, stream)
        for stream, count in counters.dropped_by_stream.items():
            mirror.sync(metrics.frames_dropped, count, stream)
        for stream, count in counters.without_motion_by_stream.items():
            mirror.sync(metrics.frames_without_motion, count, stream)
        mirror.sync(metrics.motion_regions, counters.motion_regions)
        for (stream, modality), count in counters.windows_by_stream.items():
            mirror.sync(metrics.windows_emitted, count, stream, modality)
        mirror.sync(metrics.dead_letters, decoded.dead_letters, "decode")  # the stage its dl-stage header names
        mirror.sync(metrics.dead_letters, counters.item_errors, "analyze")
        mirror.sync(metrics.partitions_revoked, counters.partitions_released, "analyze")
        mirror.sync(metrics.offset_resets, self._checkpoint.counters.offset_resets, "analyze")
        lag = await self._lag()
        now = time.monotonic()
        then, before = self._previous
        self._previous = (now, frames_decoded)
        statuses = []
        self._known.update(self._worker.streams)
        assigned = {tp.partition for tp in self._consumer.assignment()}
        # Streams of partitions a rebalance took away are reported by their new worker.
        self._known = {
            stream: (site, partition)
            for stream, (site, partition) in self._known.items()
            if partition is None or partition in assigned
        }
        for stream, (site, partition) in self._known.items():
            frames = frames_decoded.get(stream, 0)
            fps = (frames - before.get(stream, 0)) / (now - then) if before and now > then else 0.0
            statuses.append(
                StreamStatus(
                    stream=stream,
                    site=site,
                    worker=self._process,
                    fps=round(fps, 2),
                    frames_decoded=frames,
                    frames_analysed=counters.analysed_by_stream.get(stream, 0),
                    frames_dropped=counters.dropped_by_stream.get(stream, 0),
                    frames_without_motion=counters.without_motion_by_stream.get(stream, 0),
                    consumer_lag=lag.get(partition) if partition is not None else None,
                    last_window_end=counters.last_window_end.get(stream),
                    updated_ms=now_ms(),
                )
            )
        try:
            await self._store.write_streams(statuses)
        except REDIS_DOWN as exc:
            log.debug("analyze: status not written (redis: %s)", exc)

    async def _lag(self) -> dict[int, int]:
        self._telemetry.consumers["analyze"] = self._checkpoint.health
        lags = await consumer_lag(self._consumer, self._checkpoint.positions)
        self._lag_gauge.show(lags)
        return {tp.partition: lag for tp, lag in lags.items()}

    async def close(self) -> None:
        await self._redis.aclose()
