"""One stream's packets between two wallclock times, read back from `fw.media` (docs/design.md §12).

A clip is a remux of what is already on the topic, so this is the one place that finds a
span there: the partition the stream's key hashes to (the producer's partitioner), the
offset where the span's keyframe can be (by record timestamp: `MediaPublisher` stamps each
record with the stream's wallclock), and then a forward read of that stream's messages.

Finding the offset: the broker's time index (`offsets_for_times`) where it answers true;
otherwise a binary search over the record timestamps, which costs one fetch per step. The
embedded broker (Tansu) answers every time lookup with offset 0, so it always takes the
second way. The reader keeps the (offset, timestamp) points its probes and reads met, a
sparse index of its own, and starts each search between the nearest of them: clips are
cut near each other and near the log end, so later searches take a few steps.

Either way the read starts `lookback` before the span, doubling up to
`max_keyframe_interval` until a keyframe at or before the span's start is in what was read.

`SpanCollector` decides, message by message, where the clip starts and ends; it knows
nothing of Kafka, so its rules are tested on their own.
"""

from __future__ import annotations

import bisect
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner

from config.schema import KafkaConfig
from streams.clock import NS_PER_MS
from streams.kafka import make_consumer
from streams.models import EndOfStream, MediaMessage, Packet, StreamInit
from streams.wire import WireError, WireRecord, decode_media

_FIRST_LOOKBACK_MS = 10_000
_POLL_MS = 250
_PROBE_FETCH_BYTES = 64 * 1024  # a probe needs one record: the broker still sends a whole batch
_INDEX_EVERY = 64  # a scan remembers the timestamp of every 64th record it reads
_INDEX_SIZE = 8192  # (offset, timestamp) points kept per partition


class SpanError(RuntimeError):
    """A span that cannot be cut; the message says why, for the operator."""


class BeyondRetention(SpanError):
    """The span ends before the oldest record the topic still holds."""


@dataclass(frozen=True, slots=True)
class MediaSpan:
    """What a clip is made of: the codec set-up and the packets, the first a keyframe."""

    init: StreamInit
    packets: tuple[Packet, ...]
    starts_late: bool  # the first keyframe the topic holds is after the span's start
    complete: bool  # a packet after the span's end was seen (else the stream ended or went silent)

    @property
    def start_ns(self) -> int:
        return self.packets[0].wall_ns

    @property
    def end_ns(self) -> int:
        return max(packet.wall_ns for packet in self.packets)


class SpanSource(Protocol):
    """Where spans are read from: `fw.media` (`MediaSpanReader`), or messages in memory (`streams.testing`)."""

    async def read(self, stream: str, from_ms: int, to_ms: int, deadline: float) -> MediaSpan: ...


@dataclass
class SpanCollector:
    """Picks one stream's messages for a span, fed in topic order.

    The clip starts at the last video keyframe at or before `from_ns` (for a stream without
    video, the last packet at or before it) and ends with the last packet at or before
    `to_ns`. Packets stamped before the start keyframe (an open GOP's leading pictures,
    audio) are left out. When the first packet after `from_ns` comes and no start was found,
    `missed_start` is set and reading pauses: the reader either reads again from earlier,
    or calls `allow_late_start()` to start at the next keyframe.
    """

    stream: str
    from_ns: int
    to_ns: int
    init: StreamInit | None = None
    packets: list[Packet] = field(default_factory=list)
    missed_start: bool = False
    starts_late: bool = False
    done: bool = False
    complete: bool = False
    _pending_init: StreamInit | None = None
    _past_start: bool = False
    _late_ok: bool = False
    _held: Packet | None = None

    def add(self, message: MediaMessage) -> None:
        if self.done or self.missed_start:
            return
        if isinstance(message, StreamInit):
            self._on_init(message)
        elif isinstance(message, EndOfStream):
            self._on_end(message)
        else:
            self._on_packet(message)

    def allow_late_start(self) -> None:
        """No keyframe at or before the start can be read: start at the first one after it."""
        self._late_ok, self.missed_start = True, False
        held, self._held = self._held, None
        if held is not None:
            self._on_packet(held)

    def finish(self) -> None:
        """The reader gives up waiting: the clip ends with what arrived."""
        self.done = True

    def span(self) -> MediaSpan:
        if self.init is None or not self.packets or self.packets[-1].wall_ns < self.from_ns:
            raise SpanError(f"no packets of stream {self.stream} between {_ms(self.from_ns)} and {_ms(self.to_ns)}")
        return MediaSpan(self.init, tuple(self.packets), self.starts_late, self.complete)

    def _on_init(self, init: StreamInit) -> None:
        if self.init is not None and init.tracks != self.init.tracks:
            if self._past_start:  # the codec set-up changed inside the span: one MP4 cannot hold both
                self.done = True
                return
            self.init, self.packets = None, []
        self._pending_init = init

    def _on_end(self, end: EndOfStream) -> None:
        if self._past_start or end.wall_ns >= self.from_ns:
            self.done = True
        else:  # an earlier run of the stream ended before the span: what it left does not start it
            self.init, self.packets, self._pending_init = None, [], None

    def _on_packet(self, packet: Packet) -> None:
        if packet.wall_ns > self.to_ns:
            self.done = self.complete = True
            return
        if packet.wall_ns <= self.from_ns and self._starts_here(packet):
            self._begin(packet)
            return
        if self.init is None:
            if packet.wall_ns <= self.from_ns:
                return
            if not self._late_ok:
                self.missed_start, self._held = True, packet
                return
            if not self._starts_here(packet):
                return
            self._begin(packet)
            self.starts_late = True
        elif packet.wall_ns >= self.packets[0].wall_ns:
            self.packets.append(packet)
        self._past_start = self._past_start or packet.wall_ns > self.from_ns

    def _starts_here(self, packet: Packet) -> bool:
        init = self._pending_init
        if init is None:
            return False
        if init.track("video") is not None:
            return packet.kind == "video" and packet.keyframe
        return packet.kind == "audio"

    def _begin(self, packet: Packet) -> None:
        self.init, self.packets = self._pending_init, [packet]


