"""Packets of one stream into an MP4 file, as received: a remux with PyAV, no decoding or encoding.

A clip keeps the camera's H.264/HEVC and the microphone's AAC bit for bit; FFmpeg's MP4
muxer converts the framing (Annex B to length-prefixed, ADTS to raw AAC) and `+faststart`
puts the index first so a browser can play while it loads.

Timestamps come from the wallclock each packet carries, not from its own pts: a recording
replayed in a loop starts its pts again every pass, a camera may reset them, but the
wallclock goes on. The decode delay of a packet (pts - dts, B-frames) is kept, and dts is
forced to increase, as the muxer requires.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

from streams.models import MediaKind, Packet, StreamInit, TrackInfo

_NS = Fraction(1, 1_000_000_000)


class RemuxError(RuntimeError):
    """The packets could not be written as an MP4 (FFmpeg's reason in the message)."""


@dataclass(frozen=True, slots=True)
class RemuxResult:
    """What went into the file."""

    packets: int
    bytes: int
    video_codec: str | None
    audio_codec: str | None


def write_mp4(init: StreamInit, packets: Sequence[Packet], path: Path) -> RemuxResult:
    """Write `packets` (the first one the clip's start) as an MP4 at `path`; blocking, run it off the loop."""
    if not packets:
        raise RemuxError("no packets to write")
    start_ns = packets[0].wall_ns
    try:
        with av.open(str(path), "w", format="mp4", options={"movflags": "+faststart"}) as output:
            streams = {track.kind: _add_stream(output, track) for track in init.tracks}
            last_dts: dict[MediaKind, int] = {}
            written = 0
            for packet in packets:
                stream = streams.get(packet.kind)
                if stream is None:
                    continue
                output.mux(_packet(packet, stream, start_ns, last_dts))
                written += 1
    except av.FFmpegError as exc:
        raise RemuxError(f"cannot write {path.name}: {exc}") from exc
    video, audio = init.track("video"), init.track("audio")
    return RemuxResult(
        packets=written,
        bytes=path.stat().st_size,
        video_codec=video.codec if video else None,
        audio_codec=audio.codec if audio else None,
    )


def _add_stream(output: av.container.OutputContainer, track: TrackInfo) -> av.stream.Stream:
    if track.kind == "audio":
        stream: av.stream.Stream = output.add_stream(track.codec, rate=track.sample_rate or None)
    else:
        stream = output.add_stream(track.codec)
    context = stream.codec_context
    if isinstance(context, av.VideoCodecContext):
        context.width, context.height = track.width, track.height
    elif isinstance(context, av.AudioCodecContext) and track.layout:
        context.layout = track.layout
    if track.extradata:
        stream.codec_context.extradata = track.extradata
    stream.time_base = track.time_base
    return stream


def _packet(packet: Packet, stream: av.stream.Stream, start_ns: int, last_dts: dict[MediaKind, int]) -> av.Packet:  # type: ignore[type-arg]
    time_base = packet.time_base
    pts = round(Fraction(packet.wall_ns - start_ns) * _NS / time_base)
    delay = packet.pts - packet.dts if packet.pts is not None and packet.dts is not None else 0
    dts = pts - max(delay, 0)
    previous = last_dts.get(packet.kind)
    if previous is not None and dts <= previous:
        dts = previous + 1
    last_dts[packet.kind] = dts
    out = av.Packet(packet.data)
    out.pts, out.dts = max(pts, dts), dts
    out.time_base = time_base
    out.is_keyframe = packet.keyframe
    out.stream = stream
    return out
