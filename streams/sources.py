"""Ingest: demux cameras, microphones and recordings into wire messages, without decoding.

`Demuxer` reads one source with PyAV and yields `StreamInit` (before the first packet and
before every video keyframe), `Packet` and finally `EndOfStream`, each stamped with a
capture wallclock. `replay` paces a recording at its own timing (or as fast as possible)
and marks it as a replay in its inits (analyze never drops its frames); `ingest_live` keeps
a live source connected, reconnecting with backoff. Blocking reads run in an executor, a
batch at a time, never on the event loop.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import av
import av.container

from config.schema import Reconnect
from streams.clock import NS_PER_S, Clock, SystemClock
from streams.models import EndOfStream, MediaKind, MediaMessage, Packet, StreamInit, TrackInfo

log = logging.getLogger(__name__)


class SourceError(RuntimeError):
    """A source that cannot be opened or read."""


class MessageSink(Protocol):
    """Where ingest sends wire messages (Kafka in production, a list in tests)."""

    async def publish(self, message: MediaMessage) -> Any: ...


@dataclass(frozen=True, slots=True)
class OpenSpec:
    """How to open a source URL with FFmpeg: target, forced format and demuxer options."""

    target: str
    format: str | None
    options: dict[str, str]
    live: bool


def open_spec(url: str, options: dict[str, str] | None = None) -> OpenSpec:
    """Map a config URL to an FFmpeg input (`v4l2:///dev/video0`, `alsa://hw:0`, RTSP, file)."""
    opts = dict(options or {})
    parts = urlsplit(url)
    scheme = parts.scheme.lower() if "://" in url else ""
    if scheme in ("rtsp", "rtsps"):
        opts.setdefault("rtsp_transport", "tcp")
        opts.setdefault("timeout", "5000000")
        return OpenSpec(url, None, opts, live=True)
    if scheme in ("http", "https"):
        opts.setdefault("rw_timeout", "5000000")
        return OpenSpec(url, None, opts, live=True)
    if scheme == "v4l2":
        return OpenSpec(parts.path or parts.netloc, "v4l2", opts, live=True)
    if scheme == "alsa":
        return OpenSpec(parts.netloc + parts.path, "alsa", opts, live=True)
    path = parts.path if scheme == "file" else url
    file = Path(path)
    if file.is_dir():
        raise SourceError(f"{path} is a directory, not a media file")
    if not file.is_file():
        raise SourceError(f"no such media file: {path}")
    if file.stat().st_size == 0:
        raise SourceError(f"{path} is empty (0 bytes), not a media file")
    return OpenSpec(path, None, opts, live=False)


def track_info(stream: av.stream.Stream) -> TrackInfo:
    """Decoder parameters of a demuxed stream."""
    ctx = stream.codec_context
    kind: MediaKind = "video" if stream.type == "video" else "audio"
    time_base = stream.time_base or Fraction(1, 90_000)
    extradata = bytes(ctx.extradata or b"")
    if kind == "video":
        fmt = getattr(ctx, "format", None)
        return TrackInfo(
            kind,
            ctx.name,
            Fraction(time_base),
            extradata,
            width=int(getattr(ctx, "width", 0) or 0),
            height=int(getattr(ctx, "height", 0) or 0),
            pix_fmt=fmt.name if fmt is not None else "",
        )
    layout = getattr(ctx, "layout", None)
    return TrackInfo(
        kind,
        ctx.name,
        Fraction(time_base),
        extradata,
        sample_rate=int(getattr(ctx, "sample_rate", 0) or 0),
        channels=int(getattr(ctx, "channels", 0) or 0),
        layout=layout.name if layout is not None else "",
    )


@dataclass
class DemuxStats:
    """What one pass over a source produced."""

    packets: int = 0
    video_packets: int = 0
    audio_packets: int = 0
    inits: int = 0
    bytes: int = 0
    media_seconds: float = 0.0


class Demuxer:
    """Reads one source with PyAV (no decoding) and yields wire messages in file order.

    Wallclock: `wall_base_ns` + (packet time - first packet time), so a recording keeps its
    own timing and a live stream its capture timing. `seq` counts every message. Its inits
    say whether the stream is `live` (default: whether the source is, `spec.live`).
    """

    def __init__(self, spec: OpenSpec, stream_id: str, site: str, seq: int = 0, live: bool | None = None) -> None:
        self.stream_id = stream_id
        self.site = site
        self.seq = seq
        self.live = spec.live if live is None else live
        self.stats = DemuxStats()
        try:
            self._container: av.container.InputContainer = av.open(
                spec.target, mode="r", format=spec.format, options=spec.options, timeout=10.0
            )
        except (av.FFmpegError, OSError) as exc:
            # FFmpeg's own words ("Invalid data found when processing input"), not the errno and path again
            reason = exc.strerror or str(exc)
            raise SourceError(f"cannot open {spec.target}: {reason}") from exc
        selected = [s for s in (_first(self._container, "video"), _first(self._container, "audio")) if s]
        if not selected:
            self._container.close()
            raise SourceError(f"{spec.target} has neither video nor audio")
        self._streams = selected
        self.tracks = tuple(track_info(stream) for stream in selected)
        self.duration_s = float(self._container.duration) / av.time_base if self._container.duration else None

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> Demuxer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _next_seq(self) -> int:
        seq = self.seq
        self.seq += 1
        return seq

    def init(self, wall_ns: int) -> StreamInit:
        self.stats.inits += 1
        return StreamInit(self.stream_id, self.site, self.tracks, wall_ns, self._next_seq(), live=self.live)

    def messages(self, wall_of: Callable[[float], int]) -> Iterator[tuple[float, MediaMessage]]:
        """Yield (media time in seconds, message); `wall_of` maps media time to wallclock ns."""
        has_video = any(track.kind == "video" for track in self.tracks)
        sent_init = False
        first_time: float | None = None
        try:
            for packet in self._container.demux(self._streams):
                if packet.size == 0:
                    continue
                kind: MediaKind = "video" if packet.stream.type == "video" else "audio"
                time_base = Fraction(packet.time_base or packet.stream.time_base or Fraction(1, 90_000))
                stamp = packet.pts if packet.pts is not None else packet.dts
                media_time = float(stamp * time_base) if stamp is not None else (first_time or 0.0)
                if first_time is None:
                    first_time = media_time
                wall_ns = wall_of(media_time)
                if not sent_init or (has_video and kind == "video" and packet.is_keyframe):
                    sent_init = True
                    yield media_time, self.init(wall_ns)
                data = bytes(packet)
                self.stats.packets += 1
                self.stats.bytes += len(data)
                if kind == "video":
                    self.stats.video_packets += 1
                else:
                    self.stats.audio_packets += 1
                self.stats.media_seconds = max(self.stats.media_seconds, media_time - first_time)
                yield (
                    media_time,
                    Packet(
                        stream=self.stream_id,
                        kind=kind,
                        data=data,
                        pts=packet.pts,
                        dts=packet.dts,
                        time_base=time_base,
                        keyframe=bool(packet.is_keyframe),
                        wall_ns=wall_ns,
                        seq=self._next_seq(),
                    ),
                )
        except av.FFmpegError as exc:
            raise SourceError(f"read failed on {self.stream_id}: {exc}") from exc

    def end(self, wall_ns: int) -> EndOfStream:
        return EndOfStream(self.stream_id, wall_ns, self._next_seq())


def _first(container: av.container.InputContainer, kind: str) -> av.stream.Stream | None:
    streams = container.streams.video if kind == "video" else container.streams.audio
    return streams[0] if streams else None


async def _pull(iterator: Iterator[tuple[float, MediaMessage]], batch: int) -> list[tuple[float, MediaMessage]]:
    def take() -> list[tuple[float, MediaMessage]]:
        out: list[tuple[float, MediaMessage]] = []
        for item in iterator:
            out.append(item)
            if len(out) >= batch:
                break
        return out

    return await asyncio.get_running_loop().run_in_executor(None, take)


class RecordingWall:
    """Wallclock of a recording: `base` + (media time - first media time) + `offset`."""

    def __init__(self, base_ns: int, offset_s: float = 0.0) -> None:
        self._base = base_ns
        self._offset = offset_s
        self._first: float | None = None

    def __call__(self, media_time: float) -> int:
        if self._first is None:
            self._first = media_time
        return self._base + round((media_time - self._first + self._offset) * NS_PER_S)


class CaptureWall:
    """Wallclock of a live stream: anchored to the clock at the first packet, then following
    the stream's timestamps (smooth), re-anchored when they drift more than a second."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._anchor: tuple[float, int] | None = None

    def __call__(self, media_time: float) -> int:
        now = self._clock.wall_ns()
        if self._anchor is None or abs(now - self._at(media_time)) > NS_PER_S:
            self._anchor = (media_time, now)
        return self._at(media_time)

    def _at(self, media_time: float) -> int:
        assert self._anchor is not None
        return self._anchor[1] + round((media_time - self._anchor[0]) * NS_PER_S)


