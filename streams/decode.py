"""Decode `fw.media` back into frames and audio with PyAV.

`StreamDecoder` rebuilds a stream's decoders from its `init` message and turns packets into
`Frame` (RGB24 numpy) and `AudioChunk` (float32 PCM) objects. `MediaDecoder` keeps one per
stream and skips what came before a stream's first `init` (a consumer that joins
mid-stream starts at the next init + keyframe). `MediaConsumer` reads the topic with
aiokafka, decodes in a worker thread (never on the event loop) and sends what cannot be
decoded to the dead-letter topic with its reason; the stream goes on.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, OrderedDict, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import av
import numpy as np
import numpy.typing as npt
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streams.kafka import DeadLetters, Revocations, SourcePosition
from streams.models import (
    AudioChunk,
    EndOfStream,
    Frame,
    MediaMessage,
    Packet,
    StreamInit,
    TrackInfo,
)
from streams.wire import WireError, WireRecord, decode_media

log = logging.getLogger(__name__)
FrameFilter = Callable[[str, int], bool]
"""(stream id, wallclock ns) -> whether this decoded video frame is wanted as RGB."""


class DecodeError(ValueError):
    """A message that reached a decoder but could not be decoded; the reason is the message."""


class Desynchronised(DecodeError):
    """A message broke its stream's decoder: the stream was dropped and starts again at its next init."""


@dataclass
class DecodeCounters:
    """Per-consumer counts, exported as metrics."""

    messages: int = 0
    packets: int = 0
    frames_decoded: int = 0
    frames_emitted: int = 0
    frames_by_stream: Counter[str] = field(default_factory=Counter)
    audio_samples: int = 0
    skipped_before_init: int = 0
    corrupt_packets: int = 0
    desynchronised: int = 0
    dead_letters: int = 0
    streams_ended: int = 0
    released_items: int = 0


@dataclass(frozen=True, slots=True)
class StreamEnded:
    """The end of a stream: everything before it has been emitted."""

    stream: str
    wall_ns: int


Decoded = Frame | AudioChunk | StreamEnded

_SCALE = {"s16": 32768.0, "s16p": 32768.0, "s32": 2147483648.0, "s32p": 2147483648.0, "u8": 128.0, "u8p": 128.0}


def audio_to_float(frame: av.AudioFrame) -> npt.NDArray[np.float32]:
    """PCM of an audio frame as float32, shape (channels, samples), any sample format."""
    array = frame.to_ndarray()
    fmt = frame.format.name
    channels = len(frame.layout.channels)
    if not frame.format.is_planar:
        array = array.reshape(-1, channels).T
    if fmt in ("u8", "u8p"):
        array = array.astype(np.float32) - 128.0
    scale = _SCALE.get(fmt)
    out = array.astype(np.float32, copy=False)
    if scale is not None:
        out = out / np.float32(scale)
    return np.ascontiguousarray(out, dtype=np.float32)


CodecContext = av.VideoCodecContext | av.AudioCodecContext


def _codec_context(track: TrackInfo) -> CodecContext:
    try:
        ctx = av.CodecContext.create(track.codec, "r")
    except (av.FFmpegError, ValueError) as exc:
        raise DecodeError(f"no decoder for codec {track.codec!r}: {exc}") from exc
    try:
        return _configure(ctx, track)
    except DecodeError:
        raise
    except Exception as exc:  # PyAV raises ValueError, OverflowError, TypeError… for values FFmpeg refuses
        raise DecodeError(
            f"{track.kind} track of codec {track.codec!r} cannot be set up: {type(exc).__name__}: {exc}"
        ) from exc


def _configure(ctx: av.CodecContext, track: TrackInfo) -> CodecContext:
    if track.extradata:
        ctx.extradata = track.extradata
    if isinstance(ctx, av.VideoCodecContext) and track.kind == "video":
        ctx.width, ctx.height = track.width, track.height
        ctx.thread_type = "AUTO"
        return ctx
    if isinstance(ctx, av.AudioCodecContext) and track.kind == "audio":
        if track.sample_rate:
            ctx.sample_rate = track.sample_rate
        if track.layout:
            ctx.layout = track.layout
        return ctx
    raise DecodeError(f"codec {track.codec!r} is not a {track.kind} codec")


