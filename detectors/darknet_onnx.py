"""Darknet YOLO models exported to ONNX, run on ONNX Runtime or OpenVINO (CPU).

The PyTorch build of the cfg (`detectors.darknet_torch`) is exported once per
(cfg, weights, input size) with the TorchScript exporter to a content-addressed file
under `models_dir()/onnx/` (`deploy/install.sh` does it at install; a missing file is
exported on first use, from the checksummed weights already on disk — nothing is fetched).
The graph ends where the PyTorch module ends, at OpenCV's region-layer rows with the
per-layer threshold applied; the per-layer NMS that OpenCV's region layer adds is done on
the outputs here (`region_nms`), so both runtimes give the rows the other runtimes give.
The `[yolo]` layers' settings it needs are written beside the export (`.layers.json`), so
running an exported model never imports torch.

- `onnxruntime`: ONNX Runtime's CPU execution provider, float32.
- `openvino`: OpenVINO's CPU plugin (what Frigate and DL Streamer use on Intel CPUs; it
  runs on any x86-64 or ARM CPU). Float32 unless `half` is set; with `half` the plugin's own
  reduced precision is used (bf16 on CPUs that have it, otherwise float32), which moves
  detections a little: the agreement is measured in `bench/README.md`.

Batch size is a dynamic axis of the graph; the input side is fixed at export.
"""

from __future__ import annotations

import hashlib
import json
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from detectors.base import RgbImage, available_cores
from detectors.darknet import region_nms
from detectors.weights import MODELS, models_dir, verify, write_atomically

OPSET = 17
EXPORT_FORMAT = 1
"""Bumped when the exported graph changes for the same inputs (it is part of the file's key)."""


def onnx_path(cfg: Path, weights: Path, imgsz: int, root: Path | None = None) -> Path:
    """Where the export of this cfg + weights at this input size lives (it may not exist yet)."""
    digest = hashlib.sha256()
    for part in (cfg.read_bytes(), weights.read_bytes(), f"{imgsz}:{OPSET}:{EXPORT_FORMAT}".encode()):
        digest.update(hashlib.sha256(part).digest())
    return (root or models_dir()) / "onnx" / f"{cfg.stem}-{imgsz}-{digest.hexdigest()[:16]}.onnx"


def _layers_path(model: Path) -> Path:
    return model.with_suffix(".layers.json")


def export_onnx(cfg: Path, weights: Path, imgsz: int, root: Path | None = None) -> Path:
    """The ONNX file of this model, exported now unless it already exists (written atomically).

    The `.layers.json` beside it is written first: an `.onnx` file is only ever there with it.
    """
    target = onnx_path(cfg, weights, imgsz, root)
    if target.is_file() and _layers_path(target).is_file():
        return target
    import torch

    from detectors.darknet_torch import DarknetNetwork

    network = DarknetNetwork.from_cfg(cfg)
    network.load_weights(weights)
    network.eval().requires_grad_(False)
    outputs = [f"yolo{i}" for i in range(len(network.yolo_layers))]
    layers = [{"thresh": layer.thresh, "nms_threshold": layer.nms_threshold} for layer in network.yolo_layers]
    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(_layers_path(target), lambda path: path.write_text(json.dumps({"yolo": layers}, indent=1)))

    def export(path: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's notes on constant folding of slices
            torch.onnx.export(
                network,
                (torch.zeros(1, network.channels, imgsz, imgsz),),
                str(path),
                dynamo=False,
                opset_version=OPSET,
                input_names=["images"],
                output_names=outputs,
                dynamic_axes={name: {0: "batch"} for name in ["images", *outputs]},
            )

    write_atomically(target, export)
    return target


def _blob(images: Sequence[RgbImage]) -> npt.NDArray[np.float32]:
    """Letterboxed RGB uint8 (N, H, W, 3) → float32 (N, 3, H, W) in [0, 1], as the network takes it."""
    batch = np.stack(images).transpose(0, 3, 1, 2).astype(np.float32)
    batch *= np.float32(1 / 255.0)
    return np.ascontiguousarray(batch)


class _ExportedDarknet:
    """What both ONNX runtimes share: the export, the cfg's `[yolo]` settings, the region NMS."""

    def __init__(self, cfg: Path, weights: Path, imgsz: int) -> None:
        self.path = export_onnx(cfg, weights, imgsz)
        layers = json.loads(_layers_path(self.path).read_text())["yolo"]
        self._layers = [(float(layer["thresh"]), float(layer["nms_threshold"])) for layer in layers]

    def _finish(self, outputs: list[npt.NDArray[np.float32]]) -> list[npt.NDArray[np.float32]]:
        for out, (thresh, nms_threshold) in zip(outputs, self._layers, strict=True):
            for rows in out:
                region_nms(rows, thresh, nms_threshold)
        return outputs


class OnnxRuntimeDarknet(_ExportedDarknet):
    """The exported network on ONNX Runtime's CPU provider (float32); `cpu_threads`: its intra-op threads."""

    def __init__(self, cfg: Path, weights: Path, imgsz: int, cpu_threads: int | None = None) -> None:
        super().__init__(cfg, weights, imgsz)
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = cpu_threads or available_cores()
        options.inter_op_num_threads = 1
        self._session = onnxruntime.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name

    def raw(self, images: Sequence[RgbImage]) -> list[npt.NDArray[np.float32]]:
        outputs = self._session.run(None, {self._input: _blob(images)})
        return self._finish([np.asarray(out, dtype=np.float32) for out in outputs])


class OpenVinoDarknet(_ExportedDarknet):
    """The exported network on OpenVINO's CPU plugin, tuned for latency (one request at a time).

    `half`: the plugin's reduced inference precision (bf16 where the CPU has it); otherwise
    float32, which gives OpenCV's detections. `cpu_threads`: the plugin's inference threads.
    """

    def __init__(
        self, cfg: Path, weights: Path, imgsz: int, cpu_threads: int | None = None, half: bool = False
    ) -> None:
        super().__init__(cfg, weights, imgsz)
        import openvino

        core = openvino.Core()
        settings: dict[str, Any] = {
            "INFERENCE_NUM_THREADS": cpu_threads or available_cores(),
            "PERFORMANCE_HINT": "LATENCY",
        }
        if not half:
            settings["INFERENCE_PRECISION_HINT"] = "f32"
        self._compiled = core.compile_model(core.read_model(str(self.path)), "CPU", settings)
        self.precision: str = self._compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
        self._request = self._compiled.create_infer_request()

    def raw(self, images: Sequence[RgbImage]) -> list[npt.NDArray[np.float32]]:
        results = self._request.infer({0: _blob(images)})
        return self._finish([np.array(results[output], dtype=np.float32) for output in self._compiled.outputs])


def main(argv: list[str]) -> int:
    """`python -m detectors.darknet_onnx export [IMGSZ]`: export the packaged model (install time)."""
    if len(argv) not in (1, 2) or argv[0] != "export":
        print("usage: python -m detectors.darknet_onnx export [IMGSZ]", file=sys.stderr)
        return 2
    imgsz = int(argv[1]) if len(argv) == 2 else 416
    folder = verify(MODELS["yolov3-tiny"])
    path = export_onnx(folder / "yolov3-tiny.cfg", folder / "yolov3-tiny.weights", imgsz)
    print(f"onnx: yolov3-tiny at {imgsz} in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
