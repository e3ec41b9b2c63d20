"""The Darknet runtimes against OpenCV's DNN: same rows, same detections, clear refusals.

OpenCV's DNN is the reference: PyTorch builds the same cfg + weights, and ONNX Runtime and
OpenVINO (float32) run the ONNX export of that build, so on the same letterboxed frames
each must give the same region rows (up to float32 rounding in the convolutions) and,
after the shared decode + NMS, the same detections.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import torch

from config.schema import DarknetDetectorConfig
from detectors import registry
from detectors.agreement import box_iou
from detectors.base import RgbImage
from detectors.darknet import DarknetDetector, OpenCvDarknet
from detectors.darknet_onnx import OnnxRuntimeDarknet, OpenVinoDarknet
from detectors.darknet_torch import (
    DarknetCfgError,
    DarknetNetwork,
    DarknetWeightsError,
    TorchDarknet,
    parse_cfg,
)
from detectors.letterbox import letterbox
from detectors.weights import MODELS, WeightsError, model_path
from streams.models import Detection
from tests.helpers import video_frames

pytestmark = pytest.mark.models

RAW_TOLERANCE = 1e-4
"""Max abs difference of any region-row value (box, objectness, class score) between runtimes."""
CONFIDENCE_TOLERANCE = 1e-3
"""Max abs difference of a detection's confidence between runtimes."""
BOX_IOU = 0.99
"""Min IoU of a detection's box in one runtime with the same detection in the other."""

YOLOV3_TINY = model_path(MODELS["yolov3-tiny"])


@pytest.fixture(scope="module")
def frames(media_dir: Path) -> list[RgbImage]:
    """People walking in the lobby (768x576) and the street with cars and cyclists (640x272)."""
    return video_frames(media_dir / "lobby.ts", every=150, limit=4) + video_frames(
        media_dir / "street.ts", every=50, limit=6
    )


Runtimes = tuple[int, DarknetDetector, DarknetDetector]


@pytest.fixture(
    scope="module",
    params=[(416, "torch"), (320, "torch"), (416, "onnxruntime"), (416, "openvino"), (320, "openvino")],
    ids=lambda p: f"{p[1]}-{p[0]}",
)
def runtimes(request: pytest.FixtureRequest) -> Iterator[Runtimes]:
    """The COCO YOLOv3-tiny on OpenCV and on another runtime (CPU, float32), every class."""
    size, runtime = request.param
    opencv = DarknetDetector(imgsz=size, runtime="opencv")
    yield size, opencv, DarknetDetector(imgsz=size, runtime=runtime, device="cpu")


def _canvases(frames: list[RgbImage], size: int) -> list[RgbImage]:
    return [letterbox(frame, size)[0] for frame in frames]


def _assert_rows_match(
    reference: list[npt.NDArray[np.float32]], ours: list[npt.NDArray[np.float32]], thresh: float = 0.2
) -> None:
    """Every value within RAW_TOLERANCE; a class score zeroed in only one runtime must be one at `thresh`."""
    assert [out.shape for out in ours] == [out.shape for out in reference]
    for expected, got in zip(reference, ours, strict=True):
        assert np.abs(expected[..., :5] - got[..., :5]).max() <= RAW_TOLERANCE
        scores, our_scores = expected[..., 5:], got[..., 5:]
        both = (scores > 0) & (our_scores > 0)
        assert np.abs(scores[both] - our_scores[both]).max(initial=0) <= RAW_TOLERANCE
        one_only = (scores > 0) != (our_scores > 0)
        assert np.all(np.maximum(scores, our_scores)[one_only] <= thresh + RAW_TOLERANCE), "a score far from thresh"


def _assert_same_detections(reference: list[Detection], ours: list[Detection]) -> None:
    """Same count; each reference detection has one of ours with its label, IoU >= BOX_IOU and a
    confidence within CONFIDENCE_TOLERANCE."""
    assert len(ours) == len(reference), (reference, ours)
    unmatched = list(ours)
    for expected in reference:
        match = next(
            (
                d
                for d in unmatched
                if d.label == expected.label
                and box_iou(d.box, expected.box) >= BOX_IOU
                and abs(d.confidence - expected.confidence) <= CONFIDENCE_TOLERANCE
            ),
            None,
        )
        assert match is not None, f"{expected} has no counterpart in {unmatched}"
        unmatched.remove(match)


