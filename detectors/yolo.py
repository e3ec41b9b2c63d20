"""ultralytics YOLO: the primary detector for users' own weights (`weights:` in the config).

Weights load from a local file only: ultralytics is put in offline mode before import, so a
missing file is an error and never a download. `device: auto` picks CUDA with half
precision when present, the CPU otherwise. Frames of every stream go in one batch.

ultralytics tunes the whole process for training when imported or set up: OpenMP gets
one thread (`OMP_NUM_THREADS=1` when unset), OpenCV one thread, and its predictor setup
gives PyTorch one thread less than the cores (one, on a 2-core machine). In an analysis
worker that halves the speed of CPU inference, OpenCV's DNN detector included, so
`import_ultralytics` keeps OpenCV's and OpenMP's settings and `YoloDetector` sets
PyTorch's threads itself (`cpu_threads`, default: the cores the process may use) once its
predictor is set up.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from detectors.base import RgbImage, available_cores
from detectors.weights import WeightsError
from streams.models import Detection


def offline_ultralytics() -> None:
    """Keep ultralytics from reaching the network or writing outside the checkout."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_VERBOSE", "False")
    os.environ.setdefault("YOLO_CONFIG_DIR", str(Path(__file__).resolve().parents[1] / ".cache" / "ultralytics"))


def import_ultralytics() -> Any:
    """`import ultralytics`, offline, leaving OpenCV's and OpenMP's thread counts as they were."""
    offline_ultralytics()
    import cv2

    os.environ.setdefault("OMP_NUM_THREADS", str(available_cores()))  # OpenMP's own default, kept
    threads = cv2.getNumThreads()
    import ultralytics

    cv2.setNumThreads(threads)
    return ultralytics


def resolve_device(device: str) -> str:
    """`auto` → `cuda:0` when torch sees a GPU, else `cpu`."""
    if device != "auto":
        return device
    import torch

    return "cuda:0" if torch.cuda.is_available() else "cpu"


class YoloDetector:
    """Object detection with an ultralytics YOLO model (`.pt`, `.onnx`, or a model `.yaml`)."""

    def __init__(
        self,
        weights: str,
        classes: Sequence[str] = (),
        confidence: float = 0.35,
        iou: float = 0.5,
        imgsz: int = 640,
        device: str = "auto",
        half: bool | None = None,
        cpu_threads: int | None = None,
    ) -> None:
        import_ultralytics()
        from ultralytics import YOLO

        path = Path(weights)
        if path.suffix in (".pt", ".onnx", ".engine", ".torchscript") and not path.is_file():
            raise WeightsError(f"YOLO weights not found: {path} (fusewatch never downloads weights)")
        self._model: Any = YOLO(str(path), task="detect", verbose=False)
        names: dict[int, str] = dict(self._model.names)
        if path.suffix == ".yaml" and all(str(i) == n for i, n in names.items()):
            names = self._coco_names(names)
        unknown = sorted(set(classes) - set(names.values()))
        if unknown:
            raise ValueError(f"classes not in the model: {unknown} (it knows: {', '.join(names.values())})")
        self._names = names
        self._class_ids = [i for i, n in names.items() if n in set(classes)] if classes else None
        self.device = resolve_device(device)
        self.half = self.device.startswith("cuda") if half is None else half
        self._confidence = confidence
        self._iou = iou
        self._imgsz = imgsz
        self.cpu_threads = cpu_threads or available_cores()
        self._warm_up()

    def _warm_up(self) -> None:
        """Set the predictor up now (model fused, on its device), not on the first frames."""
        import numpy as np

        self._predict([np.zeros((self._imgsz, self._imgsz, 3), dtype=np.uint8)])

    def _predict(self, images: list[Any]) -> Any:
        if self.device == "cpu":
            import torch

            if torch.get_num_threads() != self.cpu_threads:  # process-wide: another predictor's setup resets it
                torch.set_num_threads(self.cpu_threads)
        return self._model.predict(
            images,
            imgsz=self._imgsz,
            conf=self._confidence,
            iou=self._iou,
            device=self.device,
            half=self.half,
            classes=self._class_ids,
            verbose=False,
            batch=len(images),
        )

    def _coco_names(self, names: dict[int, str]) -> dict[int, str]:
        """A model built from an architecture YAML has numbered classes; give it COCO's names."""
        from ultralytics.utils import ROOT, YAML

        coco: dict[int, str] = YAML.load(ROOT / "cfg" / "datasets" / "coco.yaml")["names"]
        if len(coco) != len(names):
            return names
        self._model.model.names = coco
        return dict(coco)

    @property
    def labels(self) -> Sequence[str]:
        ids = self._class_ids if self._class_ids is not None else sorted(self._names)
        return tuple(self._names[i] for i in ids)

    def detect(self, images: Sequence[RgbImage]) -> list[list[Detection]]:
        if not images:
            return []
        results = self._predict([image[:, :, ::-1] for image in images])  # ultralytics takes BGR (OpenCV order)
        out: list[list[Detection]] = []
        for result in results:
            boxes = result.boxes
            detections = []
            for xyxyn, conf, cls in zip(
                boxes.xyxyn.cpu().numpy(), boxes.conf.cpu().numpy(), boxes.cls.cpu().numpy(), strict=True
            ):
                detections.append(
                    Detection(
                        label=self._names[int(cls)],
                        confidence=round(float(conf), 4),
                        box=(
                            round(float(xyxyn[0]), 4),
                            round(float(xyxyn[1]), 4),
                            round(float(xyxyn[2]), 4),
                            round(float(xyxyn[3]), 4),
                        ),
                    )
                )
            out.append(detections)
        return out
