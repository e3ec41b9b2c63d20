"""Detection throughput: our analyze-stage batching vs ultralytics' own predict loop.

Ours: PyAV decodes the people video, frames go through `DetectionBatcher` (the config's
defaults: batches of up to 8, waiting at most 50 ms) into `YoloDetector` (PyTorch on every
core). Baseline: `for r in YOLO(w).predict(source=FILE, stream=True,
imgsz=640): pass`, which decodes with OpenCV and infers frame by frame with ultralytics'
own thread setting (cores - 1); a second baseline run sets PyTorch to every core after
ultralytics' setup, to show how much of the gap is threads. Same weights, same input size,
same number of frames; every timing includes decoding. No registry package ships COCO
YOLO weights, so `w` is the architecture YAML (`yolov8n.yaml`): random weights cost the
same as trained ones. The pretrained demo detector (YOLOv3-tiny, OpenCV DNN) is measured
batched vs one by one.

    .venv/bin/python -m bench.detection [--frames 120] [--repeat 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import numpy.typing as npt

from bench.common import median, write_result
from config.schema import YoloDetectorConfig
from daemon.analyze.batcher import DetectionBatcher
from daemon.cli.commands import fetch_media
from detectors.darknet import DarknetDetector
from detectors.yolo import YoloDetector, import_ultralytics
from streams.models import Frame

WEIGHTS = "yolov8n.yaml"


def rgb(frame: av.VideoFrame) -> npt.NDArray[np.uint8]:
    return np.asarray(frame.to_ndarray(format="rgb24"), dtype=np.uint8)


IMGSZ = 640


async def _ours(path: Path, frames: int, detector: YoloDetector) -> float:
    config = YoloDetectorConfig(type="yolo", weights=WEIGHTS)
    with ThreadPoolExecutor(1) as pool:
        batcher = DetectionBatcher(
            detector, pool, max_batch=config.max_batch, max_wait=config.max_wait, capacity=32, when_behind="wait"
        )
        runner = asyncio.create_task(batcher.run())
        started = time.perf_counter()
        futures = []
        with av.open(str(path)) as container:
            for index, frame in enumerate(container.decode(video=0)):
                if index >= frames:
                    break
                image = await asyncio.to_thread(rgb, frame)
                futures.append(await batcher.submit(Frame("bench", "bench", frame.pts, Fraction(1, 10), 0, image)))
        await asyncio.gather(*futures)
        elapsed = time.perf_counter() - started
        runner.cancel()
    return elapsed


def _baseline(path: Path, frames: int, device: str, threads: int | None) -> float:
    """ultralytics' own loop; with `threads`, PyTorch's thread count is set once its predictor is set up."""
    import_ultralytics()
    import torch
    from ultralytics import YOLO

    model = YOLO(WEIGHTS, task="detect")
    started = time.perf_counter()
    for count, _ in enumerate(
        model.predict(source=str(path), stream=True, imgsz=IMGSZ, conf=0.25, device=device, verbose=False), 1
    ):
        if threads is not None and count == 1:
            torch.set_num_threads(threads)
        if count >= frames:
            break
    return time.perf_counter() - started


def _darknet(path: Path, frames: int, batch: int) -> float:
    detector = DarknetDetector(classes=["person", "bicycle", "car"])
    images = []
    with av.open(str(path)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index >= frames:
                break
            images.append(rgb(frame))
    detector.detect(images[:1])  # warm-up
    started = time.perf_counter()
    for offset in range(0, len(images), batch):
        detector.detect(images[offset : offset + batch])
    return time.perf_counter() - started


def _ultralytics_threads() -> int:
    from ultralytics.utils import NUM_THREADS

    return int(NUM_THREADS)


def main(frames: int, repeat: int) -> dict[str, Any]:
    path = fetch_media(Path(".cache/media")) / "vtest.avi"
    detector = YoloDetector(WEIGHTS, classes=(), confidence=0.25, imgsz=IMGSZ, device="auto")
    with av.open(str(path)) as container:
        detector.detect([rgb(next(container.decode(video=0)))])  # warm-up
    timings: dict[str, list[float]] = {
        "ours_batched": [],
        "ultralytics_predict_stream": [],
        "ultralytics_predict_stream_all_cores": [],
        "darknet_batch4": [],
        "darknet_one_by_one": [],
    }
    for _ in range(repeat):
        timings["ultralytics_predict_stream"].append(_baseline(path, frames, detector.device, None))
        timings["ours_batched"].append(asyncio.run(_ours(path, frames, detector)))
        timings["ultralytics_predict_stream_all_cores"].append(
            _baseline(path, frames, detector.device, detector.cpu_threads)
        )
        timings["darknet_batch4"].append(_darknet(path, frames // 2, 4))
        timings["darknet_one_by_one"].append(_darknet(path, frames // 2, 1))
    fps = {
        name: round((frames if not name.startswith("darknet") else frames // 2) / median(values), 2)
        for name, values in timings.items()
    }
    return {
        "what": f"object detection on {path.name} ({frames} frames, {WEIGHTS}, imgsz {IMGSZ}, "
        f"device {detector.device}), decode included: frames per second",
        "timings_s": timings,
        "fps": fps,
        "ratio_ours_vs_ultralytics": round(fps["ours_batched"] / fps["ultralytics_predict_stream"], 3),
        "ratio_ours_vs_ultralytics_all_cores": round(
            fps["ours_batched"] / fps["ultralytics_predict_stream_all_cores"], 3
        ),
        "torch_threads": {
            "ours": detector.cpu_threads,
            "ultralytics_default": _ultralytics_threads(),
            "all_cores": detector.cpu_threads,
        },
        "ratio_darknet_batched_vs_single": round(fps["darknet_batch4"] / fps["darknet_one_by_one"], 3),
        "target": "ours / ultralytics >= 1.0",
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    result = main(args.frames, args.repeat)
    shown = ("fps", "ratio_ours_vs_ultralytics", "ratio_ours_vs_ultralytics_all_cores")
    print(json.dumps({k: result[k] for k in shown}, indent=2))
    print(f"wrote {write_result('detection', result)}")