@dataclass(frozen=True)
class ReplayOptions:
    """`speed` 1.0 keeps the recording's timing; None sends as fast as possible.

    `live` is what the stream's inits say (wire field `live`). A replay is not live by
    default, at any speed: analyze holds its frames back instead of dropping them, so a
    `--speed max` replay gives the alerts of a real-speed one. That includes a configured
    `file` source in `fusewatch run` (the demo's looping recordings): it stands in for a
    camera at real speed, but it is a recording whose every loop should give the same
    alerts, so a slow machine lets it fall behind (consumer lag) rather than drop frames.
    A caller that wants a recording to behave exactly like a camera passes `live=True`.
    """

    speed: float | None = 1.0
    loops: int = 1
    align_s: float = 2.0
    wall_base_ns: int | None = None
    live: bool = False


@dataclass
class ReplayResult:
    """Totals of a replay."""

    stats: DemuxStats = field(default_factory=DemuxStats)
    messages: int = 0
    wall_start_ns: int = 0
    wall_end_ns: int = 0


async def replay(
    path: str,
    stream_id: str,
    site: str,
    sink: MessageSink,
    options: ReplayOptions = ReplayOptions(),
    clock: Clock | None = None,
    progress: Callable[[float], None] | None = None,
) -> ReplayResult:
    """Replay a recording into `sink`, looping `options.loops` times, then send `eos`.

    The first packet's wallclock is aligned to a multiple of `align_s` (the window size),
    so the same file always falls into windows the same way: replays are deterministic.
    """
    clock = clock or SystemClock()
    spec = open_spec(path)
    now = clock.wall_ns()
    align_ns = max(int(options.align_s * NS_PER_S), 1)
    if options.wall_base_ns is not None:
        base = options.wall_base_ns
    elif options.speed is None:
        base = now - now % align_ns
    else:
        base = now - now % align_ns + align_ns
    result = ReplayResult(wall_start_ns=base)
    mono_start = clock.monotonic() + (base - now) / NS_PER_S  # when the first packet is due
    loop_offset = 0.0
    seq = 0
    last_wall = base
    for _ in range(max(options.loops, 1)):
        demuxer = await asyncio.get_running_loop().run_in_executor(
            None, functools.partial(Demuxer, spec, stream_id, site, seq, live=options.live)
        )
        try:
            iterator = demuxer.messages(RecordingWall(base, loop_offset))
            while batch := await _pull(iterator, 64):
                for _media_time, message in batch:
                    if options.speed is not None:
                        due = mono_start + (message.wall_ns - base) / NS_PER_S / options.speed
                        delay = due - clock.monotonic()
                        if delay > 0.001:
                            await clock.sleep(delay)
                    await sink.publish(message)
                    result.messages += 1
                    last_wall = max(last_wall, message.wall_ns)
                if progress is not None:
                    progress((last_wall - base) / NS_PER_S)
            seq = demuxer.seq
            _merge(result.stats, demuxer.stats)
            loop_offset += demuxer.stats.media_seconds + _frame_gap(demuxer.tracks)
        finally:
            demuxer.close()
    await sink.publish(EndOfStream(stream_id, last_wall, seq))
    result.messages += 1
    result.wall_end_ns = last_wall
    return result


