"""The analyze stage on real recordings with real models, in-process (no broker)."""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiokafka import TopicPartition

from config.schema import (
    DetectorsConfig,
    FasterWhisperConfig,
    FusewatchConfig,
    LoudnessVadConfig,
    SourceConfig,
    VideoInput,
    WindowsConfig,
    Zone,
)
from daemon.analyze.memory import ListFeatureSink
from daemon.analyze.worker import AnalyzeWorker
from detectors import registry
from detectors.base import AudioStats, Pcm16k, RgbImage
from streams.decode import DecodedItem
from streams.kafka import SourcePosition
from streams.models import Detection, MediaMessage, StreamInit, Transcript, WindowFeatures
from streams.sources import ReplayOptions, replay
from streams.testing import ListSink, ManualClock
from streams.windows import FrameSampler
from tests.helpers import decoded_items

DOOR = [(0.0, 0.55), (1.0, 0.55), (1.0, 1.0), (0.0, 1.0)]  # lower part of the hall, where people walk
CEILING = [(0.0, 0.0), (1.0, 0.0), (1.0, 0.08), (0.0, 0.08)]  # nobody walks on the ceiling


def _config() -> FusewatchConfig:
    return FusewatchConfig(
        sources=[
            SourceConfig(
                id="lobby",
                url="lobby.ts",
                video=VideoInput(
                    sample_fps=5, zones=[Zone(name="floor", polygon=DOOR), Zone(name="ceiling", polygon=CEILING)]
                ),
            ),
            SourceConfig(id="street", url="street.ts"),
        ],
        detectors=DetectorsConfig(
            when_behind="wait",
            transcriber=FasterWhisperConfig(type="faster-whisper", keywords=["help", "police", "fire"]),
        ),
    )


@dataclass
class Run:
    messages: list[MediaMessage]
    sink: ListFeatureSink
    worker: AnalyzeWorker
    snapshots: Path | None
    committed: dict[TopicPartition, int]


async def _analyze(
    messages: list[MediaMessage], start: int = 0, snapshots: Path | None = None, commit_at: float = 0.6
) -> Run:
    config = _config()
    sink = ListFeatureSink()
    worker = AnalyzeWorker(
        config,
        registry.object_detector(config.detectors.objects),
        registry.audio_analyzer(config.detectors.audio),
        registry.transcriber(config.detectors.transcriber) if config.detectors.transcriber else None,
        sink,
        snapshots,
    )
    sampler = FrameSampler(worker.sample_rates(), worker.default_fps)
    committed: dict[TopicPartition, int] = {}

    async def commit_midway(decoded: DecodedItem) -> None:
        # What a worker would commit if it crashed once `commit_at` of the recording was read.
        if not committed and decoded.position.offset >= len(messages) * commit_at:
            committed.update(worker.commit_offsets())

    await worker.run(decoded_items(messages[start:], sampler, start=start), on_item=commit_midway)
    return Run(messages, sink, worker, snapshots, committed)


async def _recording(path: Path, stream: str) -> list[MediaMessage]:
    sink = ListSink()
    await replay(str(path), stream, "hq", sink, ReplayOptions(speed=None), ManualClock())
    return sink.messages


