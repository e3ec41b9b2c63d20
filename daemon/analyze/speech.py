"""Cuts a stream's audio into speech segments for Whisper, gated by voice activity.

Whisper hears whole utterances best, not 2-second slices: a segment opens at the first
speech frame, closes after `min_silence` of non-speech (or is cut at `max_segment`), and is
transcribed with `pad` seconds of audio around it so no word is cut at an edge. Each
segment owns the words whose middle falls in its own span, so words are never counted
twice when a long utterance is cut.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from streams.clock import NS_PER_S
from streams.models import Transcript
from streams.windows import AudioWindow

RATE = 16_000


@dataclass(frozen=True)
class SpeechSegment:
    """Audio to transcribe and the span of wallclock whose words it owns."""

    own_start_ns: int
    own_end_ns: int
    audio_start_ns: int
    audio: npt.NDArray[np.float32]


class SpeechSegmenter:
    """VAD-gated segmentation of one stream's 16 kHz audio, fed window by window in order."""

    def __init__(
        self,
        threshold: float = 0.5,
        min_silence_s: float = 1.5,
        max_segment_s: float = 15.0,
        pad_s: float = 0.3,
        min_speech_s: float = 0.2,
    ) -> None:
        self._threshold = threshold
        self._min_silence = min_silence_s
        self._max_segment_ns = int(max_segment_s * NS_PER_S)
        self._pad = int(pad_s * RATE)
        self._min_speech_ns = int(min_speech_s * NS_PER_S)
        self._buffer = np.zeros(0, dtype=np.float32)
        self._buffer_start_ns = 0
        self._open_ns: int | None = None
        self._last_speech_end_ns = 0
        self._silence_s = 0.0
        self._cut_start: int | None = None

    @property
    def open_since_ns(self) -> int | None:
        """Start of the utterance still being heard, if any: words before it are final."""
        return self._open_ns

    def feed(self, window: AudioWindow, probabilities: npt.NDArray[np.float32], frame_s: float) -> list[SpeechSegment]:
        """Add one window's audio and VAD probabilities; return the segments it completed."""
        pcm = window.pcm()
        if pcm.size == 0:
            return []
        start_ns = window.first_ns if window.first_ns is not None else window.start_ms * 1_000_000
        self._append(pcm, start_ns)
        done: list[SpeechSegment] = []
        frame_ns = int(frame_s * NS_PER_S)
        for index, probability in enumerate(probabilities.tolist()):
            frame_start = start_ns + index * frame_ns
            frame_end = frame_start + frame_ns
            if probability >= self._threshold:
                if self._open_ns is None:
                    self._open_ns = frame_start
                self._last_speech_end_ns = frame_end
                self._silence_s = 0.0
                if frame_end - self._open_ns >= self._max_segment_ns:
                    done += self._close(frame_end, cut=True)
            elif self._open_ns is not None:
                self._silence_s += frame_s
                if self._silence_s >= self._min_silence:
                    done += self._close(self._last_speech_end_ns, cut=False)
        self._trim()
        return done

    def flush(self) -> list[SpeechSegment]:
        """End of stream: close the open utterance."""
        return self._close(self._last_speech_end_ns, cut=False) if self._open_ns is not None else []

    def _close(self, end_ns: int, cut: bool) -> list[SpeechSegment]:
        assert self._open_ns is not None
        continued = self._cut_start is not None
        own_start = self._cut_start if self._cut_start is not None else self._open_ns
        started = self._open_ns
        self._open_ns = None
        self._silence_s = 0.0
        if cut:
            self._open_ns = end_ns  # the utterance goes on in the next segment
            self._cut_start = end_ns
        else:
            self._cut_start = None
        if end_ns - started < self._min_speech_ns and not cut:
            return []
        audio_start = max(self._index(own_start) - self._pad, 0)
        audio_end = min(self._index(end_ns) + self._pad, self._buffer.size)
        # Only a cut is a shared edge; at a natural edge (silence) the padding belongs to this segment,
        # whose first and last words Whisper often places partly inside it.
        own_from = own_start if continued else self._time(audio_start)
        own_to = end_ns if cut else self._time(audio_end)
        return [SpeechSegment(own_from, own_to, self._time(audio_start), self._buffer[audio_start:audio_end].copy())]

    def _append(self, pcm: npt.NDArray[np.float32], start_ns: int) -> None:
        expected = self._time(self._buffer.size)
        if self._buffer.size and abs(start_ns - expected) > NS_PER_S // 10:
            self._buffer = np.zeros(0, dtype=np.float32)  # a gap in the audio: start afresh
            self._open_ns = None
            self._cut_start = None
        if not self._buffer.size:
            self._buffer_start_ns = start_ns
        self._buffer = np.concatenate([self._buffer, pcm])

    def _trim(self) -> None:
        keep_from_ns = self._open_ns if self._open_ns is not None else self._time(self._buffer.size)
        if self._cut_start is not None:
            keep_from_ns = min(keep_from_ns, self._cut_start)
        drop = max(self._index(keep_from_ns) - self._pad, 0)
        if drop > 0:
            new_start = self._time(drop)
            self._buffer = self._buffer[drop:]
            self._buffer_start_ns = new_start

    def _index(self, wall_ns: int) -> int:
        return max((wall_ns - self._buffer_start_ns) * RATE // NS_PER_S, 0)

    def _time(self, index: int) -> int:
        return self._buffer_start_ns + index * NS_PER_S // RATE


@dataclass(frozen=True)
class HeardWord:
    """A word of a segment's transcript, placed on the stream's wallclock."""

    text: str
    start_ns: int
    end_ns: int
    probability: float
    language: str | None


def owned_words(segment: SpeechSegment, transcript: Transcript) -> list[HeardWord]:
    """The words of `segment`'s transcript whose middle falls in the span the segment owns."""
    words = []
    for word in transcript.words:
        start_ns = segment.audio_start_ns + round(word.start * NS_PER_S)
        end_ns = segment.audio_start_ns + round(word.end * NS_PER_S)
        if segment.own_start_ns <= (start_ns + end_ns) // 2 < segment.own_end_ns:
            words.append(
                HeardWord(word.text, start_ns, end_ns, min(max(word.probability, 0.0), 1.0), transcript.language)
            )
    return words
