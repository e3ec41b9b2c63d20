"""Helpers shared by tests: a direct PyAV decode of a file to compare our path against."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np
import numpy.typing as npt

from config import load_config
from config.schema import EventConfig, FusewatchConfig, KafkaConfig, KafkaTopics
from daemon.cli.main import default_config_path
from daemon.fuse.rules import JoinedWindow, alert_id
from detectors.keywords import fold
from streams.decode import DecodedItem, FrameFilter, MediaDecoder
from streams.kafka import SourcePosition, assign_all, make_consumer
from streams.models import (
    Alert,
    AudioFeatures,
    AudioWindowFeatures,
    ClassStats,
    Detection,
    Evidence,
    MediaMessage,
    SpeechFeatures,
    SpeechWindowFeatures,
    StreamInit,
    TermContribution,
    VideoFeatures,
    VideoWindowFeatures,
    WindowFeatures,
    Word,
    ZoneStats,
)
from streams.redis_schema import RedisKeys, redis_client


@dataclass
class DirectDecode:
    """What decoding a file straight with PyAV gives."""

    frames: int = 0
    audio_samples: int = 0
    video_pts: list[int] = field(default_factory=list)
    first: npt.NDArray[np.uint8] | None = None
    last: npt.NDArray[np.uint8] | None = None


def decode_directly(path: Path) -> DirectDecode:
    """Decode every video frame (RGB24) and count every audio sample of `path`."""
    result = DirectDecode()
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            image = frame.to_ndarray(format="rgb24")
            if result.first is None:
                result.first = image
            result.last = image
            result.frames += 1
            result.video_pts.append(int(frame.pts))
    with av.open(str(path)) as container:
        result.audio_samples = sum(frame.samples for frame in container.decode(audio=0))
    return result


def load_audio_16k(path: Path) -> npt.NDArray[np.float32]:
    """A file's audio as 16 kHz mono float32, resampled with PyAV."""
    resampler = av.AudioResampler(format="flt", layout="mono", rate=16000)
    chunks = []
    with av.open(str(path)) as container:
        for frame in container.decode(audio=0):
            chunks += [out.to_ndarray().reshape(-1) for out in resampler.resample(frame)]
        chunks += [out.to_ndarray().reshape(-1) for out in resampler.resample(None)]
    return np.concatenate(chunks).astype(np.float32)


