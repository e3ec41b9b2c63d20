"""Motion-gated detection in the analyze stage: a still scene costs a detection per recheck
period, a moving one every frame, and the window features are those of detecting every frame."""

from __future__ import annotations

from collections.abc import AsyncIterator
from fractions import Fraction

import numpy as np

from config.schema import DetectorsConfig, FusewatchConfig, MotionConfig, SourceConfig, VideoInput
from daemon.analyze.memory import ListFeatureSink
from daemon.analyze.worker import AnalyzeWorker
from detectors import registry
from detectors.base import RgbImage
from detectors.testing import CountingDetector
from streams.decode import DecodedItem
from streams.kafka import SourcePosition
from streams.models import Frame, WindowFeatures
from tests.helpers import video_by_window

NS = 1_000_000_000
FPS = 5
BASE_NS = 1_700_000_000 * NS
STILL, MOVING = 30, 10  # frames: 6 s of an empty scene, then 2 s of something crossing it


def _image(index: int, flash: range = range(0)) -> RgbImage:
    background = np.random.default_rng(0).integers(60, 200, size=(120, 160, 3), dtype=np.uint8)
    noise = np.random.default_rng(index).integers(-3, 4, size=background.shape)
    image = np.clip(background.astype(np.int16) + noise, 0, 255).astype(np.uint8)
    if index in flash:  # a light switched on for a moment
        image[60:100, 100:140] = 255
    if index >= STILL:
        x = 10 + 12 * (index - STILL)
        image[40:80, x : x + 20] = (250, 20, 20)
    return image


async def _items(first: int = 0, flash: range = range(0)) -> AsyncIterator[DecodedItem]:
    """The stream's frames from `first` on, as a reader that started at an init stamped there sees them."""
    origin_wall = BASE_NS + first * NS // FPS
    for index in range(first, STILL + MOVING):
        frame = Frame(
            "cam", "hq", index, Fraction(1, FPS), BASE_NS + index * NS // FPS, _image(index, flash), live=False
        )
        yield DecodedItem(
            frame,
            SourcePosition("fw.media", 0, index),
            SourcePosition("fw.media", 0, first),
            origin_seq=first,
            origin_wall_ns=origin_wall,
        )


async def _analyze(
    motion: MotionConfig, first: int = 0, flash: range = range(0)
) -> tuple[list[WindowFeatures], CountingDetector, AnalyzeWorker]:
    config = FusewatchConfig(
        sources=[SourceConfig(id="cam", url="cam.ts", video=VideoInput(sample_fps=FPS, motion=motion))],
        detectors=DetectorsConfig(when_behind="wait", transcriber=None),
    )
    detector = CountingDetector(delay=0.0)
    sink = ListFeatureSink()
    worker = AnalyzeWorker(config, detector, registry.audio_analyzer(config.detectors.audio), None, sink)
    await worker.run(_items(first, flash))
    return sink.features, detector, worker


async def test_a_still_scene_is_detected_once_per_recheck_period_and_gives_the_same_features() -> None:
    gated, gated_detector, worker = await _analyze(MotionConfig(recheck=2.0))
    every, every_detector, _ = await _analyze(MotionConfig(enabled=False))
    assert sum(every_detector.batches) == STILL + MOVING
    detected = sum(gated_detector.batches)
    assert detected <= STILL // (2 * FPS) + MOVING, "the still part costs one detection per 2 s"
    assert detected >= STILL // (2 * FPS) + MOVING - 2, "the moving part is detected (its first frames may blend)"
    assert worker.counters.frames_without_motion == STILL + MOVING - detected
    assert worker.counters.frames_analysed == STILL + MOVING
    assert worker.counters.motion_regions >= MOVING - 2

    def comparable(features: list[WindowFeatures]) -> list[object]:
        return [
            (f.window_start, f.video.frames, {k: (v.max_count, v.mean_count) for k, v in f.video.classes.items()})
            for f in features
            if f.video is not None
        ]

    assert comparable(gated) == comparable(every)
    assert len(comparable(gated)) == (STILL + MOVING) // (2 * FPS)


async def test_a_reader_resuming_mid_stream_gates_every_window_it_emits_as_the_first_reader() -> None:
    """Reused detections carry the confidence of the frame they came from (the fake's confidence
    follows each frame's noise), so a window differs as soon as the readers detect other frames.
    A flash before the resumed reader's first window moves the first reader's recheck times;
    the resumed reader never saw it. Track ids are left out: a new tracker numbers afresh."""
    flash = range(16, 18)
    whole = video_by_window((await _analyze(MotionConfig(recheck=2.0), flash=flash))[0])
    for first in (3, 13, 17):  # mid-window: the reader's first window is the next whole one
        features, _, worker = await _analyze(MotionConfig(recheck=2.0), first, flash)
        resumed = video_by_window(features)
        assert worker.counters.frames_without_motion > 0 and resumed
        assert resumed == {start: whole[start] for start in resumed}, first


async def test_a_recheck_of_several_windows_detects_a_still_scene_once_per_period() -> None:
    """`recheck: 4s` with 2 s windows: the gate's period is two windows, seeded and detected once."""
    gated, gated_detector, _ = await _analyze(MotionConfig(recheck=4.0))
    every, _, _ = await _analyze(MotionConfig(enabled=False))
    detected = sum(gated_detector.batches)
    assert detected <= STILL // (4 * FPS) + 1 + MOVING, "the still part costs one detection per 4 s period"
    assert detected >= STILL // (4 * FPS) + MOVING - 2

    def counts(features: list[WindowFeatures]) -> list[object]:  # confidences follow the detected frame
        return [
            (f.window_start, f.video.frames, {k: (v.max_count, v.mean_count) for k, v in f.video.classes.items()})
            for f in features
            if f.video is not None
        ]

    assert counts(gated) == counts(every)


async def test_a_reader_that_began_mid_period_agrees_exactly_from_the_next_period_on() -> None:
    """A reader that missed the start of a gate period (two windows here) gates from its first whole
    window until the next period, so it loses no window; from the next period on it agrees exactly."""
    base_ms, period_ms = BASE_NS // 1_000_000, 4_000
    whole = video_by_window((await _analyze(MotionConfig(recheck=4.0), flash=range(16, 18)))[0])
    for first in (3, 13, 17):  # all inside the first period (frames 0–19)
        features, _, worker = await _analyze(MotionConfig(recheck=4.0), first, range(16, 18))
        resumed = video_by_window(features)
        first_whole = base_ms + -(-first // (2 * FPS)) * 2_000  # the first window starting at or after the origin
        assert set(resumed) == {start for start in whole if start >= first_whole}, first
        assert all(resumed[start] == whole[start] for start in resumed if start >= base_ms + period_ms), first
        assert worker.counters.incomplete_windows_skipped == 1, first
