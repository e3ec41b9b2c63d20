"""Wire format v1: encode/decode round trips (property-based) and exact rejection reasons."""

from __future__ import annotations

import contextlib
import json
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.models import EndOfStream, InitMessage, Packet, StreamInit, TrackInfo
from streams.wire import WireError, WireRecord, decode_media, encode_media

stream_ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,20}", fullmatch=True)
walls = st.integers(min_value=0, max_value=2**63 - 1)
seqs = st.integers(min_value=0, max_value=2**62)
time_bases = st.builds(Fraction, st.integers(1, 1000), st.integers(1, 1_000_000))
stamps = st.none() | st.integers(min_value=-(2**40), max_value=2**62)

packets = st.builds(
    Packet,
    stream=stream_ids,
    kind=st.sampled_from(["video", "audio"]),
    data=st.binary(min_size=1, max_size=2048),
    pts=stamps,
    dts=stamps,
    time_base=time_bases,
    keyframe=st.booleans(),
    wall_ns=walls,
    seq=seqs,
)
tracks = st.one_of(
    st.builds(
        TrackInfo,
        kind=st.just("video"),
        codec=st.sampled_from(["h264", "hevc", "mpeg4"]),
        time_base=time_bases,
        extradata=st.binary(max_size=64),
        width=st.integers(0, 8192),
        height=st.integers(0, 8192),
        pix_fmt=st.sampled_from(["yuv420p", "nv12", ""]),
    ),
    st.builds(
        TrackInfo,
        kind=st.just("audio"),
        codec=st.sampled_from(["aac", "opus", "pcm_s16le"]),
        time_base=time_bases,
        extradata=st.binary(max_size=64),
        sample_rate=st.integers(0, 192_000),
        channels=st.integers(0, 8),
        layout=st.sampled_from(["mono", "stereo", ""]),
    ),
)
inits = st.builds(
    StreamInit,
    stream=stream_ids,
    site=stream_ids,
    tracks=st.lists(tracks, min_size=1, max_size=2).map(tuple),
    wall_ns=walls,
    seq=seqs,
    live=st.booleans(),
)
ends = st.builds(EndOfStream, stream=stream_ids, wall_ns=walls, seq=seqs)


@given(packets | inits | ends)
def test_round_trip(message: Packet | StreamInit | EndOfStream) -> None:
    record = encode_media(message)
    assert record.key == message.stream.encode()
    assert decode_media(record) == message


@given(packets)
def test_packet_value_is_untouched(packet: Packet) -> None:
    record = encode_media(packet)
    assert record.value == packet.data
    headers = dict(record.headers)
    assert headers["fw-v"] == b"1" and headers["kind"] == packet.kind.encode()
    assert headers["key"] == (b"1" if packet.keyframe else b"0")


GOOD = encode_media(Packet("cam", "video", b"\x00\x00\x01", 10, 9, Fraction(1, 90000), True, 5, 1))