def test_raw_rows_match_opencv_on_real_frames(runtimes: Runtimes, frames: list[RgbImage]) -> None:
    """Region rows of both [yolo] layers, batched: every value within RAW_TOLERANCE (1e-4 abs)."""
    size, opencv, other = runtimes
    canvases = _canvases(frames, size)
    reference, ours = opencv.runtime.raw(canvases), other.runtime.raw(canvases)
    _assert_rows_match(reference, ours)
    assert sum(int((out[..., 5:] > 0).sum()) for out in reference) > 20, "frames with too little to compare"


def test_detections_match_opencv(runtimes: Runtimes, frames: list[RgbImage]) -> None:
    """Same labels, boxes with IoU >= 0.99, confidences within 1e-3 abs, on every frame."""
    _, opencv, other = runtimes
    reference, ours = opencv.detect(frames), other.detect(frames)
    for expected, got in zip(reference, ours, strict=True):
        _assert_same_detections(expected, got)
    labels = {d.label for found in reference for d in found}
    assert {"person", "car"} <= labels, labels


def test_a_batch_gives_what_one_by_one_gives(runtimes: Runtimes, frames: list[RgbImage]) -> None:
    """Mixed frame sizes in one batch: rows within 1e-5 abs of the same frame alone, same detections."""
    size, _, other = runtimes
    frames = frames[::2]
    batched = other.runtime.raw(_canvases(frames, size))
    for index, canvas in enumerate(_canvases(frames, size)):
        alone = other.runtime.raw([canvas])
        for many, one in zip(batched, alone, strict=True):
            assert np.abs(many[index] - one[0]).max() <= 1e-5
    together = other.detect(frames)
    for frame, found in zip(frames, together, strict=True):
        _assert_same_detections(other.detect([frame])[0], found)


@pytest.mark.parametrize("options", ["thresh=0.1\nnms_threshold=0.4", "thresh=0.5", "scale_x_y=1.05"])
def test_yolo_options_as_opencv_reads_them(options: str, frames: list[RgbImage], tmp_path: Path) -> None:
    """OpenCV's own [yolo] options on the real model: score threshold, in-layer NMS, scale_x_y
    (rows within 1e-4 abs, as the shipped cfg)."""
    cfg = tmp_path / "yolov3-tiny.cfg"
    cfg.write_text((YOLOV3_TINY / "yolov3-tiny.cfg").read_text().replace("[yolo]\n", f"[yolo]\n{options}\n"))
    weights = YOLOV3_TINY / "yolov3-tiny.weights"
    canvases = _canvases(frames, 416)
    reference = OpenCvDarknet(cfg, weights).raw(canvases)
    ours = TorchDarknet(cfg, weights, device="cpu").raw(canvases)
    thresh = float(re.findall(r"thresh=([\d.]+)", options)[0]) if "thresh=" in options else 0.2
    _assert_rows_match(reference, ours, thresh)


# --------------------------------------------------------------------------- any cfg of the supported layers


def _conv(filters: int, size: int = 3, stride: int = 1, activation: str = "leaky", bn: int = 1, extra: str = "") -> str:
    return (
        f"[convolutional]\nbatch_normalize={bn}\nfilters={filters}\nsize={size}\nstride={stride}\npad=1\n"
        f"activation={activation}\n{extra}"
    )


def _yolo(mask: str) -> str:
    return (
        f"[yolo]\nmask={mask}\nanchors=10,14, 23,27, 37,58, 81,82, 135,169, 344,319\nclasses=3\nnum=6\n"
        "scale_x_y=1.05\nthresh=0\njitter=.3\nignore_thresh=.7\ntruth_thresh=1\nrandom=1\nresize=1.5\n"
        "nms_kind=greedynms\nbeta_nms=0.6\n"
    )


