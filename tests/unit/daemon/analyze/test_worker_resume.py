"""A worker stopped mid-window holds its commit so that the next reader can redo that window.

Keyframes (each after an init) need not fall on window boundaries. When a window's first
sampled frame is a keyframe stamped after the window's start, the init before it is still
after the window's start: a reader resuming there would find the window incomplete and skip
it. The window must be held at the init before.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from fractions import Fraction

import numpy as np

from config.schema import DetectorsConfig, FusewatchConfig, MotionConfig, SourceConfig, VideoInput
from daemon.analyze.memory import ListFeatureSink
from daemon.analyze.worker import AnalyzeWorker
from detectors import registry
from detectors.testing import CountingDetector
from streams.clock import NS_PER_MS
from streams.decode import DecodedItem
from streams.kafka import SourcePosition
from streams.models import Frame

FPS = 5
GOP = 10  # frames: an init and a keyframe every 2 s, 50 ms after each window boundary
BASE_NS = 1_700_000_000_000 * NS_PER_MS + 50 * NS_PER_MS
FRAMES = 40


def _wall(index: int) -> int:
    return BASE_NS + index * 1000 * NS_PER_MS // FPS


async def _items(first: int, last: int) -> AsyncIterator[DecodedItem]:
    """Frames `first`…`last - 1` as a reader that began at the init at frame `first` sees them."""
    image = np.full((48, 64, 3), 128, dtype=np.uint8)
    for index in range(first, last):
        frame = Frame("cam", "hq", index, Fraction(1, FPS), _wall(index), image, live=False)
        init = SourcePosition("fw.media", 0, index - index % GOP)
        yield DecodedItem(frame, SourcePosition("fw.media", 0, index), init, first, _wall(first) if first else 0)


def _worker() -> tuple[AnalyzeWorker, ListFeatureSink]:
    config = FusewatchConfig(
        sources=[SourceConfig(id="cam", url="cam.ts", video=VideoInput(sample_fps=FPS, motion=MotionConfig()))],
        detectors=DetectorsConfig(when_behind="wait", transcriber=None),
    )
    sink = ListFeatureSink()
    return AnalyzeWorker(
        config, CountingDetector(0.0), registry.audio_analyzer(config.detectors.audio), None, sink
    ), sink


async def test_a_window_opened_by_a_keyframe_after_its_start_is_redone_by_the_next_reader() -> None:
    first, first_sink = _worker()
    await first.run(_items(0, 15), finish=lambda: False)  # stopped inside the window of frames 10-19
    emitted = {f.window_start for f in first_sink.of("video")}
    window = _wall(10) // NS_PER_MS // 2000 * 2000
    assert window not in emitted
    held = first.unfinished_positions()[("fw.media", 0)]
    assert held == 0, "held at the init before the keyframe that opened the window"

    second, second_sink = _worker()
    await second.run(_items(held, FRAMES))
    redone = {f.window_start for f in second_sink.of("video")}
    assert window in redone, "the next reader redoes the window the first left unfinished"
    assert {w for w in redone if w >= window} == {_wall(i) // NS_PER_MS // 2000 * 2000 for i in range(10, FRAMES)}
