"""Decoding wire messages in-process: parity with PyAV, skipping before init, bad codecs."""

from __future__ import annotations

from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from streams.decode import DecodeError, MediaDecoder, StreamEnded
from streams.models import AudioChunk, Frame, Packet, StreamInit, TrackInfo
from streams.sources import ReplayOptions, replay
from streams.testing import ListSink, ManualClock
from streams.wire import decode_media, encode_media
from tests.helpers import decode_directly


async def _messages(path: Path) -> ListSink:
    sink = ListSink()
    await replay(str(path), "cam", "hq", sink, ReplayOptions(speed=None), ManualClock())
    return sink


async def test_decoding_wire_records_matches_direct_decode(media_dir: Path) -> None:
    sink = await _messages(media_dir / "street.ts")
    decoder = MediaDecoder()
    out = [item for m in sink.messages for item in decoder.handle(decode_media(encode_media(m)))]
    frames = [i for i in out if isinstance(i, Frame)]
    audio = [i for i in out if isinstance(i, AudioChunk)]
    direct = decode_directly(media_dir / "street.ts")
    assert len(frames) == direct.frames
    assert sum(a.samples.shape[1] for a in audio) == direct.audio_samples
    assert np.array_equal(frames[0].image, direct.first) and np.array_equal(frames[-1].image, direct.last)
    assert frames[0].image.dtype == np.uint8 and frames[0].image.shape == (272, 640, 3)
    assert audio[0].samples.dtype == np.float32 and audio[0].samples.shape[0] == 1
    assert audio[0].sample_rate == 16000
    assert float(np.abs(np.concatenate([a.samples for a in audio], axis=1)).max()) <= 1.0
    assert isinstance(out[-1], StreamEnded)
    assert decoder.counters.frames_decoded == direct.frames


async def test_frame_filter_skips_rgb_conversion_but_counts_frames(media_dir: Path) -> None:
    sink = await _messages(media_dir / "street.ts")
    kept: list[int] = []

    def every_fifth(stream: str, wall_ns: int) -> bool:
        kept.append(wall_ns)
        return len(kept) % 5 == 0

    decoder = MediaDecoder(every_fifth)
    frames = [i for m in sink.messages for i in decoder.handle(m) if isinstance(i, Frame)]
    assert decoder.counters.frames_decoded == 750
    assert len(frames) == decoder.counters.frames_emitted == 150


async def test_packets_before_the_first_init_are_skipped(media_dir: Path) -> None:
    sink = await _messages(media_dir / "street.ts")
    inits = [i for i, m in enumerate(sink.messages) if isinstance(m, StreamInit)]
    start = inits[3] - 5
    decoder = MediaDecoder()
    frames = [i for m in sink.messages[start:] for i in decoder.handle(m) if isinstance(i, Frame)]
    assert decoder.counters.skipped_before_init == 5
    assert frames[0].keyframe
    assert decoder.counters.corrupt_packets == 0


def test_unknown_codec_and_missing_track_are_decode_errors() -> None:
    decoder = MediaDecoder()
    bad = StreamInit("cam", "hq", (TrackInfo("video", "nope264", Fraction(1, 90000)),), 0, 0)
    with pytest.raises(DecodeError, match="no decoder for codec 'nope264'"):
        decoder.handle(bad)
    audio_only = StreamInit(
        "cam",
        "hq",
        (TrackInfo("audio", "aac", Fraction(1, 16000), sample_rate=16000, channels=1, layout="mono"),),
        0,
        1,
    )
    decoder.handle(audio_only)
    packet = Packet("cam", "video", b"\x00\x00\x00\x01\x65", 0, 0, Fraction(1, 90000), True, 0, 2)
    with pytest.raises(DecodeError, match="has no video track"):
        decoder.handle(packet)
    assert decoder.counters.corrupt_packets == 1


async def test_repeated_identical_init_keeps_the_decoder(media_dir: Path) -> None:
    sink = await _messages(media_dir / "street.ts")
    decoder = MediaDecoder()
    decoder.handle(sink.messages[0])
    first = decoder.streams["cam"]
    repeat = replace(sink.inits()[1])
    decoder.handle(repeat)
    assert decoder.streams["cam"] is first


async def test_four_interleaved_streams_decode_exactly(media_dir: Path) -> None:
    recordings = []
    for index, name in enumerate(("lobby", "street", "lobby", "street")):
        sink = ListSink()
        await replay(str(media_dir / f"{name}.ts"), f"s{index}", "hq", sink, ReplayOptions(speed=None), ManualClock())
        recordings.append(sink.messages)
    merged = sorted((m for r in recordings for m in r), key=lambda m: (m.wall_ns, m.stream, m.seq))
    decoder = MediaDecoder()
    frames: dict[str, int] = {}
    for message in merged:
        for item in decoder.handle(message):
            if isinstance(item, Frame):
                frames[item.stream] = frames.get(item.stream, 0) + 1
    assert frames == {"s0": 795, "s1": 750, "s2": 795, "s3": 750}
