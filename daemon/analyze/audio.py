"""Audio of one stream: windows cut by wallclock, loudness and voice activity, then speech, on one task.

Chunks are cut into windows as they come; complete windows wait in a bounded queue for
the stream's own task, which analyses them in order off the event loop (loudness, VAD),
emits each `AudioFeatures` window and hands it with its voice activity to the stream's
`SpeechWindows`, when a transcriber is configured.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Executor

from daemon.analyze.context import Shared, StreamContext
from daemon.analyze.speech_windows import SpeechWindows
from detectors.base import AudioAnalyzer
from streams.models import AudioChunk, AudioFeatures, AudioWindowFeatures
from streams.windows import AudioWindow, AudioWindower, window_start

QUEUE_WINDOWS = 64
"""Complete windows waiting for analysis per stream: about two minutes, 8 MB."""


class AudioWindows:
    """One stream's audio windows; `start` runs its analysis task in the worker's task group."""

    def __init__(
        self,
        context: StreamContext,
        shared: Shared,
        analyzer: AudioAnalyzer,
        executor: Executor,
        speech: SpeechWindows | None,
    ) -> None:
        self._context = context
        self._shared = shared
        self._analyzer = analyzer
        self._executor = executor
        self._speech = speech
        self._windower = AudioWindower(shared.size_ms)
        self._queue: asyncio.Queue[AudioWindow | None] = asyncio.Queue(maxsize=QUEUE_WINDOWS)
        self._task: asyncio.Task[None] | None = None

    def start(self, tasks: asyncio.TaskGroup) -> None:
        self._task = tasks.create_task(self._loop())

    async def on_audio(self, chunk: AudioChunk) -> None:
        start = window_start(chunk.wall_ns, self._shared.size_ms)
        context = self._context
        held = ("audio", start) in context.unfinished
        if not held and context.covered(start) and (restart := context.redo_from(start)) is not None:
            context.mark_unfinished("audio", start, restart)
            if self._speech is not None:
                context.mark_unfinished("speech", start, restart)
        for window in self._windower.feed(chunk):
            await self._enqueue(window)

    async def _enqueue(self, window: AudioWindow) -> None:
        if self._context.released:
            return
        if self._context.covered(window.start_ms):
            await self._queue.put(window)
        else:
            self._shared.counters.incomplete_windows_skipped += 1

    async def _loop(self) -> None:
        while (window := await self._queue.get()) is not None:
            await self._analyze(window)
        if self._speech is not None:
            await self._speech.finish()

    async def _analyze(self, window: AudioWindow) -> None:
        context, shared = self._context, self._shared
        loop = asyncio.get_running_loop()
        pcm = window.pcm()
        began = time.perf_counter()
        try:
            stats = await loop.run_in_executor(self._executor, self._analyzer.analyze, pcm)
        except Exception as exc:  # this window is lost, counted and reported; the stream goes on
            await shared.failed(context.stream, None, f"audio window {window.start_ms} not analysed", exc)
            context.unfinished.pop(("audio", window.start_ms), None)
            context.unfinished.pop(("speech", window.start_ms), None)
            return
        shared.observe("audio", time.perf_counter() - began)
        features = AudioWindowFeatures(
            stream=context.stream,
            site=context.site,
            modality="audio",
            window_start=window.start_ms,
            window_end=window.end_ms,
            latency_ms=shared.latency(window.end_ms),
            audio=AudioFeatures(
                loudness_dbfs=stats.loudness_dbfs,
                peak_dbfs=stats.peak_dbfs,
                speech_ratio=stats.speech_ratio,
                loudness_lufs=stats.loudness_lufs,
            ),
        )
        await shared.emit(context, "audio", window.start_ms, features)
        if self._speech is not None:
            await self._speech.feed(window, stats.speech_probabilities, stats.frame_seconds)

    async def finish(self) -> None:
        """The stream ended: analyse what is left, then let the task end (it is not cancelled meanwhile)."""
        for window in self._windower.flush():
            await self._enqueue(window)
        if not self._context.released:
            await self._queue.put(None)
        if self._task is not None:
            await asyncio.wait([self._task])

    def cancel(self) -> None:
        """Stop at once (shutdown, or the stream's partition was revoked): nothing more is emitted."""
        if self._task is not None:
            self._task.cancel()
        while not self._queue.empty():  # wakes the loop if it waits to put a window
            self._queue.get_nowait()
