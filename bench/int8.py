"""INT8 post-training quantization of the COCO detector against float32, side by side in one run.

The capacity issue allowed INT8 only if the detections on the test frames stay within a stated
agreement. This quantizes the ONNX export of YOLOv3-tiny (`detectors/darknet_onnx.py`) with
ONNX Runtime's static quantizer (QDQ; weights int8 per output channel, activations uint8,
min/max calibration on frames of lobby.ts and street.ts that are not among the compared ones)
and runs the result on OpenVINO and on ONNX Runtime, each beside its own float32 graph.

Variants: every convolution quantized (`all_conv`), and every convolution but the first
layer and the two detection heads (`conv_but_ends`, the layers quantization hurts most).
Reported per variant and runtime: the share of OpenCV's detections found (same label,
IoU ≥ 0.5) and the extra ones, as `detector_runtimes` reports float32 and `half`, and fps at
batches 1 and 8 against float32 on the same runtime. The bar is the one `half` is held to in
the tests (0.9 of OpenCV's detections).

    .venv/bin/python -m bench.int8 [--frames 48] [--repeat 3]
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from bench.common import run_on_frames
from bench.detector_runtimes import _fps, _frames, agreements
from detectors.base import RgbImage, available_cores
from detectors.darknet import DarknetDetector
from detectors.darknet_onnx import OnnxRuntimeDarknet, OpenVinoDarknet, _blob
from detectors.letterbox import letterbox

IMGSZ = 416
HEAD_CHANNELS = 255  # 3 anchors × (4 box + 1 objectness + 80 COCO classes): a detection head's conv
AGREEMENT_BAR = 0.9


def quantize(model: Path, frames: Sequence[RgbImage], variant: str, target: Path) -> dict[str, Any]:
    """Write the INT8 graph of `model` to `target`; what was left in float32."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = target.with_suffix(".pre.onnx")
    with contextlib.chdir(target.parent):  # where a failing shape inference leaves its files
        quant_pre_process(str(model), str(prepared), skip_symbolic_shape=True)  # symbolic: fails on the heads
    graph = onnx.load(str(prepared)).graph
    weights = {tensor.name: tensor for tensor in graph.initializer}
    convs = [node for node in graph.node if node.op_type == "Conv"]
    excluded: list[str] = []
    if variant == "conv_but_ends":
        excluded = [convs[0].name] + [
            node.name for node in convs if node.input[1] in weights and weights[node.input[1]].dims[0] == HEAD_CHANNELS
        ]

    class Calibration(CalibrationDataReader):  # type: ignore[misc]
        """The letterboxed frames, one at a time."""

        def __init__(self) -> None:
            self._left = iter([{"images": _blob([letterbox(frame, IMGSZ)[0]])} for frame in frames])

        def get_next(self) -> dict[str, npt.NDArray[np.float32]] | None:
            return next(self._left, None)

    quantize_static(
        str(prepared),
        str(target),
        Calibration(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
        op_types_to_quantize=["Conv"],
        nodes_to_exclude=excluded,
    )
    return {"convolutions": len(convs), "left_float32": excluded, "calibration_frames": len(frames)}


class _Int8OpenVino:
    """The INT8 graph on OpenVINO's CPU plugin, finished as the float32 runtime finishes its own."""

    precision = "int8"

    def __init__(self, float32: OpenVinoDarknet, model: Path) -> None:
        import openvino

        core = openvino.Core()
        settings = {"INFERENCE_NUM_THREADS": available_cores(), "PERFORMANCE_HINT": "LATENCY"}
        self._float32 = float32
        self._compiled = core.compile_model(core.read_model(str(model)), "CPU", settings)
        self._request = self._compiled.create_infer_request()

    def raw(self, images: Sequence[RgbImage]) -> list[npt.NDArray[np.float32]]:
        results = self._request.infer({0: _blob(images)})
        return self._float32._finish([np.array(results[output], dtype=np.float32) for output in self._compiled.outputs])


class _Int8OnnxRuntime:
    """The INT8 graph on ONNX Runtime's CPU provider, finished as the float32 runtime finishes its own."""

    precision = "int8"

    def __init__(self, float32: OnnxRuntimeDarknet, model: Path) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = available_cores()
        options.inter_op_num_threads = 1
        self._float32 = float32
        self._session = onnxruntime.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])

    def raw(self, images: Sequence[RgbImage]) -> list[npt.NDArray[np.float32]]:
        outputs = self._session.run(None, {self._session.get_inputs()[0].name: _blob(images)})
        return self._float32._finish([np.asarray(out, dtype=np.float32) for out in outputs])


def _int8(runtime: str, model: Path) -> DarknetDetector:
    detector = DarknetDetector(classes=[], runtime="openvino" if runtime == "openvino" else "onnxruntime")
    float32 = detector.runtime
    if isinstance(float32, OpenVinoDarknet):
        detector.runtime = _Int8OpenVino(float32, model)
    elif isinstance(float32, OnnxRuntimeDarknet):
        detector.runtime = _Int8OnnxRuntime(float32, model)
    return detector


def main(frames: int, repeat: int) -> dict[str, Any]:
    lobby = _frames("lobby.ts", every=2, limit=max(frames, 100))  # 10 fps → 5 fps sampled
    street = _frames("street.ts", every=5, limit=120)
    compared = lobby[::5] + street[::2]  # the frames `detector_runtimes` compares on
    calibration = [frame for index, frame in enumerate(lobby) if index % 6 == 1 and index % 5] + street[1::8]
    float32 = {
        "openvino": DarknetDetector(classes=[], runtime="openvino"),
        "onnxruntime": DarknetDetector(classes=[], runtime="onnxruntime"),
    }
    source = float32["openvino"].runtime
    assert isinstance(source, OpenVinoDarknet)
    detectors: dict[str, DarknetDetector] = {"opencv": DarknetDetector(classes=[], runtime="opencv"), **float32}
    variants: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for variant in ("all_conv", "conv_but_ends"):
            model = Path(scratch) / f"{variant}.onnx"
            variants[variant] = quantize(source.path, calibration, variant, model)
            for runtime in float32:
                detectors[f"{runtime}_int8_{variant}"] = _int8(runtime, model)
        agreed = agreements(detectors, compared)
        fps = {
            f"{name}_batch{batch}": _fps(detector.detect, lobby[:frames], batch, repeat)
            for batch in (1, 8)
            for name, detector in detectors.items()
        }
    speedups = {
        name: {
            f"batch{batch}": round(fps[f"{name}_batch{batch}"] / fps[f"{name.split('_int8')[0]}_batch{batch}"], 3)
            for batch in (1, 8)
        }
        for name in detectors
        if "_int8_" in name
    }
    return {
        "frames": frames,
        "threads": available_cores(),
        "agreement_bar": AGREEMENT_BAR,
        "variants": variants,
        "agreement_with_opencv": {"frames": len(compared), **agreed},
        "fps": fps,
        "speedup_vs_float32": speedups,
        "within_bar": {
            name: bool(agreed[name]["share_found"] is not None and agreed[name]["share_found"] >= AGREEMENT_BAR)
            for name in speedups
        },
    }


if __name__ == "__main__":
    run_on_frames("int8", __doc__, main, frames=48, repeat=3)
