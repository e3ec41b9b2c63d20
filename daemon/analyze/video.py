"""Video of one stream: motion gating, detection through the shared batcher, and its windows in order.

Each sampled frame opens (or joins) its window, goes through the stream's `MotionGate`
(frames without motion take the stream's latest detections) and to the `DetectionBatcher`
shared by every stream. The gate starts afresh at every *gate period*: `motion.recheck`
rounded up to whole windows, aligned to the wallclock. Every window of a period is held at
the init the period would be redone from, so a reader resuming the stream sees the period
from its start and detects the frames the reader before it did. A reader that began inside
a period (a new reader, or one resuming where a reader with other periods committed) has
its gate start at its first whole window instead, until the next period. Detections come
back in frame order per stream; tracking, zones and the snapshot (`VideoFeatureBuilder`)
take them, and a window is emitted once a frame of a later window arrived and none of its
own frames awaits detection.
"""

from __future__ import annotations

import asyncio
import math
from collections import OrderedDict, deque
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path

from config.schema import MotionConfig
from daemon.analyze.batcher import DetectionBatcher
from daemon.analyze.context import Shared, StreamContext
from daemon.analyze.video_windows import VideoFeatureBuilder, VideoWindowState
from detectors.motion import MotionGate, MotionSettings
from streams.kafka import SourcePosition
from streams.models import Detection, Frame, VideoWindowFeatures
from streams.windows import window_start


@dataclass
class _PendingFrame:
    future: asyncio.Future[list[Detection] | None]
    frame: Frame
    window: int


def _reusable(detection: asyncio.Future[list[Detection] | None]) -> bool:
    """Whether a frame without motion may take `detection` (not one that failed or was dropped)."""
    return not detection.done() or (detection.exception() is None and detection.result() is not None)


def gate_period_ms(motion: MotionConfig, size_ms: int) -> int:
    """The gate period of a source: `motion.recheck` rounded up to whole windows (a window without a gate)."""
    if not motion.enabled:
        return size_ms
    return max(1, math.ceil(round(motion.recheck * 1000) / size_ms)) * size_ms


def motion_gate(motion: MotionConfig) -> MotionGate | None:
    """The gate a source's `video.motion` asks for (None: every sampled frame is detected)."""
    if not motion.enabled:
        return None
    settings = MotionSettings(
        threshold=motion.threshold, min_area=motion.min_area, masks=tuple(tuple(mask) for mask in motion.masks)
    )
    return MotionGate(settings, recheck_ns=round(motion.recheck * 1e9))


class VideoWindows:
    """One stream's video windows, from sampled frames to emitted `VideoFeatures`."""

    def __init__(
        self,
        context: StreamContext,
        shared: Shared,
        features: VideoFeatureBuilder,
        gate: MotionGate | None,
        batcher: DetectionBatcher,
        motion_executor: Executor,
        period_ms: int,
    ) -> None:
        self._context = context
        self._shared = shared
        self._features = features
        self._gate = gate
        self._batcher = batcher
        self._motion_executor = motion_executor
        self._last_detection: asyncio.Future[list[Detection] | None] | None = None
        self._windows: OrderedDict[int, VideoWindowState] = OrderedDict()
        self._pending: deque[_PendingFrame] = deque()
        self._frontier = -1
        self._period_ms = period_ms
        self._period: int | None = None  # where the gate of the latest window started
        self._period_hold: SourcePosition | None = None  # the init that period would be redone from
        self._joined: tuple[int, int] | None = None  # (period, first whole window) of a period begun inside
        self._skipped = -1  # the latest window skipped as incomplete

    @classmethod
    def for_source(
        cls,
        context: StreamContext,
        shared: Shared,
        labels: list[str],
        zones: dict[str, list[tuple[float, float]]],
        sample_fps: float,
        snapshot_dir: Path | None,
        motion: MotionConfig,
        batcher: DetectionBatcher,
        motion_executor: Executor,
    ) -> VideoWindows:
        features = VideoFeatureBuilder(labels, zones, sample_fps, snapshot_dir)
        period_ms = gate_period_ms(motion, shared.size_ms)
        return cls(context, shared, features, motion_gate(motion), batcher, motion_executor, period_ms)

    async def on_frame(self, frame: Frame) -> None:
        counters = self._shared.counters
        start = window_start(frame.wall_ns, self._shared.size_ms)
        period = self._gate_start(start)
        if period is None:
            counters.incomplete_windows_skipped += start != self._skipped
            self._skipped = start
            return
        if start not in self._windows:
            self._windows[start] = VideoWindowState(start, start + self._shared.size_ms)
            if period != self._period:
                self._period, self._period_hold = period, self._context.redo_from(period)
            if self._period_hold is not None:
                self._context.mark_unfinished("video", start, self._period_hold)
        self._frontier = max(self._frontier, start)
        last = self._last_detection
        if not await self._moved(frame, period) and last is not None and _reusable(last):
            future = last
            counters.frames_without_motion += 1
            counters.without_motion_by_stream[self._context.stream] += 1
        else:
            future = self._last_detection = await self._batcher.submit(frame)
        self._pending.append(_PendingFrame(future, frame, start))
        await self.drain()

    def _gate_start(self, start: int) -> int | None:
        """Where the gate of window `start` starts for this reader; None when the reader cannot emit it."""
        period = start - start % self._period_ms
        if self._context.covered(period):
            return period
        if not self._context.covered(start):
            return None
        if self._joined is None or self._joined[0] != period:
            self._joined = (period, start)
        return self._joined[1]

    async def _moved(self, frame: Frame, period: int) -> bool:
        """Whether the detector must see `frame`, of the gate period starting at `period` (always without a gate)."""
        gate = self._gate
        if gate is None:
            return True
        loop = asyncio.get_running_loop()
        moved = await loop.run_in_executor(
            self._motion_executor, gate.needs_detection, frame.image, frame.wall_ns, period
        )
        self._shared.counters.motion_regions += len(gate.regions)
        return moved

    async def drain(self, final: bool = False) -> None:
        """Take the detections that came back, in frame order; emit every window that is complete."""
        while self._pending and self._pending[0].future.done():
            await self._take(self._pending.popleft())
        waiting = {job.window for job in self._pending}
        for start in list(self._windows):
            if not ((start < self._frontier or final) and start not in waiting):
                break
            await self._close(self._windows.pop(start))

    async def _take(self, job: _PendingFrame) -> None:
        counters, stream = self._shared.counters, self._context.stream
        failure = job.future.exception()
        detections = job.future.result() if failure is None else None
        window = self._windows.get(job.window)
        if window is None:
            return
        if failure is not None:  # the window goes on without this frame, as with a dropped one
            await self._shared.failed(stream, None, "frame not detected", failure)
        if detections is None:
            counters.frames_dropped += 1
            counters.dropped_by_stream[stream] += 1
        else:
            counters.frames_analysed += 1
            counters.analysed_by_stream[stream] += 1
        self._features.add(window, detections, job.frame.image, job.frame.wall_ns)

    async def _close(self, window: VideoWindowState) -> None:
        context = self._context
        features = VideoWindowFeatures(
            stream=context.stream,
            site=context.site,
            modality="video",
            window_start=window.start_ms,
            window_end=window.end_ms,
            video=self._features.close(window, context.stream, context.site),
            latency_ms=self._shared.latency(window.end_ms),
        )
        await self._shared.emit(context, "video", window.start_ms, features)

    async def finish(self) -> None:
        """The stream ended: wait for its detections (a failed one is reported, not raised), emit the rest."""
        if self._pending:
            await asyncio.wait([job.future for job in self._pending])
        await self.drain(final=True)