# YOLOv4-tiny's shape (route groups, concatenations, upsample, scale_x_y) plus a shortcut, the
# size=2 stride=1 max pool and every activation; 160x160 input, 3 classes.
V4_TINY_LIKE = (
    "[net]\nwidth=160\nheight=160\nchannels=3\nbatch=64\nsubdivisions=1\nmomentum=0.9\n"
    + _conv(8, stride=2)
    + _conv(16, stride=2)
    + _conv(16)  # 0-2
    + "[route]\nlayers=-1\ngroups=2\ngroup_id=1\n"
    + _conv(8, activation="mish")
    + _conv(8, activation="swish")
    + "[route]\nlayers = -1, -2\n"
    + _conv(16, 1)
    + "[route]\nlayers=-6,-1\n"  # 6-8
    + "[maxpool]\nsize=2\nstride=2\n"
    + _conv(32, activation="logistic")  # 9-10
    + _conv(16, 1)
    + _conv(32)
    + "[shortcut]\nfrom=-3\nactivation=leaky\n"  # 11-13
    + "[maxpool]\nsize=2\nstride=1\n"
    + _conv(32)
    + _conv(24, 1, activation="linear", bn=0)  # 14-16
    + _yolo("3,4,5")  # 17
    + "[route]\nlayers=-4\n"
    + _conv(16, 1)
    + "[upsample]\nstride=2\n"
    + "[route]\nlayers=-1, 8\n"  # 18-21
    + _conv(32)
    + _conv(24, 1, activation="linear", bn=0)
    + _yolo("1,2,3")  # 22-24
)
# Odd sizes, where Darknet's max-pool padding decides the output size (11 → 6), a 3x3 pool,
# grouped and explicitly padded convolutions; 44x44 input.
ODD_SIZES = (
    "[net]\nwidth=44\nheight=44\nchannels=3\n"
    + _conv(8, stride=2)
    + "[maxpool]\nsize=2\nstride=2\n"
    + "[maxpool]\nsize=2\nstride=2\n"
    + "[maxpool]\nsize=3\nstride=1\n"
    + _conv(16, extra="groups=2\n")
    + "[convolutional]\nbatch_normalize=1\nfilters=16\nsize=3\nstride=1\npad=0\npadding=1\nactivation=leaky\n"
    + _conv(24, 1, activation="linear", bn=0)
    + _yolo("0,1,2")
)


def _random_weights(cfg: str, path: Path, seed: int, version: tuple[int, int] = (0, 2)) -> None:
    """Weights of plausible magnitude for `cfg`, in Darknet's layout (header of the given version)."""
    rng = np.random.default_rng(seed)
    seen = np.array([0], "<i8" if version[0] * 10 + version[1] >= 2 else "<i4")
    parts = [np.array([*version, 0], "<i4").tobytes(), seen.tobytes()]
    for conv in DarknetNetwork(parse_cfg(cfg)).convolutions:
        filters, kernel = conv.conv.out_channels, conv.conv.weight
        parts.append(rng.normal(0, 0.1, filters).astype("<f4").tobytes())
        if conv.batch_normalize:
            parts += [
                rng.uniform(0.5, 1.5, filters).astype("<f4").tobytes(),
                rng.normal(0, 0.1, filters).astype("<f4").tobytes(),
                rng.uniform(0.5, 2.0, filters).astype("<f4").tobytes(),
            ]
        parts.append(rng.normal(0, (2 / kernel[0].numel()) ** 0.5, kernel.numel()).astype("<f4").tobytes())
    path.write_bytes(b"".join(parts))


@pytest.mark.parametrize(
    ("cfg", "size", "version"),
    [(V4_TINY_LIKE, 160, (0, 2)), (ODD_SIZES, 44, (0, 1))],
    ids=["v4-tiny-like", "odd-sizes"],
)
def test_any_cfg_of_the_supported_layers_matches_opencv(
    cfg: str, size: int, version: tuple[int, int], frames: list[RgbImage], tmp_path: Path
) -> None:
    """Random weights, real frames: rows within 1e-4 abs of OpenCV's (`thresh=0`: no score is cut)."""
    (tmp_path / "net.cfg").write_text(cfg)
    _random_weights(cfg, tmp_path / "net.weights", seed=size, version=version)
    canvases = _canvases(frames[:2] + frames[-2:], size)
    reference = OpenCvDarknet(tmp_path / "net.cfg", tmp_path / "net.weights").raw(canvases)
    ours = TorchDarknet(tmp_path / "net.cfg", tmp_path / "net.weights", device="cpu").raw(canvases)
    assert [out.shape[1] for out in ours] == ([20 * 20 * 3, 40 * 40 * 3] if size == 160 else [6 * 6 * 3])
    for expected, got in zip(reference, ours, strict=True):
        assert np.abs(expected - got).max() <= RAW_TOLERANCE