@dataclass(frozen=True, slots=True)
class _Found:
    offset: int
    timestamp: int


class MediaSpanReader:
    """Reads spans of streams from `fw.media`, outside any consumer group (it commits nothing)."""

    def __init__(self, config: KafkaConfig, max_keyframe_interval: float = 60.0) -> None:
        self._topic = config.topics.media
        self._max_lookback_ms = max(round(max_keyframe_interval * 1000), 1)
        self._consumer: AIOKafkaConsumer = make_consumer(config, group=None)
        self._probe: AIOKafkaConsumer = make_consumer(
            config, group=None, max_partition_fetch_bytes=_PROBE_FETCH_BYTES, fetch_max_bytes=_PROBE_FETCH_BYTES
        )
        self._index: dict[TopicPartition, SparseIndex] = {}
        self.malformed = 0  # records of the stream that are not wire format v1, skipped
        self.probes = 0  # single-record fetches made to find offsets

    async def start(self) -> None:
        await self._consumer.start()
        await self._probe.start()

    async def stop(self) -> None:
        await self._probe.stop()
        await self._consumer.stop()

    async def __aenter__(self) -> MediaSpanReader:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def partition_of(self, stream: str) -> TopicPartition:
        """The partition the producer's default partitioner sends the stream's key to."""
        partitions = self._consumer.partitions_for_topic(self._topic)
        if not partitions:
            await self._consumer._client.force_metadata_update()
            partitions = self._consumer.partitions_for_topic(self._topic)
        if not partitions:
            raise SpanError(f"topic {self._topic} does not exist")
        ordered = sorted(partitions)
        return TopicPartition(self._topic, DefaultPartitioner()(stream.encode(), ordered, ordered))

    async def read(self, stream: str, from_ms: int, to_ms: int, deadline: float) -> MediaSpan:
        """The span of `stream`, waiting until `deadline` (time.monotonic) for packets after `to_ms`.

        Raises `BeyondRetention` when the topic no longer holds the span, `SpanError` when it
        holds no packet of the stream there.
        """
        if to_ms < from_ms:
            raise SpanError(f"the span ends ({_ms(to_ms * NS_PER_MS)}) before it starts ({_ms(from_ms * NS_PER_MS)})")
        tp = await self.partition_of(stream)
        self._consumer.assign([tp])
        self._probe.assign([tp])
        begin = (await self._probe.beginning_offsets([tp]))[tp]
        first = await self._record_at(tp, begin)
        if first is None:
            raise SpanError(f"{tp.topic}[{tp.partition}] holds no records: nothing of stream {stream}")
        if to_ms < first.timestamp:
            raise BeyondRetention(
                f"{tp.topic}[{tp.partition}] no longer holds {stream} at {_ms(to_ms * NS_PER_MS)}: its oldest record "
                f"is from {_ms(first.timestamp * NS_PER_MS)} (retention; see README, 'Clips')"
            )
        lookback = min(_FIRST_LOOKBACK_MS, self._max_lookback_ms)
        while True:
            start = await self._locate(tp, begin, from_ms - lookback)
            collector = SpanCollector(stream, from_ms * NS_PER_MS, to_ms * NS_PER_MS)
            may_widen = start > begin and lookback < self._max_lookback_ms
            if await self._scan(tp, start, collector, deadline, may_widen):
                return collector.span()
            lookback = min(lookback * 2, self._max_lookback_ms)

    async def _scan(
        self, tp: TopicPartition, start: int, collector: SpanCollector, deadline: float, may_widen: bool
    ) -> bool:
        """Feed the stream's messages from `start` on; False when the start was missed and may be read from earlier."""
        key = collector.stream.encode()
        index = self._index_of(tp)
        self._consumer.seek(tp, start)
        while True:
            records = (await self._consumer.getmany(tp, timeout_ms=_POLL_MS, max_records=500)).get(tp, [])
            if not records and time.monotonic() >= deadline:
                collector.finish()
                return True
            for record in records:
                if record.offset % _INDEX_EVERY == 0:
                    index.add(record.offset, record.timestamp)
                if record.key != key:
                    continue
                message = self._decode(record)
                if message is None:
                    continue
                collector.add(message)
                if collector.missed_start:
                    if may_widen:
                        return False
                    collector.allow_late_start()
                if collector.done:
                    return True

    def _decode(self, record: Any) -> MediaMessage | None:
        try:
            return decode_media(WireRecord(record.key, record.value, list(record.headers or ())))
        except WireError:
            self.malformed += 1
            return None

    async def _locate(self, tp: TopicPartition, begin: int, target_ms: int) -> int:
        """The first offset whose record timestamp is at or after `target_ms` (or the log end)."""
        try:
            answer = (await self._probe.offsets_for_times({tp: max(target_ms, 0)})).get(tp)
        except KafkaError:
            answer = None
        if answer is not None:
            found = await self._record_at(tp, answer.offset)
            if found is not None and found.offset == answer.offset and found.timestamp == answer.timestamp:
                return int(answer.offset)
        end = (await self._probe.end_offsets([tp]))[tp]
        low, high = self._index_of(tp).bracket(target_ms, begin, end)
        while low < high:
            middle = (low + high) // 2
            found = await self._record_at(tp, middle)
            if found is None:
                high = middle
            elif found.timestamp < target_ms:
                low = found.offset + 1
            else:
                high = middle
        return low

    async def _record_at(self, tp: TopicPartition, offset: int) -> _Found | None:
        """The first record at or after `offset`, or None past the log end."""
        self.probes += 1
        self._probe.seek(tp, offset)
        for _ in range(4):
            records = (await self._probe.getmany(tp, timeout_ms=_POLL_MS, max_records=1)).get(tp, [])
            if records:
                self._index_of(tp).add(records[0].offset, records[0].timestamp)
                return _Found(records[0].offset, records[0].timestamp)
        return None

    def _index_of(self, tp: TopicPartition) -> SparseIndex:
        return self._index.setdefault(tp, SparseIndex(_INDEX_SIZE))