def _with(
    headers: dict[str, bytes | None], value: bytes | None = GOOD.value, key: bytes | None = GOOD.key
) -> WireRecord:
    merged = dict(GOOD.headers) | headers
    return WireRecord(key, value, [(k, v) for k, v in merged.items() if v is not None])


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        (_with({}, key=None), "missing key (stream id)"),
        (_with({}, key=b"\xff\xfe"), "key is not UTF-8"),
        (_with({"fw-v": None}), "missing header 'fw-v'"),
        (_with({"fw-v": b"2"}), "unsupported wire version '2' (this reader speaks 1)"),
        (_with({"kind": b"subtitle"}), "unknown kind 'subtitle'"),
        (_with({"kind": None}), "missing header 'kind'"),
        (_with({"pts": b"ten"}), "header 'pts' is not an integer: 'ten'"),
        (_with({"tb": b"1:90000"}), "header 'tb' is not a time base like 1/90000: '1:90000'"),
        (_with({"tb": b"1/0"}), "header 'tb' is not a time base like 1/90000: '1/0'"),
        (_with({"wall": None}), "missing header 'wall'"),
        (_with({"seq": b"\xff"}), "header 'seq' is not ASCII"),
        (_with({}, value=b""), "video packet has no data"),
        (
            _with({"kind": b"init"}, value=b'{"stream": "cam", "site": "s", "tracks": [{"kind": "video"'),
            "invalid init JSON",
        ),
        (
            _with(
                {"kind": b"init"},
                value=b'{"stream": "other", "site": "s", "tracks": '
                b'[{"kind": "video", "codec": "h264", "tb": "1/90000"}]}',
            ),
            "init names stream 'other' but the key is 'cam'",
        ),
        (
            _with(
                {"kind": b"init"},
                value=b'{"stream": "cam", "site": "s", "tracks": '
                b'[{"kind": "video", "codec": "h264", "tb": "1/90000", "extradata": "%%%"}]}',
            ),
            "init track video: extradata is not base64",
        ),
        (_with({"kind": b"init"}, value=b'{"stream": "cam", "site": "s", "tracks": []}'), "invalid init JSON: tracks"),
    ],
)
def test_malformed_records_are_rejected_with_reason(record: WireRecord, reason: str) -> None:
    with pytest.raises(WireError) as caught:
        decode_media(record)
    assert str(caught.value).startswith(reason)


def test_duplicate_header_is_rejected() -> None:
    record = WireRecord(GOOD.key, GOOD.value, [*GOOD.headers, ("pts", b"11")])
    with pytest.raises(WireError, match="header 'pts' appears twice"):
        decode_media(record)


@given(st.binary(max_size=64), st.lists(st.tuples(st.text(max_size=8), st.binary(max_size=16)), max_size=6))
def test_garbage_never_crashes(value: bytes, headers: list[tuple[str, bytes]]) -> None:
    """Anything at all either decodes or raises WireError: never another exception."""
    with contextlib.suppress(WireError):
        decode_media(WireRecord(b"cam", value, headers))


VIDEO = TrackInfo("video", "h264", Fraction(1, 90000), b"\x01", width=768, height=576, pix_fmt="yuv420p")


def test_a_replayed_init_is_marked_and_a_live_one_is_the_v1_init_unchanged() -> None:
    replayed = encode_media(StreamInit("cam", "hq", (VIDEO,), 5, 0, live=False))
    assert replayed.value is not None and json.loads(replayed.value)["live"] is False
    decoded = decode_media(replayed)
    assert isinstance(decoded, StreamInit) and decoded.live is False
    # A live init has no `live` field at all: byte for byte what readers without it accept.
    live = encode_media(StreamInit("cam", "hq", (VIDEO,), 5, 0))
    assert live.value is not None and "live" not in json.loads(live.value)
    assert decode_media(live) == StreamInit("cam", "hq", (VIDEO,), 5, 0, live=True)


def test_an_init_without_the_live_field_is_a_live_stream() -> None:
    record = _with(
        {"kind": b"init"},
        value=b'{"stream": "cam", "site": "s", "tracks": [{"kind": "video", "codec": "h264", "tb": "1/90000"}]}',
    )
    decoded = decode_media(record)
    assert isinstance(decoded, StreamInit) and decoded.live is True


def test_a_live_field_that_is_not_a_boolean_is_rejected() -> None:
    record = _with(
        {"kind": b"init"},
        value=b'{"stream": "cam", "site": "s", "live": "maybe", "tracks": '
        b'[{"kind": "video", "codec": "h264", "tb": "1/90000"}]}',
    )
    with pytest.raises(WireError, match="invalid init JSON: live: Input should be a valid boolean"):
        decode_media(record)


def test_the_published_init_schema_documents_the_live_field() -> None:
    live = InitMessage.model_json_schema()["properties"]["live"]  # what `fusewatch schema init` prints
    assert live["type"] == "boolean" and live["default"] is True and "replayed" in live["description"]
    assert "live" not in InitMessage.model_json_schema().get("required", [])
