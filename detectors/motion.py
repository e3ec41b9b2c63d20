"""Cheap motion detection that decides which sampled frames the object detector must see.

Object detection is the analyze stage's largest cost, and most cameras show nothing that
moves most of the time. As Frigate does, each frame is first reduced to a small grayscale
copy, compared with a running-average background, and the changed pixels are grouped into
regions; only frames with a region above a minimum area go to the detector. Masked areas
(a clock, a tree in the wind) never count as motion. A frame that moved becomes the
background: the detector sees it, so what counts as motion next is a change from the scene
the detector last saw, and an object that left leaves no ghost that reads as motion while
a running average forgets it.

`MotionGate` adds the policy around it: a frame without motion reuses the stream's latest
detections (a person standing still is still there, and the tracker keeps its track), and
the detector still looks at least every `recheck` seconds so that objects which stopped
moving, or left while the background absorbed them, are seen as they are. The first frame
of each *period* (the caller's unit of replay: whole feature windows, aligned to the
wallclock) starts afresh: the background is seeded from it and the detector sees it. So
which frames of a period are detected depends on that period's frames alone, and a worker
that takes a stream over mid-recording (a rebalance, a restart) computes the periods it
redoes from their start exactly as the worker before it did.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from detectors.base import RgbImage

Box = tuple[float, float, float, float]
"""x1, y1, x2, y2 normalised to 0..1"""
_KERNEL = np.ones((3, 3), dtype=np.uint8)


@dataclass(frozen=True, slots=True)
class MotionSettings:
    """What `MotionDetector` needs (built from a source's `video.motion` config)."""

    width: int = 160  # of the grayscale copy the background is kept at
    threshold: int = 25  # 0..255: a pixel differing more from the background has changed
    min_area: float = 0.002  # of the frame: a smaller changed region is noise
    alpha: float = 0.05  # how fast the background follows the scene, per frame
    masks: tuple[tuple[tuple[float, float], ...], ...] = ()  # normalised polygons never counted


class MotionDetector:
    """Regions of one stream's frames that differ from a running-average background."""

    def __init__(self, settings: MotionSettings) -> None:
        self._settings = settings
        self._background: npt.NDArray[np.float32] | None = None
        self._mask: npt.NDArray[np.uint8] | None = None
        self._shape: tuple[int, int] | None = None

    def reset(self) -> None:
        """Forget the background: the next frame seeds it again."""
        self._background = None

    def regions(self, image: RgbImage) -> list[Box]:
        """Moving regions of `image` (normalised boxes); every region of a first frame's whole image."""
        small = self._small(image)
        if self._background is None or self._background.shape != small.shape:
            self._background = small.astype(np.float32)
            self._mask = self._masked(small.shape)
            return [(0.0, 0.0, 1.0, 1.0)]
        difference = cv2.absdiff(small, cv2.convertScaleAbs(self._background))
        cv2.accumulateWeighted(small, self._background, self._settings.alpha)
        _, changed = cv2.threshold(difference, self._settings.threshold, 255, cv2.THRESH_BINARY)
        if self._mask is not None:
            changed = cv2.bitwise_and(changed, self._mask)
        changed = cv2.dilate(changed, _KERNEL, iterations=2)
        contours, _ = cv2.findContours(changed, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        height, width = small.shape
        least = self._settings.min_area * width * height
        boxes: list[Box] = []
        for contour in contours:
            if cv2.contourArea(contour) < least:
                continue
            x, y, w, h = cv2.boundingRect(contour)
            boxes.append((x / width, y / height, (x + w) / width, (y + h) / height))
        if boxes:
            self._background = small.astype(np.float32)
        return boxes

    def _small(self, image: RgbImage) -> npt.NDArray[np.uint8]:
        height, width = image.shape[:2]
        target = min(self._settings.width, width)
        size = (target, max(round(height * target / width), 1))
        gray = cv2.cvtColor(cv2.resize(image, size, interpolation=cv2.INTER_LINEAR), cv2.COLOR_RGB2GRAY)
        return np.asarray(cv2.GaussianBlur(gray, (5, 5), 0), dtype=np.uint8)

    def _masked(self, shape: tuple[int, ...]) -> npt.NDArray[np.uint8] | None:
        if not self._settings.masks:
            return None
        height, width = shape[:2]
        mask = np.full((height, width), 255, dtype=np.uint8)
        for polygon in self._settings.masks:
            points = np.asarray([(x * width, y * height) for x, y in polygon], dtype=np.int32)
            cv2.fillPoly(mask, [points], 0)
        return mask


class MotionGate:
    """Per stream: whether a sampled frame goes to the detector (see the module doc)."""

    def __init__(self, settings: MotionSettings, recheck_ns: int) -> None:
        self._detector = MotionDetector(settings)
        self._recheck_ns = recheck_ns
        self._last_detect_ns: int | None = None
        self._period: int | None = None
        self.regions: Sequence[Box] = ()

    def needs_detection(self, image: RgbImage, wall_ns: int, period: int) -> bool:
        """Look for motion in `image`, a frame of gate period `period`; True when the detector must see it."""
        if period != self._period:
            self._period = period
            self._detector.reset()
            self._last_detect_ns = None
        self.regions = self._detector.regions(image)
        due = (
            self._last_detect_ns is None
            or wall_ns - self._last_detect_ns >= self._recheck_ns
            or wall_ns < self._last_detect_ns
        )
        if self.regions or due:
            self._last_detect_ns = wall_ns
            return True
        return False
