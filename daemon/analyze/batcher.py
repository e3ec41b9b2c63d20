"""Batches frames of every stream for the object detector, with explicit backpressure.

A bounded queue sits between decode and detection. When the detector is slower than the
streams, `when_behind="drop"` drops the oldest waiting live frame (counted: live video must
not fall behind and memory must not grow) and `when_behind="wait"` makes the producer wait
(evaluation: every frame analysed, results deterministic). Frames of a replayed recording
(`Frame.live` false, from the stream's init) always wait, even under `drop`: a replay at
`--speed max` must give the alerts it gives at real speed. Batches are run in
one worker thread, in arrival order, so results come back in order per stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Literal

from detectors.base import ObjectDetector
from streams.models import Detection, Frame


@dataclass
class FrameJob:
    """One frame waiting for detection; `future` gets its detections, or None if dropped."""

    frame: Frame
    future: asyncio.Future[list[Detection] | None] = field(repr=False)


@dataclass
class BatcherStats:
    """Exported as metrics."""

    batches: int = 0
    frames: int = 0
    dropped: int = 0
    inference_seconds: float = 0.0


class DetectionBatcher:
    """Collects up to `max_batch` frames (waiting at most `max_wait` s) and detects them together."""

    def __init__(
        self,
        detector: ObjectDetector,
        executor: Executor,
        max_batch: int,
        max_wait: float,
        capacity: int,
        when_behind: Literal["drop", "wait"],
        on_inference: Callable[[float, int], None] | None = None,
    ) -> None:
        self._detector = detector
        self._executor = executor
        self._max_batch = max_batch
        self._max_wait = max_wait
        self._capacity = capacity
        self._policy = when_behind
        self._queue: deque[FrameJob] = deque()
        self._ready = asyncio.Event()
        self._arrived = asyncio.Event()
        self._space = asyncio.Condition()
        self._on_inference = on_inference
        self.stats = BatcherStats()

    @property
    def waiting(self) -> int:
        return len(self._queue)

    async def submit(self, frame: Frame) -> asyncio.Future[list[Detection] | None]:
        """Queue a frame; this blocks while the queue is full unless the frame may be dropped.

        Only a live frame (`frame.live`) under `drop` may be dropped: then the oldest queued
        live frame makes room, or this frame itself when every queued frame is a replay's.
        A replayed recording can be held back (Kafka keeps the rest), so its frames wait
        for room under either policy and are never dropped.
        """
        future: asyncio.Future[list[Detection] | None] = asyncio.get_running_loop().create_future()
        if len(self._queue) >= self._capacity:
            if self._policy == "drop" and frame.live:
                victim = next((index for index, job in enumerate(self._queue) if job.frame.live), None)
                self.stats.dropped += 1
                if victim is None:
                    future.set_result(None)
                    return future
                oldest = self._queue[victim]
                del self._queue[victim]
                oldest.future.set_result(None)
            else:
                async with self._space:
                    await self._space.wait_for(lambda: len(self._queue) < self._capacity)
        self._queue.append(FrameJob(frame, future))
        self._ready.set()
        self._arrived.set()
        return future

    async def run(self) -> None:
        """Detect batches until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            await self._ready.wait()
            deadline = loop.time() + self._max_wait
            while len(self._queue) < self._max_batch and (remaining := deadline - loop.time()) > 0:
                self._arrived.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._arrived.wait(), remaining)
            batch = [self._queue.popleft() for _ in range(min(self._max_batch, len(self._queue)))]
            if not self._queue:
                self._ready.clear()
            async with self._space:
                self._space.notify_all()
            if not batch:
                continue
            started = time.perf_counter()
            try:
                results = await loop.run_in_executor(
                    self._executor, self._detector.detect, [job.frame.image for job in batch]
                )
            except Exception as exc:
                for job in batch:
                    job.future.set_exception(exc)
                continue
            elapsed = time.perf_counter() - started
            self.stats.batches += 1
            self.stats.frames += len(batch)
            self.stats.inference_seconds += elapsed
            if self._on_inference is not None:
                self._on_inference(elapsed, len(batch))
            for job, detections in zip(batch, results, strict=True):
                job.future.set_result(detections)
