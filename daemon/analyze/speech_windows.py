"""Speech of one stream: utterances cut by voice activity, transcribed by Whisper, words put in their windows.

Fed each audio window in order with its voice-activity probabilities, it opens a speech
window for it, transcribes every utterance that closed, gives each word to the window
holding its middle, and emits the windows no open utterance can still add words to.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from daemon.analyze.context import Shared, StreamContext
from daemon.analyze.speech import SpeechSegment, SpeechSegmenter, owned_words
from detectors.base import Transcriber
from detectors.keywords import KeywordSpotter
from streams.clock import NS_PER_MS
from streams.models import SpeechFeatures, SpeechWindowFeatures, Word
from streams.windows import AudioWindow, window_start


@dataclass
class _SpeechWindow:
    start_ms: int
    end_ms: int
    words: list[Word] = field(default_factory=list)
    language: str | None = None


class SpeechWindows:
    """One stream's speech windows; every call runs on the stream's audio task, in window order."""

    def __init__(
        self,
        context: StreamContext,
        shared: Shared,
        segmenter: SpeechSegmenter,
        transcriber: Transcriber,
        spotter: KeywordSpotter,
        executor: Executor,
    ) -> None:
        self._context = context
        self._shared = shared
        self._segmenter = segmenter
        self._transcriber = transcriber
        self._spotter = spotter
        self._executor = executor
        self._windows: OrderedDict[int, _SpeechWindow] = OrderedDict()

    async def feed(self, window: AudioWindow, probabilities: npt.NDArray[np.float32], frame_s: float) -> None:
        """The next audio window, analysed: transcribe what closed, emit what is complete."""
        self._windows[window.start_ms] = _SpeechWindow(window.start_ms, window.end_ms)
        for segment in self._segmenter.feed(window, probabilities, frame_s):
            await self._transcribe(segment)
        safe = self._segmenter.open_since_ns
        await self._emit(window.end_ms * NS_PER_MS if safe is None else safe)

    async def finish(self) -> None:
        """The stream ended: transcribe the utterance still open and emit every window."""
        for segment in self._segmenter.flush():
            await self._transcribe(segment)
        await self._emit(None)

    async def _transcribe(self, segment: SpeechSegment) -> None:
        loop = asyncio.get_running_loop()
        began = time.perf_counter()
        try:
            transcript = await loop.run_in_executor(self._executor, self._transcriber.transcribe, segment.audio)
        except Exception as exc:  # its windows are emitted without these words
            await self._shared.failed(self._context.stream, None, "speech segment not transcribed", exc)
            return
        self._shared.observe("transcriber", time.perf_counter() - began)
        self._shared.counters.segments_transcribed += 1
        for word in owned_words(segment, transcript):
            target = self._windows.get(window_start((word.start_ns + word.end_ns) // 2, self._shared.size_ms))
            if target is None:
                continue
            target.words.append(
                Word(
                    text=word.text,
                    start_ms=word.start_ns // NS_PER_MS,
                    end_ms=word.end_ns // NS_PER_MS,
                    probability=word.probability,
                )
            )
            target.language = word.language

    async def _emit(self, safe_ns: int | None) -> None:
        """Emit, in order, the windows that end before `safe_ns` (every one when None)."""
        context = self._context
        for start in list(self._windows):
            window = self._windows[start]
            if safe_ns is not None and window.end_ms * NS_PER_MS > safe_ns:
                break
            del self._windows[start]
            words = sorted(window.words, key=lambda w: w.start_ms)
            text = " ".join(word.text for word in words)
            confidence = round(sum(w.probability for w in words) / len(words), 4) if words else None
            features = SpeechWindowFeatures(
                stream=context.stream,
                site=context.site,
                modality="speech",
                window_start=start,
                window_end=window.end_ms,
                latency_ms=self._shared.latency(window.end_ms),
                speech=SpeechFeatures(
                    text=text,
                    words=words,
                    language=window.language,
                    confidence=confidence,
                    keywords=self._spotter.find(text),
                ),
            )
            await self._shared.emit(context, "speech", start, features)
