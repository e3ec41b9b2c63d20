"""The ONNX export of the Darknet model: made once per model and size, atomically, and never stale.

Parity of the exported model with OpenCV's DNN on ONNX Runtime and OpenVINO (float32) is
proven with the other runtimes in test_darknet.py; here: where the export lives, when it
is made again, the install-time command, and OpenVINO's reduced precision.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from detectors.agreement import agreement
from detectors.base import RgbImage
from detectors.darknet import DarknetDetector
from detectors.darknet_onnx import OpenVinoDarknet, export_onnx, main, onnx_path
from detectors.weights import MODELS, model_path
from tests.helpers import video_frames

pytestmark = pytest.mark.models

YOLOV3_TINY = model_path(MODELS["yolov3-tiny"])
CFG, WEIGHTS = YOLOV3_TINY / "yolov3-tiny.cfg", YOLOV3_TINY / "yolov3-tiny.weights"

HALF_AGREEMENT = 0.9
"""Share of float32 detections that reduced precision must find too (same label, IoU ≥ 0.5)."""


def test_the_export_is_made_once_per_model_and_size(tmp_path: Path) -> None:
    path = export_onnx(CFG, WEIGHTS, 320, root=tmp_path)
    assert path == onnx_path(CFG, WEIGHTS, 320, root=tmp_path) and path.parent == tmp_path / "onnx"
    layers = json.loads(path.with_suffix(".layers.json").read_text())["yolo"]
    assert [(layer["thresh"], layer["nms_threshold"]) for layer in layers] == [(0.2, 0.0), (0.2, 0.0)], (
        "two [yolo] layers at OpenCV's defaults"
    )
    made = path.stat().st_mtime_ns
    assert export_onnx(CFG, WEIGHTS, 320, root=tmp_path) == path and path.stat().st_mtime_ns == made, "not again"
    assert onnx_path(CFG, WEIGHTS, 416, root=tmp_path) != path, "another input size is another file"
    assert sorted(p.name for p in (tmp_path / "onnx").iterdir()) == sorted(
        [path.name, path.with_suffix(".layers.json").name]
    ), "no partial file left behind"


def test_other_weights_or_cfg_get_their_own_export(tmp_path: Path) -> None:
    """The file is keyed by the cfg's and the weights' contents: a changed model is never run stale."""
    folder = tmp_path / "model"
    folder.mkdir()
    cfg, weights = folder / "yolov3-tiny.cfg", folder / "yolov3-tiny.weights"
    shutil.copy(CFG, cfg)
    data = bytearray(WEIGHTS.read_bytes())
    weights.write_bytes(bytes(data))
    first = onnx_path(cfg, weights, 416, root=tmp_path)
    assert first == onnx_path(CFG, WEIGHTS, 416, root=tmp_path), "same contents, same file"
    data[-4:] = b"\x00\x00\x80\x3f"
    weights.write_bytes(bytes(data))
    assert onnx_path(cfg, weights, 416, root=tmp_path) != first
    weights.write_bytes(WEIGHTS.read_bytes())
    cfg.write_text(CFG.read_text().replace("ignore_thresh = .7", "ignore_thresh = .6", 1))
    assert cfg.read_text() != CFG.read_text()
    assert onnx_path(cfg, weights, 416, root=tmp_path) != first


def test_an_export_without_its_layer_settings_is_made_again(tmp_path: Path) -> None:
    path = export_onnx(CFG, WEIGHTS, 320, root=tmp_path)
    path.with_suffix(".layers.json").unlink()
    assert export_onnx(CFG, WEIGHTS, 320, root=tmp_path) == path
    assert path.with_suffix(".layers.json").is_file()


def test_the_install_command_exports_the_packaged_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export"]) == 0
    out = capsys.readouterr().out
    assert "yolov3-tiny at 416" in out and onnx_path(CFG, WEIGHTS, 416).is_file()
    assert main(["convert"]) == 2


def test_openvino_half_keeps_the_detections_within_the_stated_agreement(media_dir: Path) -> None:
    """bf16 (where the CPU has it) moves scores a little; most detections stay, and f32 is the default."""
    frames: list[RgbImage] = video_frames(media_dir / "lobby.ts", every=60, limit=8) + video_frames(
        media_dir / "street.ts", every=25, limit=8
    )
    full, half = DarknetDetector(classes=()), DarknetDetector(classes=(), half=True)
    assert isinstance(full.runtime, OpenVinoDarknet) and full.runtime.precision == "f32"
    assert isinstance(half.runtime, OpenVinoDarknet) and half.runtime.precision in ("bf16", "f16", "f32")
    reference = full.detect(frames)
    assert sum(len(found) for found in reference) > 40, "frames with too little to compare"
    matched, total, extra = agreement(reference, half.detect(frames))
    print(f"{half.runtime.precision}: {matched}/{total} of float32's detections, {extra} more", file=sys.stderr)
    assert matched / total >= HALF_AGREEMENT and extra / total <= 1 - HALF_AGREEMENT
