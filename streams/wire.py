"""Wire format v1 of `fw.media` (docs/design.md §2): encode and decode, with exact reasons.

A record is the stream id as key, the encoded packet bytes untouched as value, and the
timing in headers. `decode_media` never guesses: anything that is not a valid v1 record
raises `WireError` with a reason fit for the dead-letter topic.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from pydantic import ValidationError

from streams.models import (
    WIRE_VERSION,
    EndOfStream,
    InitMessage,
    InitTrack,
    MediaKind,
    MediaMessage,
    Packet,
    StreamInit,
    TrackInfo,
)

Headers = list[tuple[str, bytes]]
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
INT32_MAX = 2**31 - 1


@dataclass(frozen=True, slots=True)
class WireRecord:
    """A Kafka record as the wire format sees it (no topic or offset)."""

    key: bytes | None
    value: bytes | None
    headers: Headers


class WireError(ValueError):
    """A record that is not valid wire format v1; the message is the dead-letter reason."""


def encode_media(message: MediaMessage) -> WireRecord:
    """Encode an init, packet or end-of-stream message as a v1 record.

    A replayed recording's init carries `"live": false`; a live one leaves the field out,
    so it stays exactly the init that readers from before the field accept.
    """
    key = message.stream.encode()
    headers: Headers = [("fw-v", b"1")]
    if isinstance(message, Packet):
        headers += [
            ("kind", message.kind.encode()),
            ("pts", _opt_int(message.pts)),
            ("dts", _opt_int(message.dts)),
            ("tb", f"{message.time_base.numerator}/{message.time_base.denominator}".encode()),
            ("key", b"1" if message.keyframe else b"0"),
        ]
        value = message.data
    elif isinstance(message, StreamInit):
        headers.append(("kind", b"init"))
        value = (
            InitMessage(
                stream=message.stream,
                site=message.site,
                tracks=[
                    InitTrack(
                        kind=track.kind,
                        codec=track.codec,
                        tb=f"{track.time_base.numerator}/{track.time_base.denominator}",
                        extradata=base64.b64encode(track.extradata).decode(),
                        width=track.width,
                        height=track.height,
                        pix_fmt=track.pix_fmt,
                        sample_rate=track.sample_rate,
                        channels=track.channels,
                        layout=track.layout,
                    )
                    for track in message.tracks
                ],
                live=message.live,
            )
            .model_dump_json(exclude=None if not message.live else {"live"})
            .encode()
        )
    else:
        headers.append(("kind", b"eos"))
        value = b""
    headers += [("wall", str(message.wall_ns).encode()), ("seq", str(message.seq).encode())]
    return WireRecord(key=key, value=value, headers=headers)


def decode_media(record: WireRecord) -> MediaMessage:
    """Decode a v1 record; raise WireError with the reason when it is not one."""
    if not record.key:
        raise WireError("missing key (stream id)")
    try:
        stream = record.key.decode()
    except UnicodeDecodeError as exc:
        raise WireError("key is not UTF-8") from exc
    headers = _header_map(record.headers)
    version = _require(headers, "fw-v")
    if version != str(WIRE_VERSION):
        raise WireError(f"unsupported wire version {version!r} (this reader speaks {WIRE_VERSION})")
    kind = _require(headers, "kind")
    wall_ns = _int(headers, "wall")
    seq = _int(headers, "seq")
    if kind in ("video", "audio"):
        if record.value is None or not record.value:
            raise WireError(f"{kind} packet has no data")
        media_kind: MediaKind = "video" if kind == "video" else "audio"
        return Packet(
            stream=stream,
            kind=media_kind,
            data=record.value,
            pts=_opt(headers, "pts"),
            dts=_opt(headers, "dts"),
            time_base=_fraction(_require(headers, "tb"), "tb"),
            keyframe=_require(headers, "key") == "1",
            wall_ns=wall_ns,
            seq=seq,
        )
    if kind == "init":
        return _decode_init(stream, record.value, wall_ns, seq)
    if kind == "eos":
        return EndOfStream(stream=stream, wall_ns=wall_ns, seq=seq)
    raise WireError(f"unknown kind {kind!r}")


def _decode_init(stream: str, value: bytes | None, wall_ns: int, seq: int) -> StreamInit:
    if not value:
        raise WireError("init message has no value")
    try:
        init = InitMessage.model_validate_json(value)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise WireError(f"invalid init JSON: {where}: {first['msg']}") from exc
    if init.stream != stream:
        raise WireError(f"init names stream {init.stream!r} but the key is {stream!r}")
    tracks = []
    for track in init.tracks:
        try:
            extradata = base64.b64decode(track.extradata, validate=True)
        except (binascii.Error, ValueError) as exc:  # ValueError: not ASCII
            raise WireError(f"init track {track.kind}: extradata is not base64") from exc
        tracks.append(
            TrackInfo(
                kind=track.kind,
                codec=track.codec,
                time_base=_fraction(track.tb, "tb"),
                extradata=extradata,
                width=track.width,
                height=track.height,
                pix_fmt=track.pix_fmt,
                sample_rate=track.sample_rate,
                channels=track.channels,
                layout=track.layout,
            )
        )
    return StreamInit(stream=stream, site=init.site, tracks=tuple(tracks), wall_ns=wall_ns, seq=seq, live=init.live)


def _header_map(headers: Sequence[tuple[str, bytes]] | None) -> dict[str, str]:
    found: dict[str, str] = {}
    for name, raw in headers or ():
        if name in found:
            raise WireError(f"header {name!r} appears twice")
        try:
            found[name] = raw.decode("ascii") if raw is not None else ""
        except (UnicodeDecodeError, AttributeError) as exc:
            raise WireError(f"header {name!r} is not ASCII") from exc
    return found


def _require(headers: dict[str, str], name: str) -> str:
    if name not in headers:
        raise WireError(f"missing header {name!r}")
    return headers[name]


def _int(headers: dict[str, str], name: str, low: int = 0) -> int:
    """A header integer that fits FFmpeg's int64 (`low` is the smallest allowed)."""
    raw = _require(headers, name)
    if len(raw) > 20:  # int64 has at most 19 digits and a sign; longer would only cost parse time
        raise WireError(f"header {name!r} is out of range: {raw[:40]!r}…")
    try:
        value = int(raw)
    except ValueError as exc:
        raise WireError(f"header {name!r} is not an integer: {raw[:40]!r}") from exc
    if not low <= value <= INT64_MAX:
        raise WireError(f"header {name!r} is out of range [{low}, 2^63): {raw!r}")
    return value


def _opt(headers: dict[str, str], name: str) -> int | None:
    if _require(headers, name) == "":
        return None
    return _int(headers, name, low=INT64_MIN)


def _opt_int(value: int | None) -> bytes:
    return b"" if value is None else str(value).encode()


def _fraction(raw: str, name: str) -> Fraction:
    numerator, sep, denominator = raw.partition("/")
    if not sep or not numerator.isdecimal() or not denominator.isdecimal():
        raise WireError(f"header {name!r} is not a time base like 1/90000: {raw[:40]!r}")
    # An AVRational holds two C ints; the length check first keeps int() cheap on a hostile value.
    if len(numerator) > 10 or len(denominator) > 10 or max(int(numerator), int(denominator)) > INT32_MAX:
        raise WireError(f"header {name!r} does not fit a 32-bit time base: {raw[:40]!r}")
    if int(denominator) == 0:
        raise WireError(f"header {name!r} is not a time base like 1/90000: {raw[:40]!r}")
    value = Fraction(int(numerator), int(denominator))
    if value <= 0:
        raise WireError(f"header {name!r} must be positive: {raw!r}")
    return value


def dumps_json(payload: object) -> bytes:
    """Compact, key-sorted JSON for dead-letter metadata and similar records."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
