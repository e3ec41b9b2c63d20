"""Hostile messages never escape the decoder: each is one `DecodeError`, and its stream resynchronises."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.decode import DecodeError, Desynchronised, MediaDecoder
from streams.models import Frame, Packet, StreamInit, TrackInfo
from streams.sources import ReplayOptions, replay
from streams.testing import ListSink, ManualClock
from streams.wire import WireError, WireRecord, decode_media, encode_media

VIDEO = TrackInfo("video", "h264", Fraction(1, 90000), width=64, height=64)


def _init_record(track: dict[str, object], stream: str = "cam") -> WireRecord:
    value = json.dumps({"stream": stream, "site": "hq", "tracks": [track]}).encode()
    return WireRecord(stream.encode(), value, [("fw-v", b"1"), ("kind", b"init"), ("wall", b"0"), ("seq", b"0")])


def _packet_record(pts: str, tb: str, kind: str = "video") -> WireRecord:
    return WireRecord(
        b"cam",
        b"\x00\x00\x00\x01\x65",
        [
            ("fw-v", b"1"),
            ("kind", kind.encode()),
            ("pts", pts.encode()),
            ("dts", b""),
            ("tb", tb.encode()),
            ("key", b"1"),
            ("wall", b"0"),
            ("seq", b"1"),
        ],
    )


def _decode(decoder: MediaDecoder, record: WireRecord) -> None:
    decoder.handle(decode_media(record))


@pytest.mark.parametrize(
    ("track", "reason"),
    [
        (
            {
                "kind": "audio",
                "codec": "aac",
                "tb": "1/16000",
                "sample_rate": 16000,
                "channels": 1,
                "layout": "bogus-layout",
            },
            "cannot be set up: ValueError: Invalid layout",
        ),
        (
            {"kind": "audio", "codec": "aac", "tb": "1/16000", "sample_rate": 1099511627776, "channels": 1},
            "sample_rate",
        ),
        ({"kind": "video", "codec": "h264", "tb": "1/90000", "width": 10**30, "height": 4}, "width"),
        ({"kind": "video", "codec": "h264", "tb": "1/" + "9" * 40}, "tb"),
    ],
)
def test_a_hostile_init_is_one_error_with_its_reason(track: dict[str, object], reason: str) -> None:
    decoder = MediaDecoder()
    with pytest.raises((WireError, DecodeError), match=reason):
        _decode(decoder, _init_record(track))
    assert "cam" not in decoder.streams


@pytest.mark.parametrize(
    ("pts", "tb", "reason"),
    [
        ("1180591620717411303424", "1/90000", "'pts' is out of range"),
        ("0", "1/999999999999999999999999999999", "'tb' does not fit a 32-bit time base"),
        ("9" * 5000, "1/90000", "'pts' is out of range"),
        ("-9223372036854775809", "1/90000", "'pts' is out of range"),
        ("0", "1/0", "'tb' is not a time base"),
    ],
)
def test_a_hostile_packet_header_is_a_wire_error(pts: str, tb: str, reason: str) -> None:
    decoder = MediaDecoder()
    decoder.handle(StreamInit("cam", "hq", (VIDEO,), 0, 0))
    with pytest.raises(WireError, match=reason):
        _decode(decoder, _packet_record(pts, tb))
    assert "cam" in decoder.streams  # a header refused before decoding leaves the decoder as it was


def test_a_bad_init_drops_the_stream_until_its_next_good_init() -> None:
    decoder = MediaDecoder()
    decoder.handle(StreamInit("cam", "hq", (VIDEO,), 0, 0))
    bad = StreamInit(
        "cam", "hq", (TrackInfo("audio", "aac", Fraction(1, 16000), sample_rate=16000, layout="bogus-layout"),), 1, 1
    )
    with pytest.raises(Desynchronised, match="Invalid layout"):
        decoder.handle(bad)
    assert "cam" not in decoder.streams and decoder.counters.desynchronised == 1
    assert decoder.handle(Packet("cam", "video", b"\x00\x00\x00\x01\x65", 0, 0, Fraction(1, 90000), True, 0, 2)) == []
    assert decoder.counters.skipped_before_init == 1
    decoder.handle(StreamInit("cam", "hq", (VIDEO,), 3, 3))
    assert "cam" in decoder.streams


json_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
track_field = st.one_of(st.integers(), st.text(max_size=30), st.none(), st.floats(allow_nan=True), json_value)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from(["video", "audio", "text", ""]) | st.text(max_size=8),
    codec=st.sampled_from(["h264", "aac", "hevc", "mp3", "opus", "pcm_s16le", "rawvideo"]) | st.text(max_size=12),
    extra=st.dictionaries(
        st.sampled_from(["tb", "width", "height", "pix_fmt", "sample_rate", "channels", "layout", "extradata"]),
        track_field,
        max_size=8,
    ),
)
def test_any_init_json_is_decoded_or_refused_with_a_reason(kind: str, codec: str, extra: dict[str, object]) -> None:
    decoder = MediaDecoder()
    track = {"kind": kind, "codec": codec, "tb": "1/90000", **extra}
    try:
        _decode(decoder, _init_record(track))
    except (WireError, DecodeError) as exc:
        assert str(exc)


header_value = st.one_of(
    st.integers().map(str),
    st.text(alphabet="0123456789-/ ", max_size=50),
    st.binary(max_size=20).map(lambda b: b.decode("latin-1")),
)


@settings(max_examples=300, deadline=None)
@given(
    pts=header_value,
    dts=header_value,
    tb=header_value | st.builds(lambda a, b: f"{a}/{b}", st.integers(), st.integers()),
    wall=header_value,
    seq=header_value,
    kind=st.sampled_from(["video", "audio", "eos", "init", "x"]),
    data=st.binary(min_size=1, max_size=64),
)
def test_any_packet_headers_are_decoded_or_refused_with_a_reason(
    pts: str, dts: str, tb: str, wall: str, seq: str, kind: str, data: bytes
) -> None:
    decoder = MediaDecoder()
    decoder.handle(
        StreamInit(
            "cam",
            "hq",
            (VIDEO, TrackInfo("audio", "aac", Fraction(1, 16000), sample_rate=16000, channels=1, layout="mono")),
            0,
            0,
        )
    )
    headers = [
        ("fw-v", b"1"),
        ("kind", kind.encode()),
        ("pts", pts.encode("latin-1")),
        ("dts", dts.encode("latin-1")),
        ("tb", tb.encode("latin-1")),
        ("key", b"1"),
        ("wall", wall.encode("latin-1")),
        ("seq", seq.encode("latin-1")),
    ]
    try:
        _decode(decoder, WireRecord(b"cam", data, headers))
    except (WireError, DecodeError) as exc:
        assert str(exc)


async def test_a_recording_with_bits_flipped_never_raises_anything_else(media_dir: Path) -> None:
    sink = ListSink()
    await replay(str(media_dir / "lobby.ts"), "cam", "hq", sink, ReplayOptions(speed=None), ManualClock())
    records = [encode_media(message) for message in sink.messages]
    rng = __import__("random").Random(7)
    damaged = []
    for record in records:
        value = bytearray(record.value or b"")
        for _ in range(3 if value and rng.random() < 0.3 else 0):
            bit = rng.randrange(len(value) * 8)
            value[bit // 8] ^= 1 << (bit % 8)
        damaged.append(WireRecord(record.key, bytes(value), record.headers))
    decoder = MediaDecoder()
    frames = refused = 0
    for record in damaged:
        try:
            frames += sum(isinstance(item, Frame) for item in decoder.handle(decode_media(record)))
        except (WireError, DecodeError):
            refused += 1
    assert refused > 0 and frames > 600  # most of the 795 frames survive, the rest is refused with reasons