class StreamDecoder:
    """Decoders for one stream, built from its init message."""

    def __init__(self, init: StreamInit, counters: DecodeCounters, frame_filter: FrameFilter | None = None) -> None:
        self.init = init
        self.origin = init
        self._counters = counters
        self._filter = frame_filter
        self._contexts: dict[str, CodecContext] = {track.kind: _codec_context(track) for track in init.tracks}
        self._channels = {track.kind: track.channels for track in init.tracks}
        self._walls: OrderedDict[tuple[str, int], int] = OrderedDict()
        self._last_wall = init.wall_ns

    def decode(self, packet: Packet) -> list[Frame | AudioChunk]:
        ctx = self._contexts.get(packet.kind)
        if ctx is None:
            raise DecodeError(f"{packet.kind} packet but the init of {packet.stream!r} has no {packet.kind} track")
        # Copy into a buffer FFmpeg owns: a packet wrapping Python bytes is freed through a Python
        # callback, and with frame threads FFmpeg frees it from its own threads, which then wait
        # for the GIL the decoding thread holds (a PyAV deadlock seen with several streams).
        av_packet = av.Packet(len(packet.data))
        av_packet.update(packet.data)
        av_packet.pts = packet.pts
        av_packet.dts = packet.dts
        av_packet.time_base = packet.time_base
        if packet.pts is not None:
            self._walls[(packet.kind, packet.pts)] = packet.wall_ns
            while len(self._walls) > 512:
                self._walls.popitem(last=False)
        self._last_wall = packet.wall_ns
        try:
            frames = ctx.decode(av_packet)
        except av.FFmpegError as exc:
            raise DecodeError(f"{packet.kind} packet seq {packet.seq} does not decode: {exc}") from exc
        return self._convert(packet.kind, frames)

    def decode_contained(self, packet: Packet) -> list[Frame | AudioChunk]:
        """`decode`, with anything but a corrupt packet raised as `Desynchronised`.

        FFmpeg recovers from a corrupt packet at the next keyframe on its own; any other
        failure (PyAV refusing a value, a frame that cannot be converted) leaves the decoder
        in a state nobody can vouch for, so the stream starts afresh at its next init.
        """
        try:
            return self.decode(packet)
        except DecodeError:
            raise
        except Exception as exc:
            raise Desynchronised(
                f"{packet.kind} packet seq {packet.seq} of {packet.stream!r} broke its decoder: "
                f"{type(exc).__name__}: {exc}"
            ) from exc

    def flush(self) -> list[Frame | AudioChunk]:
        out: list[Frame | AudioChunk] = []
        for kind, ctx in self._contexts.items():
            try:
                out += self._convert(kind, ctx.decode(None))
            except av.FFmpegError as exc:
                log.warning("flush of %s/%s failed: %s", self.init.stream, kind, exc)
        return out

    def _check_audio(self, frame: av.AudioFrame) -> None:
        """Refuse an audio frame whose shape a damaged packet changed (PyAV crashes converting some).

        AAC can carry a channel configuration in band, so one flipped bit can turn a mono
        stream into 29 channels with more planes than channels.
        """
        channels = len(frame.layout.channels)
        expected = self._channels.get("audio", 0)
        planes = len(frame.planes)
        if (
            not 1 <= channels <= 64
            or (expected and channels != expected)
            or frame.samples <= 0
            or planes != (channels if frame.format.is_planar else 1)
        ):
            raise DecodeError(
                f"audio frame of {self.init.stream!r} has {channels} channels in {planes} planes "
                f"(init: {expected or 'unknown'}), {frame.samples} samples: a damaged packet"
            )

    def _wall(self, kind: str, pts: int | None) -> int:
        if pts is None:
            return self._last_wall
        return self._walls.pop((kind, pts), self._last_wall)

    def _convert(self, kind: str, frames: Iterable[Any]) -> list[Frame | AudioChunk]:
        out: list[Frame | AudioChunk] = []
        stream, site = self.init.stream, self.init.site
        for frame in frames:
            wall = self._wall(kind, frame.pts)
            if kind == "video":
                self._counters.frames_decoded += 1
                self._counters.frames_by_stream[stream] += 1
                if self._filter is not None and not self._filter(stream, wall):
                    continue
                self._counters.frames_emitted += 1
                out.append(
                    Frame(
                        stream,
                        site,
                        frame.pts,
                        frame.time_base,
                        wall,
                        frame.to_ndarray(format="rgb24"),
                        bool(frame.key_frame),
                        live=self.init.live,
                    )
                )
            else:
                self._check_audio(frame)
                samples = audio_to_float(frame)
                self._counters.audio_samples += samples.shape[1]
                out.append(AudioChunk(stream, site, frame.pts, frame.time_base, wall, samples, frame.sample_rate))
        return out


