"""Resize with unchanged aspect ratio and padding, and map boxes back (as YOLO expects)."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from detectors.base import RgbImage


@dataclass(frozen=True, slots=True)
class Letterbox:
    """How an image was placed into the square network input."""

    scale: float
    pad_x: float
    pad_y: float
    width: int
    height: int

    def to_normalised(self, x1: float, y1: float, x2: float, y2: float) -> tuple[float, float, float, float]:
        """A box in network-input pixels to 0..1 coordinates of the original image, clipped."""

        def fx(x: float) -> float:
            return min(max((x - self.pad_x) / self.scale / self.width, 0.0), 1.0)

        def fy(y: float) -> float:
            return min(max((y - self.pad_y) / self.scale / self.height, 0.0), 1.0)

        return fx(x1), fy(y1), fx(x2), fy(y2)


def letterbox(image: RgbImage, size: int, fill: int = 114) -> tuple[RgbImage, Letterbox]:
    """`image` scaled to fit `size`x`size`, centred on a grey canvas."""
    height, width = image.shape[:2]
    scale = min(size / width, size / height)
    new_w, new_h = round(width * scale), round(height * scale)
    resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR) if scale != 1 else image
    canvas = np.full((size, size, 3), fill, dtype=np.uint8)
    pad_x, pad_y = (size - new_w) // 2, (size - new_h) // 2
    canvas[pad_y : pad_y + new_h, pad_x : pad_x + new_w] = resized
    return canvas, Letterbox(scale, float(pad_x), float(pad_y), width, height)
