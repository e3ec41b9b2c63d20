"""Test fakes that ship with the library: a sink that keeps messages, a manual clock, spans from memory.

They follow the same protocols as the real parts (`MessageSink`, `Clock`, `SpanSource`), so tests and
users' own rule tests can run the pipeline pieces without Kafka and without sleeping.
"""

from __future__ import annotations

import asyncio
from typing import Any

from streams.clock import NS_PER_MS
from streams.media_span import BeyondRetention, MediaSpan, SpanCollector
from streams.models import MediaMessage, Packet, StreamInit


class ListSink:
    """A `MessageSink` that keeps every published message in order."""

    def __init__(self) -> None:
        self.messages: list[MediaMessage] = []

    async def publish(self, message: MediaMessage) -> Any:
        self.messages.append(message)
        return None

    def packets(self, kind: str | None = None) -> list[Packet]:
        return [m for m in self.messages if isinstance(m, Packet) and kind in (None, m.kind)]

    def inits(self) -> list[StreamInit]:
        return [m for m in self.messages if isinstance(m, StreamInit)]


class ManualClock:
    """A `Clock` that only moves when told; `sleep` advances it instead of waiting."""

    def __init__(self, wall_ns: int = 1_700_000_000 * 1_000_000_000, monotonic: float = 1000.0) -> None:
        self._wall_ns = wall_ns
        self._monotonic = monotonic
        self.slept: list[float] = []

    def wall_ns(self) -> int:
        return self._wall_ns

    def monotonic(self) -> float:
        return self._monotonic

    def advance(self, seconds: float) -> None:
        self._monotonic += seconds
        self._wall_ns += round(seconds * 1_000_000_000)

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.advance(max(seconds, 0.0))
        await asyncio.sleep(0)


class MemorySpanSource:
    """A `SpanSource` over messages in memory, in the order a topic would hold them.

    It applies the same `SpanCollector` as `MediaSpanReader`; a span that ends before the
    first message is beyond retention, as it is on the topic. `reads` counts the calls.
    """

    def __init__(self, messages: list[MediaMessage]) -> None:
        self.messages = messages
        self.reads = 0

    async def read(self, stream: str, from_ms: int, to_ms: int, deadline: float) -> MediaSpan:
        self.reads += 1
        if self.messages and to_ms * NS_PER_MS < self.messages[0].wall_ns:
            raise BeyondRetention(f"no longer holds {stream} at {to_ms}")
        collector = SpanCollector(stream, from_ms * NS_PER_MS, to_ms * NS_PER_MS)
        for message in self.messages:
            if message.stream != stream:
                continue
            collector.add(message)
            if collector.missed_start:
                collector.allow_late_start()
            if collector.done:
                break
        return collector.span()