# --------------------------------------------------------------------------- refusals


def _section_line(cfg: str, needle: str) -> int:
    return cfg.splitlines().index(needle) + 1


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda c: c.replace("[upsample]\nstride=2\n", "[crop]\ncrop_width=10\n"),
            r"net\.cfg:{crop}: \[crop\] \(layer 20\): unsupported layer type \[crop\]",
        ),
        (
            lambda c: c.replace(
                "stride=2\npad=1\nactivation=leaky\n", "stride=2\npad=1\nactivation=leaky\ndilation=2\n", 1
            ),
            r"net\.cfg:{dilation}: \[convolutional\] \(layer 0\): unsupported option dilation=2",
        ),
        (
            lambda c: c.replace("[maxpool]\nsize=2\nstride=1\n", "[maxpool]\nsize=2\nstride=1\nfoo=1\n"),
            r"net\.cfg:{foo}: \[maxpool\] \(layer 14\): unsupported option 'foo'",
        ),
        (
            lambda c: c.replace("activation=mish\n", ""),
            r"\[convolutional\] \(layer 4\): missing option 'activation' \(Darknet and OpenCV default it differently",
        ),
        (
            lambda c: c.replace("activation=swish", "activation=relu"),
            r"\[convolutional\] \(layer 5\): unsupported activation=relu \(supported: linear, leaky",
        ),
        (
            lambda c: c.replace("layers=-4", "layers=19"),
            r"\[route\] \(layer 18\): layers refers to layer 19, not an earl",
        ),
        (lambda c: c.replace("layers=-4", "layers=-1"), r"\[route\] \(layer 18\): layers refers to \[yolo\] layer 17"),
        (lambda c: c.replace("classes=3", "classes=4", 1), r"\[yolo\] \(layer 17\): the layer before has 24 channels"),
        (lambda c: c.replace("momentum=0.9", "momentum 0.9"), r"net\.cfg:7: expected 'key=value', got 'momentum 0.9'"),
    ],
)
def test_cfg_errors_name_file_line_and_section(edit: Callable[[str], str], message: str, tmp_path: Path) -> None:
    """Unsupported layer types and options are refused, naming file:line, the section and its layer index."""
    cfg = edit(V4_TINY_LIKE)
    lines = {
        "crop": _section_line(cfg, "[crop]") if "[crop]" in cfg else 0,
        "dilation": _section_line(cfg, "dilation=2") if "dilation=2" in cfg else 0,
        "foo": _section_line(cfg, "foo=1") if "foo=1" in cfg else 0,
    }
    (tmp_path / "net.cfg").write_text(cfg)
    with pytest.raises(DarknetCfgError, match=message.format(**lines)):
        DarknetNetwork.from_cfg(tmp_path / "net.cfg")


def test_truncated_or_overlong_weights_are_refused_with_the_counts(tmp_path: Path) -> None:
    """The real weights, 1000 bytes short or 4 bytes long: the error gives the floats expected and present."""
    data = (YOLOV3_TINY / "yolov3-tiny.weights").read_bytes()
    expected = (len(data) - 20) // 4  # version 0.2 header: 3 int32 + int64 `seen`
    network = DarknetNetwork.from_cfg(YOLOV3_TINY / "yolov3-tiny.cfg")
    (tmp_path / "short.weights").write_bytes(data[:-1000])
    with pytest.raises(
        DarknetWeightsError,
        match=f"truncated: the cfg's 13 convolutions need {expected} floats, "
        f"the file has {expected - 250} after its 20-byte header",
    ):
        network.load_weights(tmp_path / "short.weights")
    (tmp_path / "long.weights").write_bytes(data + b"\0" * 4)
    with pytest.raises(
        DarknetWeightsError, match=f"longer than the cfg needs: .* need {expected} floats, the file has {expected + 1}"
    ):
        network.load_weights(tmp_path / "long.weights")
    (tmp_path / "stub.weights").write_bytes(data[:10])
    with pytest.raises(WeightsError, match="too short for a Darknet weights header"):
        TorchDarknet(YOLOV3_TINY / "yolov3-tiny.cfg", tmp_path / "stub.weights", device="cpu")


