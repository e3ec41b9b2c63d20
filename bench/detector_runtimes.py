"""The COCO detector's runtimes, and what motion gating saves, side by side in one run.

Runtimes: the same YOLOv3-tiny cfg + weights through `DarknetDetector` on OpenCV DNN (the
baseline: what fusewatch ran before), on PyTorch (`detectors/darknet_torch.py`), and the
ONNX export of that on ONNX Runtime and on OpenVINO (float32, and OpenVINO's reduced
precision, bf16 where the CPU has it; `detectors/darknet_onnx.py`), on the same frames of
lobby.ts, one by one and in batches of 4 and 8, every core for each. On a CUDA machine the
torch runtime also runs there (float32 and half), also in batches of 16, 32 and 64: one
GPU batching the frames of many streams. Each runtime's detections are matched
with OpenCV's on frames of lobby.ts and street.ts (same label, IoU ≥ 0.5): the share found
and the extra ones are reported, as the condition for offering a reduced precision.

Motion gating: `MotionGate` (the default settings and gate period) against detecting every sampled frame, on the
people-walking lobby (busy) and on a quiet scene built from it: the per-pixel median of the
lobby's frames is the empty hall; it loops with camera noise for the recording's length,
and one of the lobby's own stretches of people walking plays in it once. Reported: the
share of sampled frames the detector still sees, and the detector plus motion time per
sampled frame against detecting all of them.

    .venv/bin/python -m bench.detector_runtimes [--frames 48] [--repeat 3]
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import av
import numpy as np

from bench.common import median, run_on_frames
from config.schema import MotionConfig
from daemon.analyze.video import gate_period_ms, motion_gate
from daemon.cli.commands import fetch_media
from detectors.agreement import agreement
from detectors.base import RgbImage, available_cores
from detectors.darknet import DarknetDetector
from streams.windows import window_start

NS = 1_000_000_000
SAMPLE_FPS = 5
WINDOW_MS = 2000  # the default feature window
GPU_BATCHES = (16, 32, 64)


def _frames(name: str, every: int, limit: int) -> list[RgbImage]:
    path = fetch_media(Path(".cache/media")) / name
    frames: list[RgbImage] = []
    with av.open(str(path)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index % every == 0:
                frames.append(np.asarray(frame.to_ndarray(format="rgb24"), dtype=np.uint8))
            if len(frames) >= limit:
                break
    return frames


def _fps(run: Callable[[Sequence[RgbImage]], object], frames: list[RgbImage], batch: int, repeat: int) -> float:
    run(frames[:batch])  # warm-up
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        for index in range(0, len(frames), batch):
            run(frames[index : index + batch])
        times.append(time.perf_counter() - started)
    return round(len(frames) / median(times), 2)


def _detectors() -> dict[str, DarknetDetector]:
    every_class: list[str] = []
    detectors = {
        "opencv": DarknetDetector(classes=every_class, runtime="opencv"),
        "torch_cpu": DarknetDetector(classes=every_class, runtime="torch", device="cpu"),
        "onnxruntime": DarknetDetector(classes=every_class, runtime="onnxruntime"),
        "openvino": DarknetDetector(classes=every_class, runtime="openvino"),
        "openvino_half": DarknetDetector(classes=every_class, runtime="openvino", half=True),
    }
    import torch

    if torch.cuda.is_available():
        detectors["torch_cuda"] = DarknetDetector(classes=every_class, runtime="torch", device="cuda")
        detectors["torch_cuda_half"] = DarknetDetector(classes=every_class, runtime="torch", device="cuda", half=True)
    return detectors


def runtimes(detectors: dict[str, DarknetDetector], frames: list[RgbImage], repeat: int) -> dict[str, float]:
    fps: dict[str, float] = {}
    for batch in (1, 4, 8):
        for name, detector in detectors.items():  # interleaved: a slower minute of the machine hits all
            fps[f"{name}_batch{batch}"] = _fps(detector.detect, frames, batch, repeat)
    many = (frames * (1 + GPU_BATCHES[-1] * 2 // max(len(frames), 1)))[: GPU_BATCHES[-1] * 2]
    for batch in GPU_BATCHES:  # a GPU's batches across many streams (DeepStream's way)
        for name, detector in detectors.items():
            if name.startswith("torch_cuda"):
                fps[f"{name}_batch{batch}"] = _fps(detector.detect, many, batch, repeat)
    return fps


def agreements(detectors: dict[str, DarknetDetector], frames: list[RgbImage]) -> dict[str, dict[str, Any]]:
    """Each runtime's detections against OpenCV's on the same frames (every class)."""
    reference = detectors["opencv"].detect(frames) if frames else []
    result: dict[str, dict[str, Any]] = {}
    for name, detector in detectors.items():
        if name == "opencv":
            continue
        matched, total, extra = agreement(reference, [detector.detect([frame])[0] for frame in frames])
        precision = getattr(detector.runtime, "precision", "f16" if name.endswith("half") else "f32")
        result[name] = {
            "precision": precision,
            "matched": matched,
            "reference": total,
            "extra": extra,
            "share_found": round(matched / total, 4) if total else None,
        }
    return result


def _quiet_scene(busy: list[RgbImage], seconds: float) -> list[RgbImage]:
    """The empty hall with camera noise, and a few seconds of people walking through once."""
    empty = np.median(np.stack(busy[::4]), axis=0).astype(np.uint8)
    rng = np.random.default_rng(7)
    count = round(seconds * SAMPLE_FPS)
    walk = busy[: 3 * SAMPLE_FPS]
    scene = []
    for index in range(count):
        base = walk[index - count // 2] if 0 <= index - count // 2 < len(walk) else empty
        noise = rng.integers(-3, 4, size=base.shape)
        scene.append(np.clip(base.astype(np.int16) + noise, 0, 255).astype(np.uint8))
    return scene


def gating(detector: DarknetDetector, scene: list[RgbImage]) -> dict[str, Any]:
    motion = MotionConfig()  # the default gate and its period
    gate, period_ms = motion_gate(motion), gate_period_ms(motion, WINDOW_MS)
    assert gate is not None
    detected = motion_s = detect_s = 0.0
    for index, image in enumerate(scene):
        started = time.perf_counter()
        wall_ns = index * NS // SAMPLE_FPS
        needed = gate.needs_detection(image, wall_ns, window_start(wall_ns, period_ms))
        motion_s += time.perf_counter() - started
        if needed:
            started = time.perf_counter()
            detector.detect([image])
            detect_s += time.perf_counter() - started
            detected += 1
    started = time.perf_counter()
    for image in scene:
        detector.detect([image])
    every_s = time.perf_counter() - started
    return {
        "frames": len(scene),
        "detected": int(detected),
        "share_detected": round(detected / len(scene), 3),
        "motion_ms_per_frame": round(1000 * motion_s / len(scene), 3),
        "gated_ms_per_frame": round(1000 * (motion_s + detect_s) / len(scene), 2),
        "every_frame_ms_per_frame": round(1000 * every_s / len(scene), 2),
        "ratio_gated_vs_every_frame": round((motion_s + detect_s) / every_s, 3),
    }


def main(frames: int, repeat: int) -> dict[str, Any]:
    lobby = _frames("lobby.ts", every=2, limit=max(frames, 20 * SAMPLE_FPS))  # 10 fps → 5 fps sampled
    detectors = _detectors()
    fps = runtimes(detectors, lobby[:frames], repeat)
    compared = lobby[::5] + _frames("street.ts", every=10, limit=60)
    detector = DarknetDetector()  # the default runtime
    scenes = {
        "busy (lobby, people walking)": lobby[: 20 * SAMPLE_FPS],
        "quiet (empty hall, noise, one walk-through)": _quiet_scene(lobby, 60.0),
    }
    return {
        "frames": frames,
        "threads": available_cores(),
        "fps": fps,
        "ratio_vs_opencv": {
            name: {f"batch{b}": round(fps[f"{name}_batch{b}"] / fps[f"opencv_batch{b}"], 3) for b in (1, 4, 8)}
            for name in detectors
            if name != "opencv"
        },
        "agreement_with_opencv": {"frames": len(compared), **agreements(detectors, compared)},
        "gating": {name: gating(detector, scene) for name, scene in scenes.items()},
    }


if __name__ == "__main__":
    run_on_frames("detector_runtimes", __doc__, main, frames=48, repeat=3)
