"""A detector fake that ships with the library, for tests of what runs around detection.

`CountingDetector` follows `ObjectDetector`: batching, gating and back-pressure can be
tested with a detector whose speed is set and whose every call is recorded, without weights.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from detectors.base import RgbImage
from streams.models import Detection


class CountingDetector:
    """Answers one person per image after `delay` seconds per batch, recording batch sizes.

    The confidence is the image's top-left red value / 255, so frames that differ give
    detections that differ."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.batches: list[int] = []

    @property
    def labels(self) -> Sequence[str]:
        return ("person",)

    def detect(self, images: Sequence[RgbImage]) -> list[list[Detection]]:
        time.sleep(self.delay)
        self.batches.append(len(images))
        return [
            [Detection(label="person", confidence=float(image[0, 0, 0]) / 255, box=(0, 0, 1, 1))] for image in images
        ]
