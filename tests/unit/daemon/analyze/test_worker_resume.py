"""A worker stopped mid-window holds its commit so that the next reader can redo that window.

Keyframes (each after an init) need not fall on window boundaries. When a window's first
sampled frame is a keyframe stamped after the window's start, that keyframe's init is after
the window's start: a reader resuming there would find the window incomplete and skip it.
With motion gating a window is redone from the start of its gate period (`motion.recheck`,
10 s by default), so the hold is the newest init stamped at or before the period's start,
whichever init the period's frames came out of the decoder under (a decoder with frame
threads hands frames out late, after the next init arrived).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from fractions import Fraction

import numpy as np
import pytest

from config.schema import DetectorsConfig, FusewatchConfig, MotionConfig, SourceConfig, VideoInput
from daemon.analyze.memory import ListFeatureSink
from daemon.analyze.worker import AnalyzeWorker
from detectors import registry
from detectors.testing import CountingDetector
from streams.clock import NS_PER_MS
from streams.decode import DecodedItem
from streams.kafka import SourcePosition
from streams.models import Frame
from tests.helpers import video_by_window

FPS = 5
GOP = 10  # frames: an init and a keyframe every 2 s, 50 ms after each window boundary
BASE_NS = 1_700_000_000_000 * NS_PER_MS + 50 * NS_PER_MS
FRAMES = 40


def _wall(index: int) -> int:
    return BASE_NS + index * 1000 * NS_PER_MS // FPS


async def _items(first: int, last: int, delay: int = 0) -> AsyncIterator[DecodedItem]:
    """Frames `first`…`last - 1` as a reader that began at the init at frame `first` sees them.

    `delay`: the decoder hands each frame out that many frames late, under the init that
    arrived by then.
    """
    image = np.full((48, 64, 3), 128, dtype=np.uint8)
    for index in range(first, last):
        frame = Frame("cam", "hq", index, Fraction(1, FPS), _wall(index), image, live=False)
        arrived = min(index + delay, last - 1)
        init = arrived - arrived % GOP
        yield DecodedItem(
            frame,
            SourcePosition("fw.media", 0, index),
            SourcePosition("fw.media", 0, init),
            first,
            _wall(first) if first else 0,
            _wall(init),
        )


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


def _windows(first: int, last: int) -> set[int]:
    return {_wall(i) // NS_PER_MS // 2000 * 2000 for i in range(first, last)}


@pytest.mark.parametrize("delay", [0, 3])
async def test_a_worker_stopped_inside_a_gate_period_is_redone_from_the_init_before_the_period(delay: int) -> None:
    """The period of frames 50–99 (10 s) begins 50 ms before the keyframe of frame 50: its init is
    too late, the one of frame 40 is not. With a decoder 3 frames late, frames 47–49 already come
    out under frame 50's init; the hold does not follow them."""
    first, first_sink = _worker()
    await first.run(_items(20, 65, delay), finish=lambda: False)  # began mid-period, stopped inside the next
    assert _windows(50, 60) <= {f.window_start for f in first_sink.of("video")}
    held = first.unfinished_positions()[("fw.media", 0)]
    assert held == 40, "the init stamped before the period's start, not the keyframe's after it"

    second, second_sink = _worker()
    await second.run(_items(held, 100, delay))
    redone = {f.window_start for f in second_sink.of("video")}
    assert _windows(60, 100) <= redone, "the next reader redoes every window the first left"
    whole, whole_sink = _worker()
    await whole.run(_items(0, 100, delay))
    reference, redone_windows = video_by_window(whole_sink.of("video")), video_by_window(second_sink.of("video"))
    period = _wall(50) // NS_PER_MS // 2000 * 2000
    assert {w: v for w, v in redone_windows.items() if w >= period} == {
        w: reference[w] for w in redone_windows if w >= period
    }


async def test_a_reader_that_began_inside_a_period_emits_its_first_whole_window_on() -> None:
    """A new reader, or one resuming where a reader with other gate periods committed, loses nothing:
    it began at frame 30's init, inside the period of frames 0–49, 50 ms after the start of the window
    of frames 30–39; its gate starts at the next window, not at the next period."""
    worker, sink = _worker()
    await worker.run(_items(30, 100))
    assert {f.window_start for f in sink.of("video")} == _windows(40, 100)
    assert worker.counters.incomplete_windows_skipped == 1, "one window skipped, counted once"
