"""Object detectors on real media: the pretrained Darknet YOLOv3-tiny and the ultralytics plumbing."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from config.schema import DarknetDetectorConfig, YoloDetectorConfig
from detectors import registry
from detectors.darknet import DarknetDetector
from detectors.letterbox import letterbox
from detectors.tracking import ObjectTracker
from detectors.weights import WeightsError
from detectors.yolo import YoloDetector
from tests.helpers import video_frames

pytestmark = pytest.mark.models


@pytest.fixture(scope="module")
def darknet() -> DarknetDetector:
    detector = registry.object_detector(DarknetDetectorConfig(type="darknet", classes=["person", "bicycle", "car"]))
    assert isinstance(detector, DarknetDetector)
    return detector


def test_people_are_found_in_nearly_every_frame_of_the_hall(darknet: DarknetDetector, media_dir: Path) -> None:
    frames = video_frames(media_dir / "vtest.avi", every=20)
    results = darknet.detect(frames)
    with_person = sum(any(d.label == "person" for d in found) for found in results)
    assert with_person / len(frames) >= 0.9
    for found in results:
        for detection in found:
            x1, y1, x2, y2 = detection.box
            assert 0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1
            assert detection.confidence >= 0.25 and detection.label in darknet.labels


def test_street_has_cars_persons_and_bicycles(media_dir: Path) -> None:
    detector = DarknetDetector(classes=["person", "bicycle", "car"], confidence=0.1)
    labels = Counter(
        d.label for found in detector.detect(video_frames(media_dir / "bikes.mp4", every=5)) for d in found
    )
    assert labels["car"] > 0 and labels["person"] > 0 and labels["bicycle"] > 0, labels


def test_batch_equals_one_by_one(darknet: DarknetDetector, media_dir: Path) -> None:
    frames = video_frames(media_dir / "vtest.avi", every=50, limit=3)
    frames.append(video_frames(media_dir / "bikes.mp4", limit=1)[0])  # mixed sizes in one batch
    batched = darknet.detect(frames)
    single = [darknet.detect([frame])[0] for frame in frames]
    assert [[(d.label, d.box) for d in r] for r in batched] == [[(d.label, d.box) for d in r] for r in single]


def test_class_filter_and_unknown_classes() -> None:
    cars_only = DarknetDetector(classes=["car"])
    assert cars_only.labels == ("car",)
    with pytest.raises(ValueError, match="classes not in the model"):
        DarknetDetector(classes=["unicorn"])
    with pytest.raises(WeightsError, match="missing"):
        DarknetDetector(model_dir="/nonexistent")


def test_letterbox_maps_boxes_back() -> None:
    image = np.zeros((272, 640, 3), dtype=np.uint8)
    canvas, box = letterbox(image, 416)
    assert canvas.shape == (416, 416, 3)
    assert box.to_normalised(0, box.pad_y, 416, 416 - box.pad_y) == pytest.approx((0, 0, 1, 1), abs=1e-3)


def test_yolo_plumbing_with_a_model_built_from_its_yaml(media_dir: Path) -> None:
    """No registry package carries COCO YOLO weights; the architecture YAML gives real inference
    (random weights) through exactly the same batching, class filter and device code."""
    detector = registry.object_detector(
        YoloDetectorConfig(
            type="yolo",
            weights="yolov8n.yaml",
            classes=["person", "car"],
            confidence=0.001,
            imgsz=320,
        )
    )
    assert isinstance(detector, YoloDetector)
    assert detector.labels == ("person", "car")
    assert detector.device == "cpu" and detector.half is False
    frames = video_frames(media_dir / "vtest.avi", limit=3)
    results = detector.detect(frames)
    assert len(results) == 3
    assert all(d.label in ("person", "car") for found in results for d in found)


_THREADS_PROBE = """
import json, cv2, numpy as np, torch
from detectors.darknet import DarknetDetector
from detectors.tracking import ObjectTracker
from detectors.yolo import YoloDetector
from ultralytics.utils import NUM_THREADS
ours = NUM_THREADS + 1  # never what ultralytics would set
DarknetDetector(classes=["person"], cpu_threads=ours, runtime="opencv")  # sets OpenCV's threads
ObjectTracker(["person"])
after_tracker = cv2.getNumThreads()
yolo = YoloDetector("yolov8n.yaml", imgsz=320, device="cpu", cpu_threads=ours)
image = np.zeros((240, 320, 3), dtype=np.uint8)
yolo.detect([image])
after_yolo = (cv2.getNumThreads(), torch.get_num_threads())
from ultralytics import YOLO
YOLO("yolov8n.yaml").predict(image, imgsz=320, verbose=False)  # another predictor resets torch's threads
reset = torch.get_num_threads()
yolo.detect([image])
print(json.dumps({"ours": ours, "ultralytics": NUM_THREADS, "after_tracker": after_tracker, "after_yolo": after_yolo,
                  "reset": reset, "again": torch.get_num_threads()}))
"""


def test_importing_ultralytics_leaves_opencv_and_torch_threads_to_fusewatch() -> None:
    """ultralytics sets OpenMP, PyTorch and OpenCV to (cores - 1, 1) threads for training; a worker keeps its own."""
    import json
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _THREADS_PROBE],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[3],
    )
    probe = json.loads(done.stdout.strip().splitlines()[-1])
    ours = probe["ours"]
    assert probe["after_tracker"] == ours, "the tracker's ultralytics import kept OpenCV's threads"
    assert probe["after_yolo"] == [ours, ours]
    assert probe["reset"] == probe["ultralytics"], "what the detector has to undo"
    assert probe["again"] == ours


def test_yolo_never_downloads_missing_weights(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="never downloads"):
        YoloDetector(str(tmp_path / "yolov8n.pt"))


def test_tracker_keeps_ids_for_a_walking_person(darknet: DarknetDetector, media_dir: Path) -> None:
    tracker = ObjectTracker(darknet.labels, frame_rate=5)
    frames = video_frames(media_dir / "vtest.avi", every=2, limit=25)
    seen: Counter[int] = Counter()
    for found in darknet.detect(frames[:4]) + darknet.detect(frames[4:]):
        for detection in tracker.update(found):
            if detection.track_id is not None:
                seen[detection.track_id] += 1
    # Several people are followed across most of the 5 seconds under one id each.
    assert sum(1 for count in seen.values() if count >= 15) >= 3, seen
