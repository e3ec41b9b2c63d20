"""Loudness (dBFS, EBU R128 LUFS) and voice activity (Silero VAD) of 16 kHz mono audio.

Silero VAD runs from the ONNX file that ships inside the faster-whisper wheel, through
onnxruntime; loudness is RMS and peak level relative to full scale, and the integrated
loudness of ITU-R BS.1770 / EBU R128 (pyloudnorm) for windows of at least 400 ms.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from detectors.base import AudioStats, Pcm16k

SAMPLE_RATE = 16_000
VAD_CHUNK = 512
SILENCE_DBFS = -120.0


def dbfs(value: float) -> float:
    """Level in dB relative to full scale; silence is floored at -120 dBFS."""
    return round(20 * math.log10(value), 2) if value > 1e-6 else SILENCE_DBFS


class SileroVad:
    """Speech probability per 32 ms (512 samples) of 16 kHz audio."""

    def __init__(self) -> None:
        from faster_whisper.vad import get_vad_model

        self._model = get_vad_model()

    def probabilities(self, audio: Pcm16k) -> np.ndarray:
        if audio.size == 0:
            return np.zeros(0, dtype=np.float32)
        padded = np.pad(audio, (0, (-audio.size) % VAD_CHUNK)).astype(np.float32, copy=False)
        return np.asarray(self._model(padded), dtype=np.float32).reshape(-1)


def lufs(meter: Any, audio: Pcm16k) -> float | None:
    """Integrated loudness in LUFS (EBU R128); None below 400 ms, -120 for digital silence."""
    if audio.size < SAMPLE_RATE * 0.4:
        return None
    value = float(meter.integrated_loudness(audio.astype(np.float64)))
    return round(value, 2) if math.isfinite(value) else SILENCE_DBFS


class LoudnessVad:
    """`AudioAnalyzer`: loudness mean/peak in dBFS, LUFS, and the share of 32 ms frames with speech."""

    def __init__(self, vad_threshold: float = 0.5) -> None:
        import pyloudnorm

        self._vad = SileroVad()
        self._threshold = vad_threshold
        self._meter = pyloudnorm.Meter(SAMPLE_RATE)

    def analyze(self, audio: Pcm16k) -> AudioStats:
        if audio.size == 0:
            return AudioStats(
                SILENCE_DBFS, SILENCE_DBFS, 0.0, np.zeros(0, dtype=np.float32), VAD_CHUNK / SAMPLE_RATE, None
            )
        rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))
        peak = float(np.max(np.abs(audio)))
        probabilities = self._vad.probabilities(audio)
        ratio = float(np.mean(probabilities >= self._threshold)) if probabilities.size else 0.0
        return AudioStats(
            dbfs(rms), dbfs(peak), round(ratio, 4), probabilities, VAD_CHUNK / SAMPLE_RATE, lufs(self._meter, audio)
        )
