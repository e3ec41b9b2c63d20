"""The protocols every detector implements, so the analyze stage never knows which one runs.

All methods are blocking (inference); the analyze stage calls them in an executor.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

from streams.models import Detection, Transcript

RgbImage = npt.NDArray[np.uint8]
Pcm16k = npt.NDArray[np.float32]
"""Mono float32 PCM at 16 kHz, values in [-1, 1]."""
Vectors = npt.NDArray[np.float32]
"""Rows of unit-length float32 embeddings (`detectors.text_embedding`, `daemon.search.index`)."""


def available_cores(cgroup: Path = Path("/sys/fs/cgroup")) -> int:
    """Cores this process may use, the CPU backends' default thread count.

    The smaller of its CPU affinity (`taskset`, cpusets) and its cgroup CPU quota, rounded
    up (`docker --cpus`, Kubernetes CPU limits set a quota, not an affinity; cgroup v2
    `cpu.max`, or v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`).
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = _cgroup_quota(cgroup)
    return max(min(cores, math.ceil(quota)), 1) if quota is not None else cores


def _cgroup_quota(cgroup: Path) -> float | None:
    """CPUs' worth of time the cgroup may use per period, or None without a limit."""
    try:
        if (cgroup / "cpu.max").is_file():
            quota, period = (cgroup / "cpu.max").read_text().split()[:2]
        else:
            quota = (cgroup / "cpu" / "cpu.cfs_quota_us").read_text().strip()
            period = (cgroup / "cpu" / "cpu.cfs_period_us").read_text().strip()
    except (OSError, ValueError):
        return None
    if not quota.isdigit() or not period.isdigit() or int(quota) <= 0 or int(period) <= 0:
        return None  # "max" (v2) or -1 (v1): no quota
    return int(quota) / int(period)


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