class MediaDecoder:
    """Routes wire messages to one `StreamDecoder` per stream (synchronous, thread-safe per call)."""

    def __init__(self, frame_filter: FrameFilter | None = None) -> None:
        self.counters = DecodeCounters()
        self._filter = frame_filter
        self._streams: dict[str, StreamDecoder] = {}

    @property
    def streams(self) -> dict[str, StreamDecoder]:
        return self._streams

    def forget(self, stream: str) -> None:
        """Drop the stream's decoder unflushed: its next message must be an init (a re-read)."""
        self._streams.pop(stream, None)

    def handle(self, message: MediaMessage) -> list[Decoded]:
        """Decode one message; raise DecodeError if it cannot be used.

        Nothing else leaves this method: whatever one message does to PyAV or FFmpeg is
        that message's `DecodeError`, and the other streams never notice.
        """
        self.counters.messages += 1
        try:
            return self._handle(message)
        except DecodeError as exc:
            self.counters.corrupt_packets += isinstance(message, Packet)
            if isinstance(exc, Desynchronised):
                self.counters.desynchronised += 1
                self._streams.pop(message.stream, None)
            raise
        except Exception as exc:  # a message no check foresaw: contained to its stream all the same
            self.counters.corrupt_packets += isinstance(message, Packet)
            self.counters.desynchronised += 1
            self._streams.pop(message.stream, None)
            raise Desynchronised(
                f"{type(message).__name__} of {message.stream!r} broke its decoder: {type(exc).__name__}: {exc}"
            ) from exc

    def _handle(self, message: MediaMessage) -> list[Decoded]:
        if isinstance(message, StreamInit):
            current = self._streams.get(message.stream)
            if current is not None and current.init.tracks == message.tracks:
                current.init = message
                return []
            flushed: list[Decoded] = list(current.flush()) if current is not None else []
            try:
                fresh = StreamDecoder(message, self.counters, self._filter)
            except DecodeError as exc:  # the stream resynchronises at its next good init
                self._streams.pop(message.stream, None)
                raise Desynchronised(f"init of {message.stream!r}: {exc}") from exc
            if current is not None:
                fresh.origin = current.origin
            self._streams[message.stream] = fresh
            return flushed
        if isinstance(message, EndOfStream):
            decoder = self._streams.pop(message.stream, None)
            out: list[Decoded] = list(decoder.flush()) if decoder is not None else []
            self.counters.streams_ended += 1
            out.append(StreamEnded(message.stream, message.wall_ns))
            return out
        decoder = self._streams.get(message.stream)
        if decoder is None:
            self.counters.skipped_before_init += 1
            return []
        self.counters.packets += 1
        return list(decoder.decode_contained(message))


@dataclass(frozen=True, slots=True)
class DecodedItem:
    """A decoded item, where its message came from, and where decoding could restart for it.

    `restart` is the stream's latest init when the item came out of the decoder (a decoder
    with frame threads may hand a frame out after the next init arrived), `restart_wall_ns`
    that init's wallclock. `origin_seq`/`origin_wall_ns` are those of the init this consumer
    started the stream from: seq 0 means it saw the stream from its very beginning.
    """

    item: Decoded
    position: SourcePosition
    restart: SourcePosition | None
    origin_seq: int = 0
    origin_wall_ns: int = 0
    restart_wall_ns: int = 0


