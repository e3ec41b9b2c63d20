"""The analyze stage: decoded media in, one `WindowFeatures` per (stream, modality, window) out.

`AnalyzeWorker` holds the per-stream state (video windows waiting for detections, audio
cut into windows, the speech segmenter) and emits features in window order per stream and
modality. Detection is batched across streams (`DetectionBatcher`); loudness, VAD and
Whisper run per stream in order. All inference runs in worker threads.

Delivery (docs/design.md §8): every window remembers the position of the `init` record its first
item was decoded from. `commit_offsets()` gives, per partition, the oldest such position
among windows not yet emitted (or the next offset when nothing is pending), so a worker
restarted from committed offsets decodes from a keyframe and emits the same windows again.
Windows that start before the point a worker began reading a stream are incomplete and
never emitted.

`run_analyze` wires the worker to Kafka: a consumer-group member on `fw.media`, features to
`fw.features` keyed by site, offsets committed only after the broker acknowledged them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, OrderedDict, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from config.schema import FasterWhisperConfig, FusewatchConfig, MotionConfig, SourceConfig, VideoInput
from daemon.analyze.batcher import DetectionBatcher
from daemon.analyze.speech import SpeechSegment, SpeechSegmenter, owned_words
from daemon.analyze.video_windows import VideoFeatureBuilder, VideoWindowState
from daemon.telemetry.metrics import LagGauge, Telemetry
from daemon.telemetry.status import StatusStore, StreamStatus, now_ms
from detectors import registry
from detectors.base import AudioAnalyzer, ObjectDetector, Transcriber
from detectors.keywords import KeywordSpotter
from detectors.motion import MotionGate, MotionSettings
from streams.checkpoint import Checkpoint, merge_offsets
from streams.clock import NS_PER_MS
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
    AudioFeatures,
    Detection,
    Frame,
    SpeechFeatures,
    WindowFeatures,
    Word,
)
from streams.redis_schema import REDIS_DOWN, redis_client
from streams.windows import AudioWindow, AudioWindower, FrameSampler, window_size_ms, window_start
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


@dataclass
class AnalyzeCounters:
    """What the worker did, exported as metrics."""

    windows: Counter[str] = field(default_factory=Counter)
    frames_analysed: int = 0
    frames_dropped: int = 0
    incomplete_windows_skipped: int = 0
    segments_transcribed: int = 0
    inference_seconds: float = 0.0
    analysed_by_stream: Counter[str] = field(default_factory=Counter)
    dropped_by_stream: Counter[str] = field(default_factory=Counter)
    frames_without_motion: int = 0  # analysed with the stream's latest detections: nothing moved
    without_motion_by_stream: Counter[str] = field(default_factory=Counter)
    motion_regions: int = 0
    windows_by_stream: Counter[tuple[str, str]] = field(default_factory=Counter)
    last_window_end: dict[str, int] = field(default_factory=dict)
    partitions_released: int = 0
    item_errors: int = 0


@dataclass
class _SpeechWindow:
    start_ms: int
    end_ms: int
    words: list[Word] = field(default_factory=list)
    language: str | None = None
    probabilities: list[float] = field(default_factory=list)


@dataclass
class _PendingFrame:
    future: asyncio.Future[list[Detection] | None]
    frame: Frame
    window: int


def _reusable(detection: asyncio.Future[list[Detection] | None]) -> bool:
    """Whether a frame without motion may take `detection` (not one that failed or was dropped)."""
    return not detection.done() or (detection.exception() is None and detection.result() is not None)


class _StreamState:
    """Everything the worker keeps for one stream between items."""

    def __init__(
        self, stream: str, site: str, source: SourceConfig | None, worker: AnalyzeWorker, coverage_ns: int
    ) -> None:
        self.stream = stream
        self.site = site
        self.video_enabled = source.video.enabled if source else True
        self.audio_enabled = source.audio.enabled if source else True
        zones = {zone.name: list(zone.polygon) for zone in source.video.zones} if source else {}
        fps = source.video.sample_fps if source else worker.default_fps
        self.video = VideoFeatureBuilder(worker.labels, zones, fps, worker.snapshot_dir)
        motion = source.video.motion if source else MotionConfig()
        self.motion = (
            MotionGate(
                MotionSettings(
                    threshold=motion.threshold,
                    min_area=motion.min_area,
                    masks=tuple(tuple(mask) for mask in motion.masks),
                ),
                recheck_ns=round(motion.recheck * 1e9),
            )
            if motion.enabled
            else None
        )
        self.last_detection: asyncio.Future[list[Detection] | None] | None = None
        self.video_windows: OrderedDict[int, VideoWindowState] = OrderedDict()
        self.pending: deque[_PendingFrame] = deque()
        self.video_frontier = -1
        self.audio = AudioWindower(worker.size_ms)
        self.audio_queue: asyncio.Queue[AudioWindow | None] = asyncio.Queue(maxsize=64)  # ~2 min, 8 MB
        self.audio_task: asyncio.Task[None] | None = None
        self.segmenter = SpeechSegmenter(
            pad_s=worker.segment_pad_s, max_segment_s=worker.max_segment_s, min_silence_s=worker.min_silence_s
        )
        self.speech_windows: OrderedDict[int, _SpeechWindow] = OrderedDict()
        self.coverage_ns = coverage_ns
        self.unfinished: dict[tuple[str, int], SourcePosition] = {}
        self.partition: tuple[str, int] | None = None
        self.opening: SourcePosition | None = None  # its first init, until a window of it is unfinished
        self.released = False

    def covered(self, start_ms: int) -> bool:
        return start_ms * NS_PER_MS >= self.coverage_ns

    def oldest_unfinished(self) -> SourcePosition | None:
        positions = [*self.unfinished.values(), *([self.opening] if self.opening else [])]
        return min(positions, key=lambda p: p.offset, default=None)

    def mark_unfinished(self, modality: str, start: int, restart: SourcePosition) -> None:
        self.unfinished.setdefault((modality, start), restart)
        self.opening = None


_SEGMENTER_DEFAULTS = FasterWhisperConfig(type="faster-whisper")
"""Where no transcriber is configured, speech is still segmented (for the windows), by its defaults."""


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
        speech = config.detectors.transcriber
        segmenting = speech if speech is not None else _SEGMENTER_DEFAULTS
        self.segment_pad_s = segmenting.segment_overlap
        self.min_silence_s = segmenting.min_silence
        self.max_segment_s = segmenting.max_segment
        self._spotter = KeywordSpotter(list(speech.keywords) if speech is not None else [])
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
            name: (state.site, state.partition[1] if state.partition else None) for name, state in self._streams.items()
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
                        if state.audio_task is not None:
                            state.audio_task.cancel()
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
            if isinstance(item, Frame):
                if state.video_enabled:
                    await self._on_frame(state, item, decoded.restart)
            elif isinstance(item, AudioChunk) and state.audio_enabled:
                await self._on_audio(state, item, decoded.restart)
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
            coverage = 0 if decoded.origin_seq == 0 else decoded.origin_wall_ns
            state = _StreamState(item.stream, item.site, self._sources.get(item.stream), self, coverage)
            state.partition = (decoded.position.topic, decoded.position.partition)
            state.opening = decoded.restart
            self._streams[item.stream] = state
            assert self._tasks is not None, "AnalyzeWorker.handle runs inside run()"
            state.audio_task = self._tasks.create_task(self._audio_loop(state))
        return state

    # ------------------------------------------------------------------ video

    async def _on_frame(self, state: _StreamState, frame: Frame, restart: SourcePosition | None) -> None:
        start = window_start(frame.wall_ns, self.size_ms)
        if not state.covered(start):
            self.counters.incomplete_windows_skipped += start not in state.video_windows
            return
        if start not in state.video_windows:
            state.video_windows[start] = VideoWindowState(start, start + self.size_ms)
            if restart is not None:
                state.mark_unfinished("video", start, restart)
        state.video_frontier = max(state.video_frontier, start)
        last = state.last_detection
        if not await self._moved(state, frame, start) and last is not None and _reusable(last):
            future = last
            self.counters.frames_without_motion += 1
            self.counters.without_motion_by_stream[state.stream] += 1
        else:
            future = state.last_detection = await self.batcher.submit(frame)
        state.pending.append(_PendingFrame(future, frame, start))
        await self._drain_video(state)

    async def _moved(self, state: _StreamState, frame: Frame, window: int) -> bool:
        """Whether the detector must see `frame`, of window `window` (always without a motion gate)."""
        gate = state.motion
        if gate is None:
            return True
        loop = asyncio.get_running_loop()
        moved = await loop.run_in_executor(
            self._motion_executor, gate.needs_detection, frame.image, frame.wall_ns, window
        )
        self.counters.motion_regions += len(gate.regions)
        return moved

    async def _drain_loop(self) -> None:
        while True:
            await self._results.wait()
            self._results.clear()
            for state in list(self._streams.values()):
                await self._drain_video(state)

    async def _drain_video(self, state: _StreamState, final: bool = False) -> None:
        while state.pending and state.pending[0].future.done():
            job = state.pending.popleft()
            failure = job.future.exception()
            detections = job.future.result() if failure is None else None
            window = state.video_windows.get(job.window)
            if window is None:
                continue
            if failure is not None:  # the window goes on without this frame, as with a dropped one
                await self._failed(state.stream, None, "frame not detected", failure)
                self.counters.frames_dropped += 1
                self.counters.dropped_by_stream[state.stream] += 1
            elif detections is None:
                self.counters.frames_dropped += 1
                self.counters.dropped_by_stream[state.stream] += 1
            else:
                self.counters.frames_analysed += 1
                self.counters.analysed_by_stream[state.stream] += 1
            state.video.add(window, detections, job.frame.image, job.frame.wall_ns)
        waiting = {job.window for job in state.pending}
        for start in list(state.video_windows):
            if (start < state.video_frontier or final) and start not in waiting:
                window = state.video_windows.pop(start)
                features = state.video.close(window, state.stream, state.site)
                await self._emit(
                    state,
                    "video",
                    start,
                    WindowFeatures(
                        stream=state.stream,
                        site=state.site,
                        modality="video",
                        window_start=start,
                        window_end=window.end_ms,
                        video=features,
                        latency_ms=self._latency(window.end_ms),
                    ),
                )
            else:
                break

    # ------------------------------------------------------------------ audio and speech

    async def _on_audio(self, state: _StreamState, chunk: AudioChunk, restart: SourcePosition | None) -> None:
        start = window_start(chunk.wall_ns, self.size_ms)
        if state.covered(start) and restart is not None:
            state.mark_unfinished("audio", start, restart)
            if self._transcriber is not None:
                state.mark_unfinished("speech", start, restart)
        for window in state.audio.feed(chunk):
            await self._queue_audio(state, window)

    async def _queue_audio(self, state: _StreamState, window: AudioWindow) -> None:
        if state.released:
            return
        if state.covered(window.start_ms):
            await state.audio_queue.put(window)
        else:
            self.counters.incomplete_windows_skipped += 1

    async def _audio_loop(self, state: _StreamState) -> None:
        loop = asyncio.get_running_loop()
        while (window := await state.audio_queue.get()) is not None:
            pcm = window.pcm()
            began = time.perf_counter()
            try:
                stats = await loop.run_in_executor(self._audio_executor, self._analyzer.analyze, pcm)
            except Exception as exc:  # this window is lost, counted and reported; the stream goes on
                await self._failed(state.stream, None, f"audio window {window.start_ms} not analysed", exc)
                state.unfinished.pop(("audio", window.start_ms), None)
                state.unfinished.pop(("speech", window.start_ms), None)
                continue
            self.observe_inference("audio", time.perf_counter() - began)
            await self._emit(
                state,
                "audio",
                window.start_ms,
                WindowFeatures(
                    stream=state.stream,
                    site=state.site,
                    modality="audio",
                    window_start=window.start_ms,
                    window_end=window.end_ms,
                    latency_ms=self._latency(window.end_ms),
                    audio=AudioFeatures(
                        loudness_dbfs=stats.loudness_dbfs,
                        peak_dbfs=stats.peak_dbfs,
                        speech_ratio=stats.speech_ratio,
                        loudness_lufs=stats.loudness_lufs,
                    ),
                ),
            )
            if self._transcriber is None:
                continue
            state.speech_windows[window.start_ms] = _SpeechWindow(window.start_ms, window.end_ms)
            for segment in state.segmenter.feed(window, stats.speech_probabilities, stats.frame_seconds):
                await self._transcribe(state, segment)
            safe = state.segmenter.open_since_ns
            await self._emit_speech(state, window.end_ms * NS_PER_MS if safe is None else safe)
        if self._transcriber is not None:
            for segment in state.segmenter.flush():
                await self._transcribe(state, segment)
            await self._emit_speech(state, None)

    async def _transcribe(self, state: _StreamState, segment: SpeechSegment) -> None:
        assert self._transcriber is not None
        loop = asyncio.get_running_loop()
        began = time.perf_counter()
        try:
            transcript = await loop.run_in_executor(self._audio_executor, self._transcriber.transcribe, segment.audio)
        except Exception as exc:  # its windows are emitted without these words
            await self._failed(state.stream, None, "speech segment not transcribed", exc)
            return
        self.observe_inference("transcriber", time.perf_counter() - began)
        self.counters.segments_transcribed += 1
        for word in owned_words(segment, transcript):
            target = state.speech_windows.get(window_start((word.start_ns + word.end_ns) // 2, self.size_ms))
            if target is None:
                continue
            target.words.append(
                Word(
                    text=word.text,
                    start_ms=word.start_ns // NS_PER_MS,
                    end_ms=word.end_ns // NS_PER_MS,
                    probability=word.probability,
                )
            )
            target.language = word.language

    async def _emit_speech(self, state: _StreamState, safe_ns: int | None) -> None:
        for start in list(state.speech_windows):
            window = state.speech_windows[start]
            if safe_ns is not None and window.end_ms * NS_PER_MS > safe_ns:
                break
            del state.speech_windows[start]
            words = sorted(window.words, key=lambda w: w.start_ms)
            text = " ".join(word.text for word in words)
            confidence = round(sum(w.probability for w in words) / len(words), 4) if words else None
            await self._emit(
                state,
                "speech",
                start,
                WindowFeatures(
                    stream=state.stream,
                    site=state.site,
                    modality="speech",
                    window_start=start,
                    window_end=window.end_ms,
                    latency_ms=self._latency(window.end_ms),
                    speech=SpeechFeatures(
                        text=text,
                        words=words,
                        language=window.language,
                        confidence=confidence,
                        keywords=self._spotter.find(text),
                    ),
                ),
            )

    # ------------------------------------------------------------------ lifecycle

    async def _end_stream(self, stream: str) -> None:
        state = self._streams.get(stream)
        if state is None:  # released by a rebalance meanwhile
            return
        if state.pending:  # a failed detection is reported by _drain_video, not raised here
            await asyncio.wait([job.future for job in state.pending])
        await self._drain_video(state, final=True)
        for window in state.audio.flush():
            await self._queue_audio(state, window)
        if not state.released:
            await state.audio_queue.put(None)
        if state.audio_task is not None:
            await asyncio.wait([state.audio_task])  # not cancelled with it if the stream is released meanwhile
        state.unfinished.clear()
        if self._streams.get(stream) is state:
            del self._streams[stream]

    async def _emit(self, state: _StreamState, modality: str, start: int, features: WindowFeatures) -> None:
        if state.released:
            return
        await self._sink.emit(features)
        self.counters.windows[modality] += 1
        self.counters.windows_by_stream[(state.stream, modality)] += 1
        self.counters.last_window_end[state.stream] = max(
            self.counters.last_window_end.get(state.stream, 0), features.window_end
        )
        state.unfinished.pop((modality, start), None)

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
            if state.partition in keys:
                state.released = True
                if state.audio_task is not None:
                    state.audio_task.cancel()
                while not state.audio_queue.empty():  # wakes the loop if it waits to put a window
                    state.audio_queue.get_nowait()
                del self._streams[stream]
        for key in keys:
            self._last_position.pop(key, None)
        self.counters.partitions_released += len(keys)

    def unfinished_positions(self) -> dict[tuple[str, int], int]:
        """Per partition: the init of the oldest window not yet emitted; no commit may pass it."""
        held: dict[tuple[str, int], int] = {}
        for state in self._streams.values():
            oldest = state.oldest_unfinished()
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
            reporting = tasks.create_task(reporter.run(report_every))
            await worker.run(
                media.items(idle_timeout=idle_timeout, stop=stop, on_idle=checkpoint.maybe_commit),
                on_item=maybe_commit,
                finish=lambda: stop is None or not stop.is_set(),
            )
            await checkpoint.commit()
            reporting.cancel()
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