async def replay_side_by_side(
    recordings: Mapping[str, Path], site: str, sink: MessageSink, wall_base_ns: int | None = None
) -> dict[str, ReplayResult]:
    """Replay recordings (stream id → file) as fast as possible, all starting at one wallclock.

    As cameras recording side by side: the first sets the start (`wall_base_ns`, or aligned
    to now), and every other starts there too, so their windows line up.
    """
    results: dict[str, ReplayResult] = {}
    for stream_id, path in recordings.items():
        options = ReplayOptions(speed=None, wall_base_ns=wall_base_ns)
        results[stream_id] = await replay(str(path), stream_id, site, sink, options)
        wall_base_ns = results[stream_id].wall_start_ns
    return results


def _frame_gap(tracks: tuple[TrackInfo, ...]) -> float:
    return 0.04 if any(track.kind == "video" for track in tracks) else 0.02


def _merge(total: DemuxStats, part: DemuxStats) -> None:
    total.packets += part.packets
    total.video_packets += part.video_packets
    total.audio_packets += part.audio_packets
    total.inits += part.inits
    total.bytes += part.bytes
    total.media_seconds += part.media_seconds


@dataclass
class IngestState:
    """Live ingest bookkeeping, readable while it runs."""

    connects: int = 0
    failures: int = 0
    messages: int = 0
    last_error: str = ""
    connect_seqs: list[int] = field(default_factory=list)