class SparseIndex:
    """(offset, timestamp) points met on one partition, to narrow a search for a time.

    Timestamps increase only roughly along a partition (several streams' clocks share it),
    so a bracket is a starting guess for the binary search, as the broker's own index is.
    When full, the older half of the points (by offset) is dropped: retention removes them first.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._offsets: list[int] = []
        self._stamps: list[int] = []

    def add(self, offset: int, timestamp: int) -> None:
        at = bisect.bisect_left(self._offsets, offset)
        if at < len(self._offsets) and self._offsets[at] == offset:
            return
        self._offsets.insert(at, offset)
        self._stamps.insert(at, timestamp)
        if len(self._offsets) > self._size:
            half = self._size // 2
            del self._offsets[:half], self._stamps[:half]

    def bracket(self, target_ms: int, begin: int, end: int) -> tuple[int, int]:
        """(low, high) within [begin, end]: after the last known point stamped before `target_ms`,
        up to the first known point after it stamped at or after it."""
        low, high = begin, end
        for offset, stamp in zip(self._offsets, self._stamps, strict=True):
            if offset < begin or offset >= end:
                continue
            if stamp < target_ms:
                low = offset + 1
            else:
                high = offset
                break
        return low, max(low, high)


def _ms(ns: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ns / 1e9)) + f".{ns // NS_PER_MS % 1000:03d}"
