"""Where an analyze worker's CPU goes: CPU seconds per stream-second for every stage.

A recording is replayed at max speed into `fw.media` on the embedded broker; then one
`run_analyze` worker (the demo's detectors: YOLOv3-tiny on OpenVINO, faster-whisper
tiny.en, loudness + VAD; `sample_fps: 5`, waiting instead of dropping) reads it in a child
process that py-spy samples (`--nonblocking`, every thread, idle time left out). Each
sample is put in the stage of the innermost frame that names one (the rules below), and the
CPU seconds of each stage are divided by the recording's length: the cost of one stream
per second of video, on this machine. Model loading is its own stage and left out of the
per-stream figure. Scenes: the busy lobby (people in every frame) and the quiet scene of
`bench.scenes`, each with motion gating on (the default) and off.

    .venv/bin/python -m bench.cost_profile [--rate 100]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import av

from bench.common import write_result
from bench.scenes import embedded_services, scene_config, scenes
from config.schema import FusewatchConfig
from daemon.runtime.services import ServiceSet
from streams.kafka import MediaPublisher, ensure_topics
from streams.sources import ReplayOptions, replay

PY_SPY = Path(sys.executable).with_name("py-spy")
STARTUP = "startup (model load, imports)"
# (stage, substrings of a py-spy frame "function (file:line)"); the innermost frame matching one decides.
RULES: list[tuple[str, tuple[str, ...]]] = [
    (STARTUP, ("<frozen importlib", "detectors/registry.py", "detectors/weights.py", "load_model", "from_pretrained")),
    ("detection: letterbox (resize, pad)", ("letterbox.py",)),
    (
        "detection: inference",
        ("raw (detectors/darknet.py", "detectors/darknet_torch.py", "detectors/darknet_onnx.py", "(detectors/yolo.py"),
    ),
    ("detection: boxes, NMS", ("detectors/darknet.py",)),
    ("detection: batching", ("daemon/analyze/batcher.py",)),
    ("motion", ("detectors/motion.py",)),
    ("tracking", ("detectors/tracking.py", "byte_tracker", "ultralytics")),
    ("zones", ("detectors/zones.py",)),
    ("snapshot JPEG", ("imencode", "video_windows.py:8", "video_windows.py:9")),
    ("window features (counts)", ("daemon/analyze/video_windows.py",)),
    ("Whisper", ("detectors/whisper.py", "faster_whisper", "ctranslate2", "daemon/analyze/speech.py")),
    ("VAD, loudness", ("detectors/audio.py", "silero", "pyloudnorm")),
    ("colour conversion (RGB)", ("_convert (streams/decode.py",)),
    ("audio resampling", ("audio_to_float",)),
    ("demux, decode", ("streams/decode.py", "streams/wire.py")),
    ("Kafka I/O", ("aiokafka", "kafka/")),
    ("JSON, models", ("pydantic", "json/", "model_dump_json", "model_validate")),
    ("status, metrics", ("daemon/telemetry/status.py", "daemon/telemetry/metrics.py", "prometheus_client", "redis/")),
    ("sampling frames", ("streams/windows.py",)),
]
OTHER = "other (event loop, analyze glue)"
NATIVE = "native threads of the inference libraries"


def stage_of(frames: list[str]) -> str:
    for frame in reversed(frames):  # innermost first
        for stage, markers in RULES:
            if any(marker in frame for marker in markers):
                return stage
    return OTHER


def parse_raw(text: str, rate: float) -> tuple[dict[str, float], dict[str, float]]:
    """py-spy `--format raw` (collapsed stacks "frame;frame;… count") → CPU seconds per stage,
    and the innermost frames of what no rule names (where `other` goes)."""
    samples: Counter[str] = Counter()
    unnamed: Counter[str] = Counter()
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        stage = stage_of(frames)
        samples[stage] += int(count)
        if stage == OTHER:
            unnamed[frames[-1]] += int(count)
    return (
        {stage: round(count / rate, 3) for stage, count in samples.most_common()},
        {frame: round(count / rate, 3) for frame, count in unnamed.most_common(8)},
    )


async def _publish(config: FusewatchConfig, stream: str, path: Path) -> None:
    await ensure_topics(config.kafka)
    async with MediaPublisher(config.kafka) as publisher:
        await replay(str(path), stream, config.site, publisher, ReplayOptions(speed=None))
        await publisher.flush()


def profile(services: ServiceSet, stream: str, path: Path, gating: bool, rate: int, work: Path) -> dict[str, Any]:
    config = scene_config(services, path, [stream], gating, wait=True)
    asyncio.run(_publish(config, stream, path))
    config_path = work / f"{stream}-{gating}.json"
    config_path.write_text(json.dumps(config.model_dump(mode="json", by_alias=True)))
    raw = work / f"{stream}-{gating}.txt"
    done = subprocess.run(
        [
            str(PY_SPY),
            "record",
            "--rate",
            str(rate),
            "--format",
            "raw",
            "--nonblocking",
            "--threads",
            "--output",
            str(raw),
            "--",
            sys.executable,
            "-m",
            "bench.cost_profile",
            "--analyze",
            str(config_path),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"py-spy or the analyze worker failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    with av.open(str(path)) as container:
        seconds = float(container.duration or 0) / av.time_base
    stages, unnamed = parse_raw(raw.read_text(), rate)
    worker = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("{")))
    # py-spy sees Python threads only: what the inference libraries' own threads (OpenVINO's and
    # OpenCV's workers, CTranslate2, PyTorch intra-op) burn is the process CPU time it did not sample.
    stages[NATIVE] = round(max(worker.pop("process_cpu_seconds") - sum(stages.values()), 0.0), 3)
    working = {stage: cpu for stage, cpu in stages.items() if stage != STARTUP}
    total = sum(working.values())
    return {
        "stream_seconds": round(seconds, 2),
        "gating": gating,
        "worker": worker,
        "cpu_seconds": stages,
        "other_innermost_frames": unnamed,
        "cpu_per_stream_second": {stage: round(cpu / seconds, 4) for stage, cpu in working.items()},
        "share": {stage: round(cpu / total, 3) for stage, cpu in working.items()},
        "total_cpu_per_stream_second": round(total / seconds, 3),
    }


def _analyze(config_path: Path) -> None:
    """The profiled child: one analyze worker until the topic is read."""
    from daemon.analyze.worker import run_analyze

    config = FusewatchConfig.model_validate_json(config_path.read_text())
    counters = asyncio.run(run_analyze(config, idle_timeout=4.0))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(
        json.dumps(
            {
                "process_cpu_seconds": usage.ru_utime + usage.ru_stime,
                "frames_analysed": counters.frames_analysed,
                "frames_dropped": counters.frames_dropped,
                "frames_without_motion": counters.frames_without_motion,
                "windows": dict(counters.windows),
                "segments_transcribed": counters.segments_transcribed,
            }
        )
    )


def main(rate: int) -> dict[str, Any]:
    runs: dict[str, Any] = {}
    with embedded_services() as services, tempfile.TemporaryDirectory() as work:
        for scene, path in scenes().items():
            for gating in (True, False):
                key = f"{scene}, gating {'on' if gating else 'off'}"
                runs[key] = profile(services, scene, path, gating, rate, Path(work))
                print(key, json.dumps(runs[key]["cpu_per_stream_second"]), flush=True)
    return {"rate_hz": rate, "runs": runs}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    parser.add_argument("--analyze", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.analyze:
        _analyze(args.analyze)
    else:
        result = main(args.rate)
        print(json.dumps(result, indent=2))
        print(f"wrote {write_result('cost_profile', result)}")
