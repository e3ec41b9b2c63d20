"""How many real-time camera streams one `fusewatch run --role all` process keeps up with.

For each scene (the busy lobby; the quiet scene of `bench.scenes`, its cameras out of step
as on a site, and all in step as a worst case) and with motion gating on (the default) and
off (the baseline: detect every sampled frame), N sources loop the recording at real speed
(`sample_fps: 5`), all roles in one process on the embedded broker and Redis. After a
warm-up the process is watched for a measuring period. It keeps up with N when the video
windows of the period came out (at least 90 % of N × period / window) and their window end
→ features latency has a p95 ≤ 5 s (a worker falling behind emits late, then fewer). N
grows in steps until it does not, then one by one from the last N
kept; the largest N kept is the capacity. Beside
it, the limit that decoding alone sets (decode-only CPU per stream-second, from
`bench.cost_profile`, into the machine's cores).

Per detector runtime (`--runtime`, default the config's default, float32; `openvino-half`
is OpenVINO at the CPU's reduced precision; `torch` and `torch-half` run on CUDA where a GPU
is present, float32 and FP16, and then N goes up to 64 streams batched on the GPU): results
are kept per (scene, gating, runtime), and a run keeps the results of the combinations it did not run.

    .venv/bin/python -m bench.capacity [--warmup 20] [--measure 40] [--scene busy|quiet|quiet-in-step]
        [--runtime openvino|openvino-half|onnxruntime|opencv|torch] [--gating on|off]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench.common import RESULTS, percentile, write_result
from bench.scenes import PHASES, embedded_services, quiet_phases, scene_config, scenes
from config.schema import DarknetDetectorConfig, FusewatchConfig
from daemon.runtime.services import ServiceSet
from detectors.darknet import RUNTIMES, Runtime
from streams.kafka import assign_all, ensure_topics, make_consumer
from streams.models import WINDOW_FEATURES

LATENCY_P95_MS = 5000.0
WINDOW_S = 2.0
CANDIDATES = {"busy": (1, 2, 3, 4, 6, 8), "quiet": (2, 4, 6, 8, 12, 16, 20, 24), "quiet-in-step": (2, 4, 6, 8, 12, 16)}
GPU_CANDIDATES = {  # `torch` on CUDA
    "busy": (1, 2, 4, 8, 16, 32, 64),
    "quiet": (2, 4, 8, 16, 32, 64),
    "quiet-in-step": (2, 4, 8, 16, 32, 64),
}


def capacity_scenes() -> dict[str, list[Path]]:
    """Each scene's recordings, taken in turn by the sources.

    quiet: the quiet scene at its phases, so each camera's walk-through and speech come at
    their own time, as on a site; quiet-in-step: every camera plays the same phase, so all
    walk-throughs and all speech come at once (the worst case for gating).
    """
    scene = scenes()
    return {"busy": [scene["busy"]], "quiet": quiet_phases(PHASES), "quiet-in-step": [scene["quiet"]]}


async def _video_windows(config: FusewatchConfig, since_ms: int, until_ms: int) -> list[float]:
    """Window end → emit latency (ms) of the video windows emitted between the two times."""
    consumer = make_consumer(config.kafka, group=None)
    await consumer.start()
    latencies = []
    try:
        await assign_all(consumer, config.kafka.topics.features)
        while batch := await consumer.getmany(timeout_ms=2000, max_records=5000):
            for record in (r for records in batch.values() for r in records):
                if not since_ms <= record.timestamp < until_ms:
                    continue
                features = WINDOW_FEATURES.validate_json(record.value)
                if features.modality == "video" and "window_end_to_emit" in features.latency_ms:
                    latencies.append(features.latency_ms["window_end_to_emit"])
    finally:
        await consumer.stop()
    return latencies


def _cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def _runtime(name: str) -> tuple[Runtime, bool]:
    """`openvino-half` → (`openvino`, half); any other name is a runtime in float32."""
    runtime, _, precision = name.partition("-")
    if runtime not in RUNTIMES or precision not in ("", "half"):
        raise ValueError(f"unknown runtime {name!r}")
    return runtime, precision == "half"


def trial(
    services: ServiceSet,
    path: list[Path],
    streams: int,
    gating: bool,
    runtime: str,
    warmup: float,
    measure: float,
    work: Path,
) -> dict[str, Any]:
    detector, half = _runtime(runtime)
    config = scene_config(
        services, path, [f"cam{index}" for index in range(streams)], gating, loop=True, runtime=detector, half=half
    )
    asyncio.run(ensure_topics(config.kafka))
    config_path = work / f"capacity-{uuid.uuid4().hex[:6]}.json"
    data = config.model_dump(mode="json", by_alias=True)
    data["web"]["token"] = "capacity-bench"
    config_path.write_text(json.dumps(data))
    log = (work / f"{config_path.stem}.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "daemon.cli", "run", str(config_path), "--role", "all"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        time.sleep(warmup)
        if process.poll() is not None:
            raise RuntimeError(f"fusewatch run exited with {process.returncode}; see {log.name}")
        since = int(time.time() * 1000)
        time.sleep(measure)
        until = int(time.time() * 1000)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
    latencies = asyncio.run(_video_windows(config, since, until))
    expected = streams * measure / WINDOW_S
    p95 = percentile(latencies, 95) if latencies else float("inf")
    kept_up = len(latencies) >= 0.9 * expected and p95 <= LATENCY_P95_MS
    return {
        "streams": streams,
        "video_windows": len(latencies),
        "expected_windows": round(expected),
        "latency_p50_ms": round(percentile(latencies, 50), 1) if latencies else None,
        "latency_p95_ms": round(p95, 1) if latencies else None,
        "kept_up": kept_up,
    }


def capacity(
    services: ServiceSet,
    scene: str,
    path: list[Path],
    gating: bool,
    runtime: str,
    warmup: float,
    measure: float,
    work: Path,
) -> dict[str, Any]:
    trials: list[dict[str, Any]] = []

    def kept_up(streams: int) -> bool:
        result = trial(services, path, streams, gating, runtime, warmup, measure, work)
        trials.append(result)
        print(scene, "gating" if gating else "no gating", runtime, json.dumps(result), flush=True)
        return bool(result["kept_up"])

    best, failed = 0, None
    candidates = GPU_CANDIDATES if runtime.startswith("torch") and _cuda() else CANDIDATES
    for streams in candidates[scene]:  # coarse steps up to the first failure…
        if not kept_up(streams):
            failed = streams
            break
        best = streams
    for streams in range(best + 1, failed or best + 1):  # …then the N between, one by one
        if not kept_up(streams):
            break
        best = streams
    return {"capacity": best, "trials": trials}


def _previous() -> dict[str, Any]:
    """The runs kept from earlier results, keyed "scene, gating on|off, runtime" (OpenCV before runtimes)."""
    previous = RESULTS / "capacity.json"
    if not previous.is_file():
        return {}
    runs: dict[str, Any] = json.loads(previous.read_text())["runs"]
    return {key if key.count(",") == 2 else f"{key}, opencv": run for key, run in runs.items()}


def main(
    warmup: float, measure: float, scenes_run: list[str], runtimes: list[str], gatings: list[bool]
) -> dict[str, Any]:
    chosen = {scene: path for scene, path in capacity_scenes().items() if not scenes_run or scene in scenes_run}
    results = _previous()  # combinations not run keep their last results
    default = DarknetDetectorConfig(type="darknet").runtime
    with embedded_services() as services, tempfile.TemporaryDirectory() as work:
        for runtime in runtimes or [default]:
            for scene, path in chosen.items():
                for gating in gatings:
                    results[f"{scene}, gating {'on' if gating else 'off'}, {runtime}"] = capacity(
                        services, scene, path, gating, runtime, warmup, measure, Path(work)
                    )
    summary = {key: value["capacity"] for key, value in results.items()}
    on, off = summary.get(f"quiet, gating on, {default}", 0), summary.get(f"quiet, gating off, {default}", 0)
    return {
        "sample_fps": 5,
        "latency_p95_limit_ms": LATENCY_P95_MS,
        "warmup_s": warmup,
        "measure_s": measure,
        "default_runtime": default,
        "capacity": summary,
        "quiet_gating_gain": round(on / off, 2) if off else None,
        "targets": {"quiet, gating on": 8, "busy, gating on": 3, "quiet_gating_gain": 3.0},
        "runs": results,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--warmup", type=float, default=20.0)
    parser.add_argument("--measure", type=float, default=40.0)
    parser.add_argument(
        "--scene",
        action="append",
        default=[],
        choices=tuple(CANDIDATES),
        help="only these scenes (the others keep their last results)",
    )
    parser.add_argument(
        "--runtime",
        action="append",
        default=[],
        choices=[*RUNTIMES, "openvino-half"],
        help="detector runtimes (default: the default one)",
    )
    parser.add_argument("--gating", action="append", default=[], choices=("on", "off"))
    args = parser.parse_args()
    result = main(
        args.warmup, args.measure, args.scene, args.runtime, [g == "on" for g in args.gating] or [True, False]
    )
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=2))
    print(f"wrote {write_result('capacity', result)}")
