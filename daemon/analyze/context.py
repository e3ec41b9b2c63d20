"""What the per-modality analyzers of one stream share: the stream's place in the log, and the worker's services.

`StreamContext` is one stream's delivery state (which windows this reader covers, the
init each unfinished window would be redone from, whether a rebalance took the stream);
`Shared` is what every analyzer reports to (counters, the sink behind `emit`, failures,
inference timings). The worker owns both; the analyzers in `video`, `audio` and
`speech_windows` read and write nothing else of it.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from streams.clock import NS_PER_MS
from streams.kafka import SourcePosition
from streams.models import WindowFeatures

INIT_HISTORY = 1024  # inits remembered per stream: a gate period of intra-only video needs one per frame


@dataclass
class AnalyzeCounters:
    """What the worker did, exported as metrics."""

    windows: Counter[str] = field(default_factory=Counter)
    frames_analysed: int = 0
    frames_dropped: int = 0
    incomplete_windows_skipped: int = 0
    segments_transcribed: int = 0
    inference_seconds: float = 0.0
    analysed_by_stream: Counter[str] = field(default_factory=Counter)
    dropped_by_stream: Counter[str] = field(default_factory=Counter)
    frames_without_motion: int = 0  # analysed with the stream's latest detections: nothing moved
    without_motion_by_stream: Counter[str] = field(default_factory=Counter)
    motion_regions: int = 0
    windows_by_stream: Counter[tuple[str, str]] = field(default_factory=Counter)
    last_window_end: dict[str, int] = field(default_factory=dict)
    partitions_released: int = 0
    item_errors: int = 0


class StreamContext:
    """One stream as this reader sees it: where it began, what it has not finished, whether it still has it.

    The stream's *origin* is the init this reader began it at (as `DecodedItem.origin_seq`
    and `origin_wall_ns` name it): `origin_wall_ns` is that init's wallclock, 0 when the
    reader began at the stream's very first init. Windows starting before it lack items and
    are skipped. `origin` is that init's position, held until a window is unfinished;
    `unfinished`: per (modality, window start), the init a reader would decode that window
    again from: `redo_from` its start, the newest init stamped at or before it, so that the
    next reader covers the whole span (an init stamped after a span's start would not, and
    which init an item came out under depends on the decoder's delay).
    """

    def __init__(self, stream: str, site: str, origin_wall_ns: int) -> None:
        self.stream = stream
        self.site = site
        self.origin_wall_ns = origin_wall_ns
        self.unfinished: dict[tuple[str, int], SourcePosition] = {}
        self.partition: tuple[str, int] | None = None
        self.origin: SourcePosition | None = None
        self.released = False
        self._inits: deque[tuple[int, SourcePosition]] = deque(maxlen=INIT_HISTORY)  # (wallclock, init), in order

    def covered(self, start_ms: int) -> bool:
        return start_ms * NS_PER_MS >= self.origin_wall_ns

    def note_init(self, init: SourcePosition | None, wall_ns: int) -> None:
        """An item came out under `init`, stamped `wall_ns`: remember it for `redo_from`."""
        if init is not None and (not self._inits or self._inits[-1][1] != init):
            self._inits.append((wall_ns, init))

    def redo_from(self, start_ms: int) -> SourcePosition | None:
        """The init a reader would decode a span starting at `start_ms` again from.

        The newest init seen stamped at or before the span's start; the oldest seen when none
        is (the stream's first init, before which there is nothing to decode).
        """
        start_ns = start_ms * NS_PER_MS
        for wall_ns, init in reversed(self._inits):  # the one wanted is among the newest
            if wall_ns <= start_ns:
                return init
        return self._inits[0][1] if self._inits else None

    def oldest_unfinished(self) -> SourcePosition | None:
        positions = [*self.unfinished.values(), *([self.origin] if self.origin else [])]
        return min(positions, key=lambda p: p.offset, default=None)

    def mark_unfinished(self, modality: str, start: int, restart: SourcePosition) -> None:
        self.unfinished.setdefault((modality, start), restart)
        self.origin = None


Emit = Callable[[StreamContext, str, int, WindowFeatures], Awaitable[None]]
Failed = Callable[[str, SourcePosition | None, str, BaseException], Awaitable[None]]


@dataclass(frozen=True)
class Shared:
    """The worker's services every analyzer reports to."""

    size_ms: int
    counters: AnalyzeCounters
    emit: Emit
    failed: Failed
    observe: Callable[[str, float], None]  # inference seconds per model
    latency: Callable[[int], dict[str, float]]
