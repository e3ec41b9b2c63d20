"""Peak memory of one analyze worker with 4 streams, against the same process idle with its models.

Runs in a child process so nothing else counts: it loads the demo detectors (YOLOv3-tiny,
Whisper tiny.en, Silero VAD, the ByteTrack tracker with ultralytics/torch), measures its RSS,
then analyses four interleaved streams
(two copies each of the lobby and street recordings, 30 s of each) and samples RSS every
50 ms. The difference is what streams cost; the bounded queues keep it flat.

    .venv/bin/python -m bench.memory
"""

from __future__ import annotations

import asyncio
import heapq
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from bench.common import write_result
from config.schema import DetectorsConfig, FusewatchConfig
from daemon.analyze.memory import ListFeatureSink
from daemon.analyze.worker import AnalyzeWorker
from daemon.cli.commands import fetch_media
from detectors import registry
from detectors.tracking import ObjectTracker
from streams.decode import DecodedItem, MediaDecoder
from streams.kafka import SourcePosition
from streams.models import MediaMessage, StreamInit
from streams.sources import ReplayOptions, replay
from streams.testing import ListSink, ManualClock
from streams.windows import FrameSampler

SECONDS = 30.0


async def _items(messages: list[MediaMessage], decoder: MediaDecoder) -> Any:
    restart: dict[str, tuple[SourcePosition, int]] = {}
    for offset, message in enumerate(messages):
        position = SourcePosition("bench", 0, offset)
        if isinstance(message, StreamInit):
            restart[message.stream] = (position, message.wall_ns)
        for item in decoder.handle(message):
            init, init_wall = restart.get(message.stream, (None, 0))
            yield DecodedItem(item, position, init, restart_wall_ns=init_wall)


async def _child() -> dict[str, Any]:
    process = psutil.Process()
    config = FusewatchConfig(detectors=DetectorsConfig(when_behind="wait"))
    detectors = (
        registry.object_detector(config.detectors.objects),
        registry.audio_analyzer(config.detectors.audio),
        registry.transcriber(config.detectors.transcriber) if config.detectors.transcriber else None,
    )
    ObjectTracker(list(detectors[0].labels))  # the tracker brings ultralytics (and torch) in: count it as a model
    idle_rss = process.memory_info().rss
    media = fetch_media(Path(".cache/media"))
    streams: list[list[MediaMessage]] = []
    for index, name in enumerate(("lobby", "street", "lobby", "street")):
        sink = ListSink()
        await replay(
            str(media / f"{name}.ts"), f"{name}-{index}", "bench", sink, ReplayOptions(speed=None), ManualClock()
        )
        first = sink.messages[0].wall_ns
        streams.append([m for m in sink.messages if m.wall_ns - first <= SECONDS * 1e9])
    # Interleaved by time as a broker partition would hold them, each stream in its own order:
    # packets are in decode order, and sorting them by timestamp would reorder B-frames.
    merged = list(heapq.merge(*streams, key=lambda m: m.wall_ns))
    loaded_rss = process.memory_info().rss
    peak = [loaded_rss]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], process.memory_info().rss)
            time.sleep(0.05)

    sampler_thread = threading.Thread(target=sample, daemon=True)
    sampler_thread.start()
    worker = AnalyzeWorker(config, *detectors, ListFeatureSink())
    started = time.perf_counter()
    decoder = MediaDecoder(FrameSampler({}, worker.default_fps))
    await worker.run(_items(merged, decoder))
    elapsed = time.perf_counter() - started
    done.set()
    sampler_thread.join()
    return {
        "rss_models_loaded_mb": round(idle_rss / 2**20, 1),
        "rss_with_recordings_in_memory_mb": round(loaded_rss / 2**20, 1),
        "peak_rss_analysing_4_streams_mb": round(peak[0] / 2**20, 1),
        "streams": 4,
        "seconds_per_stream": SECONDS,
        "analysis_s": round(elapsed, 1),
        "frames_analysed": worker.counters.frames_analysed,
        "windows": dict(worker.counters.windows),
        "corrupt_packets": decoder.counters.corrupt_packets,
    }


def main() -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-m", "bench.memory", "--child"], capture_output=True, text=True, check=True)
    measured: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    measured["added_by_streams_mb"] = round(
        measured["peak_rss_analysing_4_streams_mb"] - measured["rss_with_recordings_in_memory_mb"], 1
    )
    return {"what": "peak RSS of one analyze worker, 4 streams (child process)", **measured}


if __name__ == "__main__":
    if "--child" in sys.argv:
        print(json.dumps(asyncio.run(_child())))
    else:
        result = main()
        print(json.dumps(result, indent=2))
        print(f"wrote {write_result('memory', result)}")
