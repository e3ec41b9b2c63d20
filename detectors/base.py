"""The protocols every detector implements, so the analyze stage never knows which one runs.

All methods are blocking (inference); the analyze stage calls them in an executor.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from streams.models import Detection, Transcript

RgbImage = npt.NDArray[np.uint8]
Pcm16k = npt.NDArray[np.float32]
"""Mono float32 PCM at 16 kHz, values in [-1, 1]."""


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, which containers narrow): CPU backends' default threads."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class ObjectDetector(Protocol):
    """Detects objects in a batch of RGB images (any sizes); boxes are normalised to 0..1."""

    @property
    def labels(self) -> Sequence[str]: ...

    def detect(self, images: Sequence[RgbImage]) -> list[list[Detection]]: ...


class Transcriber(Protocol):
    """Speech to text with word timestamps (seconds from the start of `audio`)."""

    def transcribe(self, audio: Pcm16k) -> Transcript: ...


@dataclass(frozen=True, slots=True)
class AudioStats:
    """Loudness and voice activity of a stretch of audio."""

    loudness_dbfs: float
    peak_dbfs: float
    speech_ratio: float
    speech_probabilities: npt.NDArray[np.float32]
    frame_seconds: float
    loudness_lufs: float | None = None


class AudioAnalyzer(Protocol):
    """Loudness (dBFS) and voice activity of 16 kHz mono audio."""

    def analyze(self, audio: Pcm16k) -> AudioStats: ...
