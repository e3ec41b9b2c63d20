"""Helpers shared by tests: a direct PyAV decode of a file to compare our path against."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt


@dataclass
class DirectDecode:
    """What decoding a file straight with PyAV gives."""

    frames: int = 0
    audio_samples: int = 0
    video_pts: list[int] = field(default_factory=list)
    first: npt.NDArray[np.uint8] | None = None
    last: npt.NDArray[np.uint8] | None = None


def decode_directly(path: Path) -> DirectDecode:
    """Decode every video frame (RGB24) and count every audio sample of `path`."""
    result = DirectDecode()
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            image = frame.to_ndarray(format="rgb24")
            if result.first is None:
                result.first = image
            result.last = image
            result.frames += 1
            result.video_pts.append(int(frame.pts))
    with av.open(str(path)) as container:
        result.audio_samples = sum(frame.samples for frame in container.decode(audio=0))
    return result
