"""Where a clip starts and ends (`SpanCollector`) and where a search for a time starts (`SparseIndex`)."""

from __future__ import annotations

from fractions import Fraction

import pytest

from streams.media_span import SpanCollector, SpanError, SparseIndex
from streams.models import EndOfStream, MediaMessage, Packet, StreamInit, TrackInfo

S = 1_000_000_000
VIDEO = TrackInfo("video", "h264", Fraction(1, 90_000), b"\x01", width=64, height=48)
AUDIO = TrackInfo("audio", "aac", Fraction(1, 90_000), sample_rate=16_000, channels=1)


def init(at: float, tracks: tuple[TrackInfo, ...] = (VIDEO, AUDIO)) -> StreamInit:
    return StreamInit("cam", "site", tracks, round(at * S), 0)


def video(at: float, key: bool = False) -> Packet:
    return Packet("cam", "video", b"v", round(at * 90_000), None, Fraction(1, 90_000), key, round(at * S), 0)


def audio(at: float) -> Packet:
    return Packet("cam", "audio", b"a", round(at * 90_000), None, Fraction(1, 90_000), True, round(at * S), 0)


def gop_stream(until: float, gop: float = 2.0, fps: float = 4.0) -> list[MediaMessage]:
    """Video at `fps` with a keyframe (and its init) every `gop` seconds, audio every 0.1 s."""
    out: list[MediaMessage] = []
    frames, step = round(until * fps), 1 / fps
    for n in range(frames):
        at = n * step
        if n % round(gop * fps) == 0:
            out += [init(at), video(at, key=True)]
        else:
            out.append(video(at))
        out += [audio(at + k / 10) for k in range(round(step * 10))]
    return out


def collect(messages: list[MediaMessage], start: float, end: float, late_ok: bool = True) -> SpanCollector:
    collector = SpanCollector("cam", round(start * S), round(end * S))
    for message in messages:
        collector.add(message)
        if collector.missed_start and late_ok:
            collector.allow_late_start()
        if collector.done or collector.missed_start:
            break
    return collector


def test_starts_at_the_keyframe_at_or_before_the_start_and_ends_at_the_end() -> None:
    span = collect(gop_stream(20), 5.1, 9.0).span()
    assert span.packets[0].keyframe and span.packets[0].wall_ns == 4 * S
    assert span.end_ns <= 9 * S and span.complete and not span.starts_late
    assert all(4 * S <= p.wall_ns <= 9 * S for p in span.packets)
    assert {p.kind for p in span.packets} == {"video", "audio"}


def test_a_start_on_a_keyframe_starts_there() -> None:
    span = collect(gop_stream(20), 6.0, 8.0).span()
    assert span.start_ns == 6 * S


def test_audio_stamped_before_the_keyframe_is_left_out() -> None:
    messages: list[MediaMessage] = [init(0), audio(0.9), video(1.0, key=True), audio(0.95), audio(1.1), video(1.25)]
    span = collect(messages, 1.0, 2.0).span()
    assert [p.wall_ns for p in span.packets] == [1 * S, round(1.1 * S), round(1.25 * S)]


def test_without_a_keyframe_before_the_start_it_pauses_then_starts_late() -> None:
    messages = gop_stream(20)[3:]  # the first init and keyframe are gone (retention)
    paused = collect(messages, 0.5, 5.0, late_ok=False)
    assert paused.missed_start and not paused.done
    span = collect(messages, 0.5, 5.0).span()
    assert span.starts_late and span.start_ns == 2 * S and span.packets[0].keyframe


def test_an_end_of_stream_inside_the_span_ends_it_incomplete() -> None:
    messages = [*gop_stream(6), EndOfStream("cam", 6 * S, 0)]
    collector = collect(messages, 1.0, 10.0)
    span = collector.span()
    assert collector.done and not span.complete and span.end_ns < 6 * S


def test_an_earlier_run_that_ended_before_the_span_does_not_start_it() -> None:
    old = [init(0), video(0, key=True), EndOfStream("cam", 1 * S, 0)]
    new = [init(3), video(3, key=True), video(3.5), video(4, key=True)]
    span = collect(old + new, 2.0, 4.5).span()
    assert span.starts_late and span.start_ns == 3 * S


def test_a_codec_change_inside_the_span_ends_the_clip_before_it() -> None:
    changed = TrackInfo("video", "h264", Fraction(1, 90_000), b"\x02", width=128, height=96)
    messages = [init(0), video(0, key=True), video(1), init(2, (changed,)), video(2, key=True), video(3)]
    collector = collect(messages, 0.5, 5.0)
    assert collector.done and [p.wall_ns for p in collector.span().packets] == [0, 1 * S]


def test_an_audio_only_stream_starts_at_the_packet_before_the_start() -> None:
    messages: list[MediaMessage] = [init(0, (AUDIO,)), *[audio(k / 10) for k in range(50)]]
    span = collect(messages, 1.05, 2.0).span()
    assert span.start_ns == S and span.end_ns == 2 * S


def test_nothing_in_the_span_is_an_error_that_names_it() -> None:
    with pytest.raises(SpanError, match="no packets of stream cam between"):
        collect(gop_stream(4), 10.0, 12.0).span()


def test_the_sparse_index_brackets_a_time_between_the_nearest_known_points() -> None:
    index = SparseIndex(size=8)
    for offset, stamp in ((10, 1000), (50, 2000), (90, 3000), (130, 4000)):
        index.add(offset, stamp)
    assert index.bracket(2500, 0, 200) == (51, 90)
    assert index.bracket(500, 0, 200) == (0, 10)
    assert index.bracket(9000, 0, 200) == (131, 200)
    assert index.bracket(2500, 60, 200) == (60, 90), "points outside the log are ignored"
    for offset in range(200, 210):
        index.add(offset, 9000)
    assert index.bracket(2500, 0, 300) == (0, 204), "full: the older points (by offset) were dropped"