@dataclass
class _Failure:
    record: WireRecord
    position: SourcePosition
    reason: str


@dataclass
class _BatchResult:
    items: list[DecodedItem] = field(default_factory=list)
    failures: list[_Failure] = field(default_factory=list)
    last_offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    epoch: int = 0
    unstarted: dict[str, SourcePosition] = field(default_factory=dict)


class MediaConsumer:
    """Reads `fw.media` (as a group member or from explicit offsets) and yields decoded items.

    Offsets are never committed automatically: the caller commits with `commit()` once what
    it built from the items is safely stored (docs/design.md §8).
    """

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        dead_letter_producer: AIOKafkaProducer,
        dead_letter_topic: str,
        frame_filter: FrameFilter | None = None,
        batch_records: int = 256,
        fetch_ahead_bytes: int = 16 * 1024 * 1024,
    ) -> None:
        self._consumer = consumer
        self._dead = DeadLetters(dead_letter_producer, dead_letter_topic, stage="decode")
        self._decoder = MediaDecoder(frame_filter)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fw-decode")
        self._restart: dict[str, tuple[SourcePosition, int]] = {}  # per stream: its latest init, and its wallclock
        self._batch_records = batch_records
        self._fetch: asyncio.Future[tuple[list[Any], int]] | None = None
        self._fetched: deque[tuple[list[Any], int, int]] = deque()  # records, epoch, bytes: not yet decoding
        self._fetched_bytes = 0
        self._fetch_ahead_bytes = fetch_ahead_bytes
        self._batches: deque[asyncio.Future[_BatchResult]] = deque()  # decoding or decoded, not delivered
        self._handled: dict[tuple[str, int], int] = {}
        self._partition_of: dict[str, tuple[str, int]] = {}
        self._unstarted: dict[str, SourcePosition] = {}  # decode thread: streams begun, no item yet
        self._unstarted_delivered: dict[str, SourcePosition] = {}  # the same, as of the last delivered batch
        self._revocations = Revocations()
        self._to_forget: set[tuple[str, int]] = set()

    @property
    def counters(self) -> DecodeCounters:
        return self._decoder.counters

    @property
    def handled_positions(self) -> dict[tuple[str, int], int]:
        """Per (topic, partition): the last record done with, items included.

        A record is done when the caller asked for the item after its last one, or when it
        gave none (an init, a packet the decoder holds for reordering, a dead letter): what
        the positions of the items alone cannot show.
        """
        return dict(self._handled)

    @property
    def unstarted_positions(self) -> dict[tuple[str, int], int]:
        """Per (topic, partition): the earliest init of a stream that has given no item yet.

        Such a stream has no window at the caller, so nothing else keeps a commit from
        passing its init (a frame-threaded decoder holds a few packets before the first
        frame); a commit past it would make a restarted reader skip to the next keyframe.
        """
        earliest: dict[tuple[str, int], int] = {}
        for position in self._unstarted_delivered.values():
            key = (position.topic, position.partition)
            earliest[key] = min(earliest.get(key, position.offset), position.offset)
        return earliest

    @property
    def consumer(self) -> AIOKafkaConsumer:
        return self._consumer

    def close(self) -> None:
        if self._fetch is not None:
            self._fetch.cancel()
            self._fetch = None
        self._executor.shutdown(wait=True)

    def release(self, partitions: Iterable[TopicPartition]) -> None:
        """Forget what was read from `partitions` (revoked in a consumer-group rebalance).

        After a rebalance the consumer reads each assigned partition again from its committed
        offset, so what was fetched from a revoked partition and not yet delivered is dropped
        (counted), and its streams decode afresh from the next init: the decode thread forgets
        them before it decodes the next batch.
        """
        partitions = list(partitions)
        self._revocations.revoke(partitions)
        for tp in partitions:
            key = (tp.topic, tp.partition)
            self._to_forget.add(key)
            self._handled.pop(key, None)
        gone = {(tp.topic, tp.partition) for tp in partitions}
        self._unstarted_delivered = {
            stream: position
            for stream, position in self._unstarted_delivered.items()
            if (position.topic, position.partition) not in gone
        }

    async def items(
        self,
        idle_timeout: float | None = None,
        stop: asyncio.Event | None = None,
        on_idle: Callable[[], Awaitable[None]] | None = None,
    ) -> AsyncIterator[DecodedItem]:
        """Decoded items in partition order; ends after `idle_timeout` s without records or on `stop`.

        `on_idle` is awaited after each fetch that brought nothing while nothing waits to be
        delivered: the caller's periodic work (commits, the log-end check) goes on while no
        record comes, at a point where the caller is between items, as with work done per item.

        Three things overlap: the consumer fetches, the decode thread decodes the next batch,
        and the caller handles the items of the one before. Fetched records are taken from the
        consumer as they come (up to `fetch_ahead_bytes`): the consumer sends its next fetch
        only once its buffer is empty, and a decode thread waiting for that round trip would
        idle (bench/README.md). At most two batches are decoded ahead,
        since decoded frames are large. A batch decoded but not yet delivered when the caller
        leaves the loop is delivered first by the next call, so leaving early loses nothing the
        decoder has moved past.
        """
        loop = asyncio.get_running_loop()
        quiet_since = loop.time()
        while stop is None or not stop.is_set():
            if self._fetch is None and (not self._fetched or self._fetched_bytes < self._fetch_ahead_bytes):
                self._fetch = asyncio.ensure_future(self._fetch_records())
            self._feed_decoder(loop)
            head = self._batches[0] if self._batches else None
            await asyncio.wait([f for f in (self._fetch, head) if f is not None], return_when=asyncio.FIRST_COMPLETED)
            if self._fetch is not None and self._fetch.done():
                fetch, self._fetch = self._fetch, None
                records, epoch = fetch.result()
                if records:
                    quiet_since = loop.time()
                    self._take(records, epoch)
                elif not self._batches and not self._fetched:
                    if idle_timeout is not None and loop.time() - quiet_since >= idle_timeout:
                        return
                    if on_idle is not None:
                        await on_idle()
            if head is not None and head.done():
                async for item in self._deliver(await self._batches.popleft()):
                    yield item
                quiet_since = max(quiet_since, loop.time())
        async for item in self._remaining(loop):
            yield item

    async def _remaining(self, loop: asyncio.AbstractEventLoop) -> AsyncIterator[DecodedItem]:
        """Stopping: what was already fetched is still decoded and delivered."""
        if self._fetch is not None:
            fetch, self._fetch = self._fetch, None
            if fetch.done():
                self._take(*fetch.result())
            else:
                fetch.cancel()  # it has taken no record from the consumer yet
        while self._feed_decoder(loop):
            async for item in self._deliver(await self._batches.popleft()):
                yield item

    async def _fetch_records(self) -> tuple[list[Any], int]:
        batches = await self._consumer.getmany(timeout_ms=200, max_records=self._batch_records)
        return [record for batch in batches.values() for record in batch], self._revocations.epoch

    def _take(self, records: list[Any], epoch: int) -> None:
        size = sum(len(record.value or b"") for record in records)
        self._fetched.append((records, epoch, size))
        self._fetched_bytes += size

    def _feed_decoder(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Hand fetched batches to the decode thread while fewer than two are decoding or decoded."""
        while self._fetched and len(self._batches) < 2:
            records, epoch, size = self._fetched.popleft()
            self._fetched_bytes -= size
            # Records of a partition revoked since they were fetched come again from the committed
            # offset: decoding them after the decoder forgot the partition would give it stale state.
            records = [r for r in records if not self._revocations.stale(r.topic, r.partition, epoch)]
            if records:
                forget, self._to_forget = self._to_forget, set()
                self._batches.append(loop.run_in_executor(self._executor, self._decode_batch, records, forget, epoch))
        return bool(self._batches)

    async def _deliver(self, result: _BatchResult) -> AsyncIterator[DecodedItem]:
        def released(position: SourcePosition) -> bool:  # since this batch was fetched
            return self._revocations.stale(position.topic, position.partition, result.epoch)

        for failure in result.failures:
            if not released(failure.position):  # else the partition's next owner dead-letters it
                await self._dead.send(failure.record, failure.position, failure.reason)
                self.counters.dead_letters += 1
        for item in result.items:
            if released(item.position):
                self.counters.released_items += 1
                continue
            yield item
        for (topic, partition), offset in result.last_offsets.items():
            if not self._revocations.stale(topic, partition, result.epoch):
                self._handled[(topic, partition)] = max(self._handled.get((topic, partition), offset), offset)
        self._unstarted_delivered = {
            stream: position
            for stream, position in result.unstarted.items()
            if not self._revocations.stale(position.topic, position.partition, result.epoch)
        }

    def _decode_batch(self, records: list[Any], forget: set[tuple[str, int]], epoch: int) -> _BatchResult:
        for stream in [s for s, key in self._partition_of.items() if key in forget]:
            self._decoder.forget(stream)
            self._restart.pop(stream, None)
            self._unstarted.pop(stream, None)
            del self._partition_of[stream]
        result = _BatchResult(epoch=epoch)
        for record in records:
            position = SourcePosition(record.topic, record.partition, record.offset)
            result.last_offsets[(record.topic, record.partition)] = record.offset
            wire = WireRecord(record.key, record.value, list(record.headers or ()))
            try:
                message = decode_media(wire)
                if isinstance(message, StreamInit):
                    self._restart[message.stream] = (position, message.wall_ns)
                    self._partition_of[message.stream] = (record.topic, record.partition)
                    if message.stream not in self._decoder.streams:
                        self._unstarted[message.stream] = position
                skipped = self._decoder.counters.skipped_before_init
                decoded = self._decoder.handle(message)
                if isinstance(message, Packet) and self._decoder.counters.skipped_before_init > skipped:
                    # Not decodable without its init: dead-lettered so nothing vanishes unseen (after a
                    # start mid-stream that is at most a GOP per stream; an unknown stream id is all of it).
                    raise DecodeError(
                        f"{message.kind} packet of stream {message.stream!r} before any init of it "
                        f"(an unknown stream, a source that sends no init, or a start mid-stream)"
                    )
            except (WireError, DecodeError) as exc:
                result.failures.append(_Failure(wire, position, str(exc)))
                if isinstance(exc, Desynchronised):
                    self._drop_stream(record.key)
                continue
            except Exception as exc:  # a bug of ours must not stop every stream: this record's alone
                log.exception("decode: record %s[%d]@%d failed", record.topic, record.partition, record.offset)
                self._drop_stream(record.key)
                result.failures.append(_Failure(wire, position, f"{type(exc).__name__}: {exc}"))
                continue
            restart, restart_wall = self._restart.get(message.stream, (None, 0))
            stream_decoder = self._decoder.streams.get(message.stream)
            origin = stream_decoder.origin if stream_decoder is not None else None
            origin_seq, origin_wall = (origin.seq, origin.wall_ns) if origin else (0, 0)
            result.items += [
                DecodedItem(item, position, restart, origin_seq, origin_wall, restart_wall) for item in decoded
            ]
            if decoded or isinstance(message, EndOfStream):
                self._unstarted.pop(message.stream, None)
            if isinstance(message, EndOfStream):
                self._restart.pop(message.stream, None)
        result.unstarted = dict(self._unstarted)
        return result

    def _drop_stream(self, key: bytes | None) -> None:
        """A stream whose decoder broke: nothing of it is kept, and no commit waits for its init."""
        stream = key.decode(errors="replace") if isinstance(key, bytes) else ""
        self._decoder.forget(stream)
        self._restart.pop(stream, None)
        self._unstarted.pop(stream, None)
        self._partition_of.pop(stream, None)

    async def flush(self) -> None:
        """Wait for the acks of the dead letters sent so far (before a commit passes their records)."""
        await self._dead.flush()

    async def commit(self, positions: Iterable[SourcePosition]) -> None:
        """Commit, per partition, the next offset after the highest given position."""
        await self.flush()
        offsets: dict[TopicPartition, int] = {}
        for position in positions:
            tp = TopicPartition(position.topic, position.partition)
            offsets[tp] = max(offsets.get(tp, 0), position.offset + 1)
        if offsets:
            await self._consumer.commit(offsets)