async def ingest_live(
    url: str,
    stream_id: str,
    site: str,
    sink: MessageSink,
    reconnect: Reconnect,
    options: dict[str, str] | None = None,
    clock: Clock | None = None,
    state: IngestState | None = None,
    stop: asyncio.Event | None = None,
) -> IngestState:
    """Keep a live source flowing into `sink`; reconnect with exponential backoff.

    Wallclock is anchored at the first packet of each connection to the capture time and
    follows the stream's own timestamps from there, re-anchored if it drifts by > 1 s.
    Runs until `stop` is set or the task is cancelled; a file source ends with `eos`.
    Its inits are marked live (frames may be dropped when analyze is behind), except for a
    file source, which is a replay at real speed (see `ReplayOptions`).
    """
    clock = clock or SystemClock()
    state = state or IngestState()
    stop = stop or asyncio.Event()
    if not open_spec(url, options).live:
        result = await replay(url, stream_id, site, sink, ReplayOptions(speed=1.0), clock)
        state.connects, state.messages = 1, result.messages
        return state
    delay = reconnect.initial
    seq = 0
    while not stop.is_set():
        spec = open_spec(url, options)
        try:
            demuxer = await asyncio.get_running_loop().run_in_executor(None, Demuxer, spec, stream_id, site, seq)
        except SourceError as exc:
            state.failures += 1
            state.last_error = str(exc)
            log.warning("source %s: %s; retrying in %.1fs", stream_id, exc, delay)
            await _sleep_or_stop(clock, delay, stop)
            delay = min(delay * reconnect.factor, reconnect.maximum)
            continue
        state.connects += 1
        state.connect_seqs.append(seq)
        try:
            iterator = demuxer.messages(CaptureWall(clock))
            while not stop.is_set() and (batch := await _pull(iterator, 1)):
                for _media_time, message in batch:
                    await sink.publish(message)
                    state.messages += 1
                delay = reconnect.initial
            seq = demuxer.seq
            state.last_error = "source ended"
        except SourceError as exc:
            seq = demuxer.seq
            state.failures += 1
            state.last_error = str(exc)
        finally:
            demuxer.close()
        if stop.is_set():
            break
        log.warning("source %s dropped (%s); reconnecting in %.1fs", stream_id, state.last_error, delay)
        await _sleep_or_stop(clock, delay, stop)
        delay = min(delay * reconnect.factor, reconnect.maximum)
    return state


async def _sleep_or_stop(clock: Clock, seconds: float, stop: asyncio.Event) -> None:
    if math.isfinite(seconds) and seconds > 0:
        sleeper = asyncio.ensure_future(clock.sleep(seconds))
        stopper = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            stopper.cancel()