# --------------------------------------------------------------------------- config and wiring


def test_config_selects_the_runtime_and_device() -> None:
    detector = registry.object_detector(DarknetDetectorConfig(type="darknet", runtime="torch", classes=["person"]))
    assert isinstance(detector, DarknetDetector) and isinstance(detector.runtime, TorchDarknet)
    assert detector.runtime.device == ("cuda:0" if torch.cuda.is_available() else "cpu")
    assert detector.runtime.half is False
    default = registry.object_detector(DarknetDetectorConfig(type="darknet"))
    assert isinstance(default, DarknetDetector) and isinstance(default.runtime, OpenVinoDarknet)
    assert default.runtime.precision == "f32", "float32 unless half is asked for"
    opencv = registry.object_detector(DarknetDetectorConfig(type="darknet", runtime="opencv"))
    assert isinstance(opencv, DarknetDetector) and isinstance(opencv.runtime, OpenCvDarknet)
    onnx = registry.object_detector(DarknetDetectorConfig(type="darknet", runtime="onnxruntime"))
    assert isinstance(onnx, DarknetDetector) and isinstance(onnx.runtime, OnnxRuntimeDarknet)
    for runtime in ("opencv", "onnxruntime", "openvino"):
        with pytest.raises(ValueError, match=f"only runtime torch takes device cuda \\(runtime is {runtime}\\)"):
            DarknetDetectorConfig(type="darknet", runtime=runtime, device="cuda")
        with pytest.raises(ValueError, match=f"the {runtime} runtime runs on the CPU"):
            DarknetDetector(runtime=runtime, device="cuda")
    for runtime in ("opencv", "onnxruntime"):
        with pytest.raises(ValueError, match=f"only runtimes torch and openvino take half \\(runtime {runtime}"):
            DarknetDetectorConfig(type="darknet", runtime=runtime, half=True)
        with pytest.raises(ValueError, match="runs float32 only"):
            DarknetDetector(runtime=runtime, half=True)
    assert DarknetDetectorConfig(type="darknet", half=True).half, "openvino takes half (the CPU's bf16)"
    with pytest.raises(ValueError, match="half precision with runtime torch runs on CUDA only"):
        DarknetDetectorConfig(type="darknet", runtime="torch", device="cpu", half=True)
    with pytest.raises(ValueError, match="unknown darknet runtime 'tensorrt'"):
        DarknetDetector(runtime="tensorrt")  # type: ignore[arg-type]
    dumped = DarknetDetectorConfig(type="darknet").model_dump(mode="json")
    assert DarknetDetectorConfig.model_validate(dumped).runtime == "openvino", "a dumped config loads again"
    with pytest.raises(ValueError, match="half precision needs CUDA"):
        TorchDarknet(YOLOV3_TINY / "yolov3-tiny.cfg", YOLOV3_TINY / "yolov3-tiny.weights", device="cpu", half=True)
    if not torch.cuda.is_available():  # `auto` on a CPU machine: float32 there, half only on CUDA
        auto = TorchDarknet(YOLOV3_TINY / "yolov3-tiny.cfg", YOLOV3_TINY / "yolov3-tiny.weights", half=True)
        assert (auto.device, auto.half) == ("cpu", False)


_LAZY_TORCH = """
import sys
import numpy as np
from detectors.darknet import DarknetDetector
DarknetDetector(classes=["person"], runtime="{runtime}").detect([np.zeros((240, 320, 3), np.uint8)])
print("torch" in sys.modules)
"""


@pytest.mark.parametrize("runtime", ["opencv", "openvino", "onnxruntime"])
def test_the_cpu_runtimes_never_import_torch(runtime: str) -> None:
    """Once exported (at install), the ONNX runtimes run without torch, as OpenCV's does."""
    import subprocess

    done = subprocess.run(
        [sys.executable, "-c", _LAZY_TORCH.format(runtime=runtime)],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[3],
    )
    assert done.stdout.strip().splitlines()[-1] == "False"