def video_frames(path: Path, every: int = 1, limit: int | None = None) -> list[npt.NDArray[np.uint8]]:
    """RGB frames of a file, every `every`-th, at most `limit`."""
    frames = []
    with av.open(str(path)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index % every == 0:
                frames.append(frame.to_ndarray(format="rgb24"))
            if limit is not None and len(frames) >= limit:
                break
    return frames


async def decoded_items(
    messages: list[MediaMessage],
    frame_filter: FrameFilter | None = None,
    topic: str = "fw.media",
    partition: int = 0,
    start: int = 0,
) -> AsyncIterator[DecodedItem]:
    """Decode wire messages in-process as if they were records at offsets `start`… of one partition."""
    decoder = MediaDecoder(frame_filter)
    restart: SourcePosition | None = None
    restart_wall = 0
    for offset, message in enumerate(messages, start):
        position = SourcePosition(topic, partition, offset)
        if isinstance(message, StreamInit):
            restart, restart_wall = position, message.wall_ns
        for item in decoder.handle(message):
            stream = decoder.streams.get(message.stream)
            origin = stream.origin if stream is not None else None
            origin_seq, origin_wall = (origin.seq, origin.wall_ns) if origin else (0, 0)
            yield DecodedItem(item, position, restart, origin_seq, origin_wall, restart_wall)


# --------------------------------------------------------------------------- reading topics


async def read_topic(config: KafkaConfig, topic: str, quiet_ms: int = 2000, one_poll: bool = False) -> list[Any]:
    """Every record of `topic` from the beginning, outside any group: until `quiet_ms` pass
    without one, or (`one_poll`) what the first poll that gives anything returns."""
    consumer = make_consumer(config, group=None)
    await consumer.start()
    try:
        await assign_all(consumer, topic)
        records: list[Any] = []
        while batch := await consumer.getmany(timeout_ms=quiet_ms):
            records += [record for part in batch.values() for record in part]
            if one_poll:
                break
        return records
    finally:
        await consumer.stop()


# --------------------------------------------------------------------------- hand-built window features

W = 2000


def video(
    stream: str,
    start: int,
    persons: int,
    door_occupancy: float = 0,
    snapshot: str | None = None,
    *,
    classes: dict[str, ClassStats] | None = None,
    zones: dict[str, ZoneStats] | None = None,
) -> WindowFeatures:
    """A video window with `persons` people (track 1 new), or with the given `classes` and `zones`."""
    if classes is None:
        classes = (
            {"person": ClassStats(max_count=persons, mean_count=persons, max_confidence=0.9, new_tracks=[1])}
            if persons
            else {}
        )
    detections = [Detection(label="person", confidence=0.9, box=(0.1, 0.1, 0.2, 0.5))] * persons
    return VideoWindowFeatures(
        stream=stream,
        site="hq",
        window_start=start,
        window_end=start + W,
        video=VideoFeatures(
            frames=10,
            classes=classes,
            zones=zones if zones is not None else {"door": ZoneStats(occupancy=door_occupancy)},
            detections=detections,
            snapshot=snapshot,
        ),
    )


def audio(stream: str, start: int, dbfs: float, *, peak: float | None = None, ratio: float = 0.5) -> WindowFeatures:
    """An audio window at `dbfs` RMS, its peak `peak` (default 10 dB above), `ratio` of it speech."""
    return AudioWindowFeatures(
        stream=stream,
        site="hq",
        window_start=start,
        window_end=start + W,
        audio=AudioFeatures(loudness_dbfs=dbfs, peak_dbfs=dbfs + 10 if peak is None else peak, speech_ratio=ratio),
    )


def speech(
    stream: str, start: int, text: str, *, words: Sequence[Word] = (), keywords: Sequence[str] = ()
) -> WindowFeatures:
    return SpeechWindowFeatures(
        stream=stream,
        site="hq",
        window_start=start,
        window_end=start + W,
        speech=SpeechFeatures(text=text, words=list(words), keywords=list(keywords)),
    )


def joined(start: int, *features: WindowFeatures) -> JoinedWindow:
    return JoinedWindow("hq", start, start + W, features)


DISTRESS = EventConfig.model_validate(
    {
        "name": "distress",
        "threshold": 0.8,
        "for": 1,
        "cooldown": 10,
        "severity": "high",
        "terms": [
            {"signal": "video.person.count", "weight": 0.4, "when": {"op": ">=", "value": 1}, "streams": ["cam"]},
            {"signal": "speech.keywords", "weight": 0.4, "match": ["help", "police"]},
            {"signal": "audio.loudness_dbfs", "weight": 0.2, "ramp": {"low": -40, "high": -20}},
        ],
    }
)


# --------------------------------------------------------------------------- known transcripts

TRANSCRIPTS = {
    "jfk.wav": "And so my fellow Americans, ask not what your country can do for you, "
    "ask what you can do for your country.",
    "librivox-0870.wav": "and mister john dashwood had then leisure to consider how much there might be "
    "prudently in his power to do for them",
    "librivox-0880.wav": "he was not an ill disposed young man",
}


def normalise(text: str) -> str:
    """Text as word error rates compare it: folded case and accents, no punctuation, 'mr' spelled out."""
    text = fold(text).replace("mr ", "mister ").replace("-", " ")
    return re.sub(r"\s+", " ", text).strip()


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def write_config(config: FusewatchConfig, path: Path, web_token: str | None = None) -> Path:
    """Write `config` as a site file for a `fusewatch` child process (JSON is YAML), secrets included."""
    data = config.model_dump(mode="json", by_alias=True)
    data["web"]["token"] = web_token
    path.write_text(json.dumps(data, indent=1))
    return path


def make_alert(
    event: str = "distress",
    site: str = "test",
    window_start: int = 1_700_000_000_000,
    snapshot: str | None = None,
    transcript: str = "help somebody call the police",
    streams: Sequence[str] = ("lobby",),
) -> Alert:
    """An alert as the fuse stage makes it: deterministic id, two terms, evidence."""
    return Alert(
        id=alert_id(event, site, window_start),
        event=event,
        site=site,
        streams=list(streams),
        window_start=window_start,
        window_end=window_start + 2000,
        score=1.0,
        threshold=0.8,
        severity="high",
        terms=[
            TermContribution(
                signal="video.person.count", weight=0.4, value=2.0, g=1.0, contribution=0.4, stream="lobby"
            ),
            TermContribution(signal="speech.keywords", weight=0.6, value=1.0, g=1.0, contribution=0.6, stream="lobby"),
        ],
        evidence=Evidence(
            transcript=transcript,
            snapshot=snapshot,
            detections=[Detection(label="person", confidence=0.91, box=(0.1, 0.2, 0.3, 0.9), track_id=3)],
        ),
    )


async def eventually(condition: Callable[[], bool], within: float = 5.0, every: float = 0.01) -> None:
    """Wait until `condition()` holds; fail with a clear message after `within` seconds."""
    for _ in range(max(int(within / every), 1)):
        if condition():
            return
        await asyncio.sleep(every)
    raise AssertionError(f"condition not met within {within} s")


def demo_on(services: FusewatchConfig, data: Path, **detectors: object) -> FusewatchConfig:
    """The demo config on a test's services and topics (`fw_config`), its files under `data`
    (snapshots, clips, search index), detection waiting instead of dropping unless `detectors` say."""
    demo = load_config(default_config_path(), env={})
    return demo.model_copy(
        update={
            "kafka": services.kafka,
            "redis": services.redis,
            "detectors": demo.detectors.model_copy(update={"when_behind": "wait", **detectors}),
            "outputs": demo.outputs.model_copy(update={"snapshots_dir": str(data / "snapshots")}),
            "clips": demo.clips.model_copy(
                update={"store": demo.clips.store.model_copy(update={"path": str(data / "clips")})}
            ),
            "search": demo.search.model_copy(update={"path": str(data / "search")}),
        }
    )


def demo_config_on(broker: str, redis: str, snapshots: Path, prefix: str) -> FusewatchConfig:
    """The demo config on a broker of a test's own, topics and Redis keys unique to the test,
    and detection waiting instead of dropping (deterministic alerts)."""
    suffix = prefix + uuid.uuid4().hex[:8]
    demo = load_config(default_config_path(), env={})
    return demo.model_copy(
        update={
            "kafka": KafkaConfig(
                bootstrap_servers=[broker],
                group_prefix=suffix,
                session_timeout=6.0,
                topics=KafkaTopics.suffixed(suffix),
            ),
            "redis": demo.redis.model_copy(update={"url": f"redis://{redis}/0", "key_prefix": suffix}),
            "detectors": demo.detectors.model_copy(update={"when_behind": "wait"}),
            "outputs": demo.outputs.model_copy(update={"snapshots_dir": str(snapshots)}),
        }
    )


async def redis_alerts(config: FusewatchConfig) -> list[dict[str, Any]]:
    """Every alert in the Redis alert stream, oldest first."""
    redis = redis_client(config.redis)
    try:
        entries = await redis.xrange(RedisKeys(config.redis.key_prefix).alerts)
    finally:
        await redis.aclose()
    return [json.loads(fields[b"alert"]) for _, fields in entries or [] if fields]


def video_by_window(features: Sequence[WindowFeatures]) -> dict[int, object]:
    """What a reader computed for each video window, track ids left out (a new tracker numbers afresh)."""
    return {
        f.window_start: (
            f.video.frames,
            {k: (v.max_count, v.mean_count, v.max_confidence) for k, v in f.video.classes.items()},
            [(d.label, d.confidence, d.box) for d in f.video.detections],
        )
        for f in features
        if f.video is not None
    }
