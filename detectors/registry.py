"""Config `type:` → detector implementation. A new backend is one module and one line here.

The config union (pydantic discriminated union on `type`) already rejects unknown types;
the registry maps each known config class to its constructor, and fails loudly if a
config type has no implementation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from config.schema import (
    DarknetDetectorConfig,
    FasterWhisperConfig,
    LoudnessVadConfig,
    OpenAIWhisperConfig,
    YoloDetectorConfig,
)
from detectors.base import AudioAnalyzer, ObjectDetector, Transcriber


def _yolo(config: YoloDetectorConfig) -> ObjectDetector:
    from detectors.yolo import YoloDetector

    return YoloDetector(
        config.weights,
        config.classes,
        config.confidence,
        config.iou,
        config.imgsz,
        config.device,
        config.half,
        config.cpu_threads,
    )


def _darknet(config: DarknetDetectorConfig) -> ObjectDetector:
    from detectors.darknet import DarknetDetector

    return DarknetDetector(
        config.model,
        config.model_dir,
        config.classes,
        config.confidence,
        config.iou,
        config.imgsz,
        config.cpu_threads,
        config.runtime,
        config.device,
        config.half,
    )


def _faster_whisper(config: FasterWhisperConfig) -> Transcriber:
    from detectors.whisper import FasterWhisperTranscriber

    return FasterWhisperTranscriber(
        config.model,
        config.model_dir,
        config.device,
        config.compute_type,
        config.cpu_threads,
        config.beam_size,
        config.language,
        config.encoder_context,
    )


def _openai_whisper(config: OpenAIWhisperConfig) -> Transcriber:
    from detectors.openai_whisper import OpenAIWhisperTranscriber

    return OpenAIWhisperTranscriber(
        config.model, config.model_dir, config.device, config.beam_size, config.language, config.encoder_context
    )


def _loudness_vad(config: LoudnessVadConfig) -> AudioAnalyzer:
    from detectors.audio import LoudnessVad

    return LoudnessVad(config.vad_threshold)


OBJECT_DETECTORS: dict[type[Any], Callable[[Any], ObjectDetector]] = {
    YoloDetectorConfig: _yolo,
    DarknetDetectorConfig: _darknet,
}
TRANSCRIBERS: dict[type[Any], Callable[[Any], Transcriber]] = {
    FasterWhisperConfig: _faster_whisper,
    OpenAIWhisperConfig: _openai_whisper,
}
AUDIO_ANALYZERS: dict[type[Any], Callable[[Any], AudioAnalyzer]] = {LoudnessVadConfig: _loudness_vad}


def _build(table: dict[type[Any], Callable[[Any], Any]], config: object, what: str) -> Any:
    factory = table.get(type(config))
    if factory is None:
        raise LookupError(f"no {what} implementation registered for {type(config).__name__}")
    return factory(config)


def object_detector(config: YoloDetectorConfig | DarknetDetectorConfig) -> ObjectDetector:
    detector: ObjectDetector = _build(OBJECT_DETECTORS, config, "object detector")
    return detector


def transcriber(config: FasterWhisperConfig | OpenAIWhisperConfig) -> Transcriber:
    built: Transcriber = _build(TRANSCRIBERS, config, "transcriber")
    return built


def audio_analyzer(config: LoudnessVadConfig) -> AudioAnalyzer:
    built: AudioAnalyzer = _build(AUDIO_ANALYZERS, config, "audio analyzer")
    return built
