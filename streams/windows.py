"""Tumbling windows aligned to stream wallclock, frame sampling, and audio cut into windows.

Every stream of a site uses the same alignment (multiples of `size` since the epoch), so
the video and audio of one site fall into the same window ids (docs/design.md §4).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import av
import numpy as np
import numpy.typing as npt

from streams.clock import NS_PER_MS
from streams.models import AudioChunk


def window_size_ms(size_s: float) -> int:
    """Window size in whole milliseconds (at least 1)."""
    return max(round(size_s * 1000), 1)


def window_start(wall_ns: int, size_ms: int) -> int:
    """Start (ms since epoch) of the window that contains `wall_ns`."""
    wall_ms = wall_ns // NS_PER_MS
    return wall_ms - wall_ms % size_ms


class FrameSampler:
    """Keeps the first frame of each 1/fps slot of wallclock, per stream (deterministic).

    Used as the decoder's frame filter, so frames that are not analysed are never converted
    to RGB.
    """

    def __init__(self, fps_of: dict[str, float], default_fps: float) -> None:
        self._fps_of = fps_of
        self._default = default_fps
        self._last: dict[str, int] = {}

    def __call__(self, stream: str, wall_ns: int) -> bool:
        fps = self._fps_of.get(stream, self._default)
        if fps <= 0:
            return False
        slot = int(wall_ns * fps // 1_000_000_000)
        if self._last.get(stream) == slot:
            return False
        self._last[stream] = slot
        return True

    def forget(self, stream: str) -> None:
        self._last.pop(stream, None)


@dataclass
class AudioWindow:
    """16 kHz mono samples of one stream inside one window."""

    start_ms: int
    end_ms: int
    samples: list[npt.NDArray[np.float32]] = field(default_factory=list)
    first_ns: int | None = None

    def pcm(self) -> npt.NDArray[np.float32]:
        if not self.samples:
            return np.zeros(0, dtype=np.float32)
        return np.concatenate(self.samples).astype(np.float32, copy=False)


class AudioWindower:
    """Resamples a stream's audio to 16 kHz mono (PyAV) and cuts it at window boundaries.

    Sample positions follow the stream's wallclock: the first sample of each decoded chunk
    is at the chunk's wallclock, later ones every 1/16000 s, so windows hold exactly the
    samples whose time falls inside them.
    """

    RATE = 16_000

    def __init__(self, size_ms: int) -> None:
        self._size_ms = size_ms
        self._resampler: av.AudioResampler | None = None
        self._current: AudioWindow | None = None
        self._next_ns: int | None = None

    def feed(self, chunk: AudioChunk) -> list[AudioWindow]:
        """Add decoded audio; return the windows this chunk completed."""
        pcm = self._resample(chunk)
        if pcm.size == 0:
            return []
        start_ns = chunk.wall_ns
        if self._next_ns is not None and abs(start_ns - self._next_ns) < 50 * NS_PER_MS:
            start_ns = self._next_ns  # keep sample positions contiguous across chunks
        self._next_ns = start_ns + pcm.size * 1_000_000_000 // self.RATE
        return self._place(pcm, start_ns)

    def flush(self) -> list[AudioWindow]:
        """The last, partial window (end of stream)."""
        done = [self._current] if self._current is not None and self._current.samples else []
        self._current = None
        return done

    def _resample(self, chunk: AudioChunk) -> npt.NDArray[np.float32]:
        samples = chunk.samples
        channels = samples.shape[0]
        layout = "mono" if channels == 1 else "stereo" if channels == 2 else f"{channels}c"
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(samples, dtype=np.float32), format="fltp", layout=layout
        )
        frame.sample_rate = chunk.sample_rate
        if self._resampler is None:
            self._resampler = av.AudioResampler(format="flt", layout="mono", rate=self.RATE)
        out = [f.to_ndarray().reshape(-1) for f in self._resampler.resample(frame)]
        return np.concatenate(out).astype(np.float32) if out else np.zeros(0, dtype=np.float32)

    def _place(self, pcm: npt.NDArray[np.float32], start_ns: int) -> list[AudioWindow]:
        done: list[AudioWindow] = []
        offset = 0
        while offset < pcm.size:
            at_ns = start_ns + offset * 1_000_000_000 // self.RATE
            w_start = window_start(at_ns, self._size_ms)
            if self._current is None or self._current.start_ms != w_start:
                if self._current is not None and self._current.samples:
                    done.append(self._current)
                self._current = AudioWindow(w_start, w_start + self._size_ms)
            end_ns = self._current.end_ms * NS_PER_MS
            room = max(-(-(end_ns - at_ns) * self.RATE // 1_000_000_000), 1)
            piece = pcm[offset : offset + room]
            if self._current.first_ns is None:
                self._current.first_ns = at_ns
            self._current.samples.append(piece)
            offset += piece.size
        return done
