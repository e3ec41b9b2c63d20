"""Clip cut time and size: our cut from `fw.media` vs `ffmpeg -c copy` from the file on disk.

Ours is what the clips role does for one stream of an alert: find the span on the topic
(through the embedded broker, whose missing time index makes it a binary search over
record timestamps), read the stream's packets from the keyframe before it, and remux them
into an MP4 with PyAV (`streams.clipping.cut_clip`). The baseline is what a recorder that
keeps files on disk does (Frigate's clip export): `ffmpeg -ss FROM -i FILE -t SPAN -c copy
-movflags +faststart`, which also starts at the keyframe before FROM. Both cut the same
spans (pre-roll 5 s + a 2 s window + post-roll 5 s by default) of the lobby and the street
recordings, replayed into one topic as the demo's cameras; runs are interleaved and the
medians compared. The clip bytes are the size an alert's evidence costs per stream.

    .venv/bin/python -m bench.clips [--repeat 3] [--spans 6]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import median, percentile, write_result
from config.schema import ClipsConfig, KafkaConfig, KafkaTopics
from daemon.cli.commands import fetch_media
from daemon.runtime.services import ServiceSet
from streams.clipping import cut_clip
from streams.clock import NS_PER_MS
from streams.kafka import MediaPublisher, ensure_topics
from streams.media_span import MediaSpanReader
from streams.sources import ReplayResult, replay_side_by_side

RECORDINGS = ("lobby", "street")


async def _replay(kafka: KafkaConfig, media: Path) -> dict[str, ReplayResult]:
    async with MediaPublisher(kafka) as publisher:
        replayed = await replay_side_by_side({name: media / f"{name}.ts" for name in RECORDINGS}, "bench", publisher)
        await publisher.flush()
    return replayed


def _ffmpeg(source: Path, offset_s: float, span_s: float, out: Path) -> float:
    started = time.perf_counter()
    command = ["ffmpeg", "-v", "error", "-nostdin", "-y", "-ss", f"{offset_s:.3f}", "-i", str(source)]
    subprocess.run([*command, "-t", f"{span_s:.3f}", "-c", "copy", "-movflags", "+faststart", str(out)], check=True)
    return time.perf_counter() - started


async def _run(media: Path, repeat: int, spans: int) -> dict[str, Any]:
    settings = ClipsConfig()
    span_ms = round((settings.pre_roll + 2.0 + settings.post_roll) * 1000)
    services = ServiceSet(Path(".cache/services/bench-clips"))
    services.start()
    ours: dict[str, list[float]] = {name: [] for name in RECORDINGS}
    theirs: dict[str, list[float]] = {name: [] for name in RECORDINGS}
    sizes: dict[str, list[int]] = {name: [] for name in RECORDINGS}
    lengths: dict[str, list[float]] = {name: [] for name in RECORDINGS}
    try:
        kafka = KafkaConfig(
            bootstrap_servers=[services.kafka.address], topics=KafkaTopics.suffixed(f"clips{int(time.time())}")
        )
        await ensure_topics(kafka)
        replayed = await _replay(kafka, media)
        with tempfile.TemporaryDirectory() as scratch:
            async with MediaSpanReader(kafka, settings.max_keyframe_interval) as reader:
                for run in range(repeat):
                    for name, result in replayed.items():
                        length_ms = (result.wall_end_ns - result.wall_start_ns) // NS_PER_MS
                        for n in range(spans):
                            offset_ms = round((length_ms - span_ms - 1000) * (n + 0.5) / spans)
                            start_ms = result.wall_start_ns // NS_PER_MS + offset_ms
                            out = Path(scratch) / f"{name}-{run}-{n}.mp4"
                            deadline = time.monotonic() + 10
                            clip = await cut_clip(reader, name, start_ms, start_ms + span_ms, deadline, out, out.stem)
                            ours[name].append(clip.cut_ms / 1000)
                            sizes[name].append(clip.bytes)
                            lengths[name].append((clip.end_ms - clip.start_ms) / 1000)
                            copy = Path(scratch) / f"{name}-{run}-{n}-ffmpeg.mp4"
                            theirs[name].append(_ffmpeg(media / f"{name}.ts", offset_ms / 1000, span_ms / 1000, copy))
    finally:
        services.stop()
    per: dict[str, Any] = {}
    for name in RECORDINGS:
        ours_ms, theirs_ms = median(ours[name]) * 1000, median(theirs[name]) * 1000
        per[name] = {
            "ours_ms": {"p50": round(ours_ms, 1), "p95": round(percentile(ours[name], 95) * 1000, 1)},
            "ffmpeg_copy_ms": {"p50": round(theirs_ms, 1)},
            "ratio_ffmpeg_over_ours": round(theirs_ms / ours_ms, 2),
            "clip_bytes": {"mean": round(sum(sizes[name]) / len(sizes[name])), "max": max(sizes[name])},
            "clip_seconds": {"mean": round(sum(lengths[name]) / len(lengths[name]), 2)},
            "n": len(ours[name]),
        }
    return {"span_s": span_ms / 1000, "repeat": repeat, "spans": spans, "recordings": per}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--spans", type=int, default=6)
    args = parser.parse_args()
    media = fetch_media(Path(".cache/media"))
    result = asyncio.run(_run(media, args.repeat, args.spans))
    print(json.dumps(result, indent=2))
    print(write_result("clips", result))


if __name__ == "__main__":
    main()
