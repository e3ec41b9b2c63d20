"""Decode throughput: our `fw.media` wire → PyAV decode path vs `ffmpeg -i FILE -f null -`.

Ours starts from the wire messages a replay of lobby.ts produced (demux is not timed: it
is the ingest stage, ~0.1 s for this file and reported separately), encodes each to a wire
record and decodes it back (`streams.wire`), and hands it to `streams.decode.MediaDecoder`,
which decodes video and audio with PyAV. Variants, all decoding every packet:

- `rgb`: every frame converted to RGB24 numpy (what a consumer without a filter gets);
- `5fps`: `FrameSampler` keeps 5 fps for RGB conversion, as the analyze stage does;
- `no_rgb`: the filter rejects every frame: pure decode, what `ffmpeg -f null` does;
- `kafka`: the real path through the embedded Kafka-protocol broker,
  `daemon.commands.decode_topic` (consumer start + fetch + decode in the decode thread),
  timed minus its idle wait. Publishing is done before and not timed.

Baselines, each a subprocess timed by wall clock: `ffmpeg -v error -i lobby.ts -f null -`
(decode only; the target compares with this) and the same with `-pix_fmt rgb24` (decode +
RGB conversion, the fair peer of `rgb`). Note: the ffmpeg CLI is the system's (Debian), our
PyAV wheel bundles its own FFmpeg build; both numbers are in the JSON.

    .venv/bin/python -m bench.decode [--repeats 3] [--file lobby.ts]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import (
    Case,
    Result,
    Row,
    ensure_importable,
    fmt,
    machine_info,
    media_file,
    median,
    run_interleaved,
    save,
)

ensure_importable()

from config.schema import FusewatchConfig, KafkaConfig, KafkaTopics  # noqa: E402
from daemon.commands import decode_topic  # noqa: E402
from daemon.services import ServiceSet  # noqa: E402
from streams.decode import FrameFilter, MediaDecoder  # noqa: E402
from streams.kafka import MediaPublisher, ensure_topics  # noqa: E402
from streams.models import MediaMessage  # noqa: E402
from streams.sources import ReplayOptions, replay  # noqa: E402
from streams.testing import ListSink, ManualClock  # noqa: E402
from streams.windows import FrameSampler  # noqa: E402
from streams.wire import decode_media, encode_media  # noqa: E402

TARGET = 0.9
KAFKA_IDLE_S = 1.0


def wire_messages(path: Path, stream: str = "lobby") -> tuple[list[MediaMessage], float]:
    """The wire messages of a replay of `path` as fast as possible, and the seconds it took."""
    sink = ListSink()
    started = time.perf_counter()
    asyncio.run(replay(str(path), stream, "bench", sink, ReplayOptions(speed=None), ManualClock()))
    return sink.messages, time.perf_counter() - started


class InProcess:
    """Our decode path without a broker: wire encode → wire decode → `MediaDecoder.handle`."""

    def __init__(self, messages: list[MediaMessage], make_filter: Callable[[], FrameFilter | None]) -> None:
        self._messages = messages
        self._make_filter = make_filter
        self.frames_decoded = 0
        self.frames_emitted = 0
        self.audio_samples = 0

    def __call__(self) -> float:
        decoder = MediaDecoder(frame_filter=self._make_filter())
        started = time.perf_counter()
        for message in self._messages:
            decoder.handle(decode_media(encode_media(message)))
        elapsed = time.perf_counter() - started
        counters = decoder.counters
        self.frames_decoded, self.frames_emitted = counters.frames_decoded, counters.frames_emitted
        self.audio_samples = counters.audio_samples
        return elapsed


class ThroughKafka:
    """`decode_topic` on a fresh topic of the embedded broker, holding one published replay."""

    def __init__(self, services: ServiceSet, path: Path) -> None:
        self._services = services
        self._path = path
        self.frames_decoded = 0
        self.wall_with_idle: list[float] = []

    def __call__(self) -> float:
        return asyncio.run(self._run())

    async def _run(self) -> float:
        run = uuid.uuid4().hex[:8]
        topics = KafkaTopics(**{key: f"bench-{run}.{name}" for key, name in KafkaTopics().model_dump().items()})
        kafka = KafkaConfig(bootstrap_servers=[self._services.kafka.address], topics=topics)
        await ensure_topics(kafka)
        async with MediaPublisher(kafka) as publisher:
            await replay(str(self._path), "lobby", "bench", publisher, ReplayOptions(speed=None), ManualClock())
            await publisher.flush()
        started = time.perf_counter()
        _, counters = await decode_topic(FusewatchConfig(kafka=kafka), group=None, idle=KAFKA_IDLE_S)
        elapsed = time.perf_counter() - started
        self.wall_with_idle.append(round(elapsed, 4))
        self.frames_decoded = counters.frames_decoded
        return elapsed - KAFKA_IDLE_S


def ffmpeg_case(path: Path, *extra: str) -> Case:
    """`ffmpeg -v error -i FILE [extra] -f null -`, timed from spawn to exit."""
    command = ["ffmpeg", "-v", "error", "-nostdin", "-i", str(path), *extra, "-f", "null", "-"]

    def run() -> float:
        started = time.perf_counter()
        subprocess.run(command, check=True)
        return time.perf_counter() - started

    run.command = " ".join(command)  # type: ignore[attr-defined]
    return run


def video_frames(path: Path) -> int:
    """Number of video frames in `path` (ffprobe counts them by decoding)."""
    done = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-count_frames", "-show_entries",
                           "stream=nb_read_frames", "-of", "csv=p=0", str(path)],
                          capture_output=True, text=True, check=True)
    return int(done.stdout.strip().splitlines()[0])


def run(repeats: int = 3, file: str = "lobby.ts", kafka: bool = True) -> Result:
    """Measure every variant and the baselines, interleaved, and build the result."""
    machine = machine_info()
    path = media_file(file)
    messages, demux_s = wire_messages(path)
    ours = {
        "ours_rgb": InProcess(messages, lambda: None),
        "ours_5fps": InProcess(messages, lambda: FrameSampler({}, 5.0)),
        "ours_no_rgb": InProcess(messages, lambda: lambda _stream, _wall: False),
    }
    cases: dict[str, Case] = {"ffmpeg_null": ffmpeg_case(path), "ffmpeg_rgb24": ffmpeg_case(path, "-pix_fmt", "rgb24"),
                              **ours}
    with tempfile.TemporaryDirectory(prefix="fw-bench-decode-") as state:
        services = ServiceSet(Path(state)) if kafka else None
        through_kafka = None
        try:
            if services is not None:
                services.start()
                through_kafka = ThroughKafka(services, path)
                cases["ours_kafka"] = through_kafka
            raw = run_interleaved(f"decode {file}", cases, repeats)
        finally:
            if services is not None:
                services.stop()
    frames = ours["ours_rgb"].frames_decoded
    reference_frames = video_frames(path)
    medians = {name: round(median(values), 4) for name, values in raw.items()}
    fps = {name: round(frames / seconds, 1) for name, seconds in medians.items()}
    ratio = round(fps["ours_rgb"] / fps["ffmpeg_null"], 3)
    baselines = {"ffmpeg_null": "ffmpeg -f null", "ffmpeg_rgb24": "ffmpeg -pix_fmt rgb24"}

    def row(label: str, ours_key: str, base_key: str = "ffmpeg_null") -> Row:
        value = round(fps[ours_key] / fps[base_key], 3)
        return Row(f"decode {file}: {label}", fmt(fps[ours_key], "fps"),
                   f"{baselines[base_key]}: {fmt(fps[base_key], 'fps')}", value, f"≥ {TARGET}", value >= TARGET)

    rows = [row("→ RGB every frame (wire → MediaDecoder)", "ours_rgb"),
            row("no RGB conversion (filter rejects all)", "ours_no_rgb"),
            row("→ RGB at 5 fps (FrameSampler)", "ours_5fps"),
            row("→ RGB every frame, vs ffmpeg with RGB", "ours_rgb", "ffmpeg_rgb24")]
    if "ours_kafka" in fps:
        rows.append(row("→ RGB every frame through Kafka (decode_topic)", "ours_kafka"))
    extra: dict[str, Any] = {
        "fps": fps,
        "frames_decoded": frames,
        "frames_in_file_ffprobe": reference_frames,
        "frames_emitted": {name: case.frames_emitted for name, case in ours.items()},
        "audio_samples_decoded": ours["ours_rgb"].audio_samples,
        "wire_messages": len(messages),
        "demux_replay_s": round(demux_s, 4),
        "ratios_vs_ffmpeg_null": {name: round(value / fps["ffmpeg_null"], 3) for name, value in fps.items()},
        "baseline_commands": {name: getattr(cases[name], "command", "") for name in ("ffmpeg_null", "ffmpeg_rgb24")},
    }
    if through_kafka is not None:
        extra["kafka_wall_including_idle_s"] = through_kafka.wall_with_idle
        extra["kafka_frames_decoded"] = through_kafka.frames_decoded
    return Result(
        name="decode",
        description=f"video+audio decode of {file}: frames per second (frames decoded / median wall seconds)",
        rows=rows, raw={"seconds": raw}, medians=medians, ratio=ratio,
        target={"metric": "ours_rgb fps / ffmpeg_null fps", "op": ">=", "value": TARGET}, met=ratio >= TARGET,
        config={"file": file, "repeats": repeats, "kafka_idle_s": KAFKA_IDLE_S, "interleaved": True},
        extra=extra,
        notes=[
            "fps counts decoded video frames; audio (AAC) is decoded in every variant and by ffmpeg too.",
            "ours times wire encode + wire decode + MediaDecoder.handle; demux (replay) is not timed.",
            "kafka: decode_topic wall time minus its idle wait (1 s); includes consumer start and fetch.",
            "ffmpeg CLI is the system build, PyAV bundles its own FFmpeg (see machine.ffmpeg_cli / pyav_ffmpeg).",
        ],
        machine=machine,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--file", default="lobby.ts")
    parser.add_argument("--no-kafka", action="store_true", help="skip the embedded-broker variant")
    args = parser.parse_args()
    save(run(args.repeats, args.file, kafka=not args.no_kafka))


if __name__ == "__main__":
    main()