@pytest.fixture(scope="module")
async def lobby(media_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Run:
    return await _analyze(await _recording(media_dir / "lobby.ts", "lobby"), snapshots=tmp_path_factory.mktemp("s"))


@pytest.fixture(scope="module")
async def street(media_dir: Path) -> Run:
    return await _analyze(await _recording(media_dir / "street.ts", "street"))


def _windows(features: list[WindowFeatures]) -> list[int]:
    return [f.window_start for f in features]


def test_every_window_of_every_modality_is_emitted_once_in_order(lobby: Run) -> None:
    first, last = lobby.messages[0].wall_ns // 1_000_000, lobby.messages[-1].wall_ns // 1_000_000
    for modality in ("video", "audio", "speech"):
        starts = _windows(lobby.sink.of(modality))
        assert starts == sorted(set(starts)), modality
        assert all(b - a == 2000 for a, b in itertools.pairwise(starts)), modality
        assert starts[0] <= first + 2000 and starts[-1] >= last - 2000, modality
    assert len(lobby.sink.of("video")) >= 39 and lobby.worker.counters.frames_dropped == 0


def test_persons_are_seen_in_at_least_90_percent_of_the_windows(lobby: Run) -> None:
    video = lobby.sink.of("video")
    with_person = [f for f in video if f.video and "person" in f.video.classes]
    assert len(with_person) / len(video) >= 0.9
    assert all(f.video and 8 <= f.video.frames <= 11 for f in video[1:-1]), "5 fps over 2 s windows"
    new_tracks = sum(len(f.video.classes["person"].new_tracks) for f in with_person if f.video)
    assert 5 <= new_tracks <= 200


def test_snapshots_are_written_for_windows_with_detections(lobby: Run) -> None:
    shots = [f.video.snapshot for f in lobby.sink.of("video") if f.video and f.video.snapshot]
    assert len(shots) >= 35 and all(s.startswith("hq/lobby/") and s.endswith(".jpg") for s in shots)
    assert lobby.snapshots is not None
    for shot in shots:
        assert (lobby.snapshots / shot).read_bytes()[:3] == b"\xff\xd8\xff", "a JPEG"


def test_zones_count_people_on_the_floor_and_nobody_on_the_ceiling(lobby: Run) -> None:
    video = [f.video for f in lobby.sink.of("video") if f.video]
    assert sum(v.zones["floor"].entered for v in video) >= 3
    assert max(v.zones["floor"].occupancy for v in video) >= 1
    assert max(v.zones["floor"].dwell_s for v in video) > 1.0
    assert all(v.zones["ceiling"].occupancy == 0 and v.zones["ceiling"].entered == 0 for v in video)


def test_speech_is_transcribed_into_the_windows_where_it_was_said(lobby: Run) -> None:
    base = lobby.messages[0].wall_ns // 1_000_000
    speech = {f.window_start - base: f.speech for f in lobby.sink.of("speech") if f.speech}
    said = " ".join(s.text for offset, s in sorted(speech.items()) if 28_000 <= offset < 36_000)
    assert "help" in said.lower() and "police" in said
    keywords = {k for offset, s in speech.items() if 28_000 <= offset < 36_000 for k in s.keywords}
    assert keywords == {"help", "police"}
    jfk = " ".join(s.text for offset, s in sorted(speech.items()) if 4_000 <= offset < 18_000)
    assert "fellow Americans" in jfk and "your country" in jfk
    quiet = [s for offset, s in speech.items() if 20_000 <= offset < 28_000 or offset >= 68_000]
    assert quiet and all(s.text == "" and not s.words for s in quiet)
    words = [w for s in speech.values() for w in s.words]
    assert all(0 <= w.probability <= 1 and w.start_ms <= w.end_ms for w in words)


def test_loud_sounds_without_speech_give_no_words(street: Run) -> None:
    audio = street.sink.of("audio")
    speech = street.sink.of("speech")
    assert len(audio) == len(speech) >= 15
    base = street.messages[0].wall_ns // 1_000_000
    loudness = {f.window_start - base: f.audio.loudness_dbfs for f in audio if f.audio}
    quiet_floor = min(loudness.values())
    assert loudness[4000] > quiet_floor + 10, "the dog barks at 4 s"
    assert max(v for k, v in loudness.items() if 18_000 <= k < 22_000) > quiet_floor + 10, "alarm at 18 s"
    assert all(f.speech and f.speech.words == [] and f.speech.keywords == [] for f in speech)
    video = street.sink.of("video")
    seen = {label for f in video if f.video for label in f.video.classes}
    assert {"person", "car"} <= seen


async def test_restart_from_committed_offset_re_emits_the_same_windows(lobby: Run) -> None:
    """Crash mid-stream: a new worker starts at the committed offset and emits the same windows."""
    messages = lobby.messages
    (offset,) = lobby.committed.values()
    assert 0.3 * len(messages) < offset < 0.6 * len(messages)
    assert isinstance(messages[offset], StreamInit), "commits point at an init, so decoding restarts cleanly"
    restarted = await _analyze(messages, start=offset)
    original = {(f.modality, f.window_start): f for f in lobby.sink.features}
    again = restarted.sink.features
    assert len(again) >= 20
    for features in again:
        key = (features.modality, features.window_start)
        reference = original[key]
        if features.modality == "video":
            assert features.video and reference.video
            # Track ids restart with a new tracker; everything else is identical.
            assert {k: v.max_count for k, v in features.video.classes.items()} == {
                k: v.max_count for k, v in reference.video.classes.items()
            }
            assert features.video.frames == reference.video.frames
        else:
            assert features.model_dump(exclude={"latency_ms"}) == reference.model_dump(exclude={"latency_ms"})
    # Nothing is lost: every window from the restart point on comes out again.
    restart_ms = messages[offset].wall_ns // 1_000_000
    assert {k for k in original if k[1] >= restart_ms} <= {(f.modality, f.window_start) for f in again}


async def test_a_rebalance_releasing_a_stream_whose_audio_is_behind_does_not_stall_the_worker(media_dir: Path) -> None:
    """The loop may wait to queue an audio window (transcription behind); a release must wake it."""
    gate = threading.Event()
    loudness = registry.audio_analyzer(DetectorsConfig().audio)

    class StuckAnalyzer:
        def analyze(self, audio: Pcm16k) -> AudioStats:
            gate.wait(60)
            return loudness.analyze(audio)

    config = FusewatchConfig(
        sources=[SourceConfig(id="lobby", url="lobby.ts", video=VideoInput(enabled=False))],
        windows=WindowsConfig(size=0.5),
        detectors=DetectorsConfig(transcriber=None),
    )
    sink = ListFeatureSink()
    worker = AnalyzeWorker(config, registry.object_detector(config.detectors.objects), StuckAnalyzer(), None, sink)
    sampler = FrameSampler(worker.sample_rates(), worker.default_fps)
    messages = await _recording(media_dir / "lobby.ts", "lobby")
    taken, released = 0, False

    async def counted() -> AsyncIterator[DecodedItem]:
        nonlocal taken
        async for item in decoded_items(messages, sampler):
            if released:
                return  # as MediaConsumer does: nothing more of a released partition
            taken += 1
            yield item

    running = asyncio.create_task(worker.run(counted()))
    try:
        seen = -1
        while seen != taken:  # the worker stops taking items: its audio queue is full
            seen = taken
            await asyncio.sleep(1.0)
        assert not running.done() and taken < len(messages) and sink.features == []
        released = True
        worker.release({TopicPartition("fw.media", 0)})
        await asyncio.wait_for(running, 60)
    finally:
        gate.set()
    assert worker.streams == {} and worker.counters.partitions_released == 1
    assert sink.features == [], "nothing of a released stream is emitted"


async def test_a_stream_started_mid_recording_holds_commits_at_its_init_until_a_window_is_open(media_dir: Path) -> None:
    """Its first window is incomplete (skipped): until a later one is open, only the init keeps the commit back."""
    messages = await _recording(media_dir / "lobby.ts", "lobby")
    start = next(i for i, m in enumerate(messages) if i > 0 and isinstance(m, StreamInit))
    config = FusewatchConfig(
        sources=[SourceConfig(id="lobby", url="lobby.ts")],
        detectors=DetectorsConfig(when_behind="wait", transcriber=None),
    )
    worker = AnalyzeWorker(
        config,
        registry.object_detector(config.detectors.objects),
        registry.audio_analyzer(config.detectors.audio),
        None,
        ListFeatureSink(),
    )
    sampler = FrameSampler(worker.sample_rates(), worker.default_fps)
    commits: list[int] = []

    async def note(_: DecodedItem) -> None:
        commits.append(worker.commit_offsets()[TopicPartition("fw.media", 0)])

    await worker.run(decoded_items(messages[start : start + 400], sampler, start=start), on_item=note)
    assert worker.counters.incomplete_windows_skipped > 0, "the first window began before this init"
    assert commits[0] == start and all(offset >= start for offset in commits)
    assert commits == sorted(commits), "commits only move forward"


async def test_failing_models_cost_their_items_only_the_stream_goes_on(media_dir: Path) -> None:
    """A detector batch or an audio window that raises is counted and reported; every other window is emitted."""
    detector = registry.object_detector(DetectorsConfig().objects)
    loudness = registry.audio_analyzer(DetectorsConfig().audio)
    calls = itertools.count()

    class FlakyDetector:
        labels = detector.labels

        def detect(self, images: Sequence[RgbImage]) -> list[list[Detection]]:
            if next(calls) % 5 == 2:
                raise ValueError("tensor shape mismatch")
            return detector.detect(images)

    class FlakyAnalyzer:
        def __init__(self) -> None:
            self.windows = 0

        def analyze(self, audio: Pcm16k) -> AudioStats:
            self.windows += 1
            if self.windows == 3:
                raise FloatingPointError("NaN in the VAD")
            return loudness.analyze(audio)

    config = FusewatchConfig(
        sources=[SourceConfig(id="street", url="street.ts")],
        detectors=DetectorsConfig(when_behind="wait", transcriber=None),
    )
    sink = ListFeatureSink()
    worker = AnalyzeWorker(config, FlakyDetector(), FlakyAnalyzer(), None, sink)
    reported: list[str] = []

    async def report(stream: str, position: SourcePosition | None, reason: str) -> None:
        reported.append(reason)

    worker.on_failure = report
    sampler = FrameSampler(worker.sample_rates(), worker.default_fps)
    messages = await _recording(media_dir / "street.ts", "street")
    await worker.run(decoded_items(messages, sampler))
    video, audio = sink.of("video"), sink.of("audio")
    assert any("ValueError: tensor shape mismatch" in r for r in reported)
    assert sum("FloatingPointError: NaN in the VAD" in r for r in reported) == 1
    assert worker.counters.item_errors == len(reported)
    starts = {f.window_start for f in video}
    assert len(video) == len(starts) >= 14, "every video window emitted, frames of failed batches counted as dropped"
    assert worker.counters.frames_dropped > 0
    audio_starts = [f.window_start for f in audio]
    every = set(range(audio_starts[0], audio_starts[-1] + 2000, 2000))
    assert len(every - set(audio_starts)) == 1, "only the failed audio window is missing"
    assert worker.commit_offsets() == {TopicPartition("fw.media", 0): len(messages)}, "nothing holds the commit"


@pytest.mark.parametrize(("threshold", "utterances"), [(0.5, True), (1.0, False)])
async def test_the_vad_threshold_decides_where_utterances_for_whisper_begin(
    media_dir: Path, threshold: float, utterances: bool
) -> None:
    """`detectors.audio.vad_threshold` is the segmenter's too: at 1.0 no frame is speech, nothing is transcribed."""
    heard: list[int] = []

    class CountingTranscriber:
        def transcribe(self, audio: Pcm16k) -> Transcript:
            heard.append(len(audio))
            return Transcript(segments=(), language="en", language_probability=1.0)

    detectors = DetectorsConfig(
        when_behind="wait", audio=LoudnessVadConfig(type="loudness-vad", vad_threshold=threshold)
    )
    config = FusewatchConfig(
        sources=[SourceConfig(id="lobby", url="lobby.ts", video=VideoInput(enabled=False))], detectors=detectors
    )
    sink = ListFeatureSink()
    worker = AnalyzeWorker(config, _NoObjects(), registry.audio_analyzer(detectors.audio), CountingTranscriber(), sink)
    await worker.run(decoded_items(await _recording(media_dir / "lobby.ts", "lobby")))
    assert sink.of("speech"), "speech windows are emitted either way"
    assert bool(heard) is utterances, heard
    assert worker.counters.segments_transcribed == len(heard)


class _NoObjects:
    labels = ("person",)

    def detect(self, images: Sequence[RgbImage]) -> list[list[Detection]]:
        return [[] for _ in images]
