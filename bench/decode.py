"""Decode throughput: our wire format → PyAV decoder path vs `ffmpeg -i FILE -f null -`.

Ours starts from the wire messages a replay produced (what a consumer of `fw.media` gets)
and decodes them with `streams.decode.MediaDecoder`: every video frame converted to RGB
(as the issue's equality test needs), only the 5 fps the analyze stage samples, and no
frame converted (the pure decode, like ffmpeg's null output). The Kafka variants add the
broker round trip (embedded broker, `MediaConsumer` reading all partitions), with every
frame converted and decode only. Baseline: the
ffmpeg CLI on the same file, same machine, interleaved runs; medians of `--repeat` runs.

    .venv/bin/python -m bench.decode [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import median, write_result
from config.schema import FusewatchConfig, KafkaConfig, KafkaTopics
from daemon.cli.commands import decode_topic, fetch_media
from daemon.runtime.services import ServiceSet
from streams.decode import FrameFilter, MediaDecoder
from streams.kafka import MediaPublisher, ensure_topics
from streams.models import MediaMessage
from streams.sources import ReplayOptions, replay
from streams.testing import ListSink, ManualClock
from streams.windows import FrameSampler
from streams.wire import decode_media, encode_media


def _ours(messages: list[MediaMessage], frame_filter: Callable[[], FrameFilter | None]) -> tuple[float, int]:
    decoder = MediaDecoder(frame_filter())
    started = time.perf_counter()
    for message in messages:
        decoder.handle(decode_media(encode_media(message)))
    return time.perf_counter() - started, decoder.counters.frames_decoded


def _ffmpeg(path: Path) -> float:
    started = time.perf_counter()
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-i", str(path), "-f", "null", "-"], check=True)
    return time.perf_counter() - started


async def _kafka(
    path: Path, repeat: int, variants: dict[str, Callable[[], FrameFilter | None]]
) -> dict[str, list[float]]:
    """Each variant decodes the recording from the embedded broker, `repeat` times, interleaved."""
    services = ServiceSet(Path(".cache/services/bench-decode"))
    services.start()
    times: dict[str, list[float]] = {name: [] for name in variants}
    try:
        for run in range(repeat):
            topics = KafkaTopics(**{k: f"bd{run}{int(time.time())}.{v}" for k, v in KafkaTopics().model_dump().items()})
            kafka = KafkaConfig(bootstrap_servers=[services.kafka.address], topics=topics)
            await ensure_topics(kafka)
            async with MediaPublisher(kafka) as publisher:
                await replay(str(path), "lobby", "bench", publisher, ReplayOptions(speed=None))
                await publisher.flush()
            idle = 1.0
            for name, make_filter in variants.items():
                started = time.perf_counter()
                await decode_topic(FusewatchConfig(kafka=kafka), group=None, idle=idle, frame_filter=make_filter())
                times[name].append(time.perf_counter() - started - idle)
    finally:
        services.stop()
    return times


def main(repeat: int) -> dict[str, Any]:
    path = fetch_media(Path(".cache/media")) / "lobby.ts"
    sink = ListSink()
    asyncio.run(replay(str(path), "lobby", "bench", sink, ReplayOptions(speed=None), ManualClock()))
    variants: dict[str, Callable[[], FrameFilter | None]] = {
        "rgb_every_frame": lambda: None,
        "rgb_5fps_sampled": lambda: FrameSampler({}, 5.0),
        "decode_only": lambda: lambda stream, wall: False,
    }
    timings: dict[str, list[float]] = {name: [] for name in [*variants, "ffmpeg_null"]}
    frames = 0
    for _ in range(repeat):
        timings["ffmpeg_null"].append(_ffmpeg(path))
        for name, make_filter in variants.items():
            seconds, frames = _ours(sink.messages, make_filter)
            timings[name].append(seconds)
    kafka = asyncio.run(
        _kafka(path, repeat, {"rgb_every_frame": variants["rgb_every_frame"], "decode_only": variants["decode_only"]})
    )
    timings |= {f"kafka_{name}": values for name, values in kafka.items()}
    fps = {name: round(frames / median(values), 1) for name, values in timings.items()}
    baseline = fps["ffmpeg_null"]
    return {
        "what": f"decode {path.name} ({frames} video frames + AAC audio): frames per second",
        "file": path.name,
        "frames": frames,
        "timings_s": timings,
        "fps": fps,
        "ratio_vs_ffmpeg": {name: round(value / baseline, 3) for name, value in fps.items() if name != "ffmpeg_null"},
        "target": "decode_only / ffmpeg_null >= 0.9 (in-process and through the broker)",
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    result = main(parser.parse_args().repeat)
    print(json.dumps({k: result[k] for k in ("fps", "ratio_vs_ffmpeg")}, indent=2))
    print(f"wrote {write_result('decode', result)}")
