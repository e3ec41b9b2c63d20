"""Demux and replay of real recordings without a broker: timing, inits, loops, errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from config.schema import Reconnect
from streams.models import EndOfStream, MediaMessage, Packet, StreamInit
from streams.sources import (
    Demuxer,
    ReplayOptions,
    SourceError,
    ingest_live,
    open_spec,
    replay,
    replay_side_by_side,
)
from streams.testing import ListSink, ManualClock

NS = 1_000_000_000


async def test_replay_emits_init_before_first_packet_and_every_video_keyframe(media_dir: Path) -> None:
    sink = ListSink()
    result = await replay(str(media_dir / "lobby.ts"), "lobby", "hq", sink, ReplayOptions(speed=None), ManualClock())
    messages = sink.messages
    assert isinstance(messages[0], StreamInit)
    assert isinstance(messages[-1], EndOfStream)
    for index, message in enumerate(messages):
        if isinstance(message, Packet) and message.kind == "video" and message.keyframe:
            assert isinstance(messages[index - 1], StreamInit), index
    video = sink.packets("video")
    assert len(video) == result.stats.video_packets == 795
    assert result.stats.audio_packets == len(sink.packets("audio")) > 1000
    assert [m.seq for m in messages] == list(range(len(messages)))
    init = sink.inits()[0]
    assert init.site == "hq"
    assert {t.kind for t in init.tracks} == {"video", "audio"}
    video_track = init.track("video")
    assert video_track is not None and (video_track.codec, video_track.width, video_track.height) == ("h264", 768, 576)
    audio_track = init.track("audio")
    assert audio_track is not None and (audio_track.codec, audio_track.sample_rate) == ("aac", 16000)


async def test_replay_keeps_the_recordings_timing_and_aligns_to_windows(media_dir: Path) -> None:
    clock = ManualClock(wall_ns=1_700_000_001_300_000_000)
    sink = ListSink()
    await replay(str(media_dir / "street.ts"), "street", "hq", sink, ReplayOptions(speed=1.0, align_s=2.0), clock)
    first_wall = sink.messages[0].wall_ns
    assert first_wall % (2 * NS) == 0 and first_wall > 1_700_000_001_300_000_000
    packets = sink.packets()
    span = (packets[-1].wall_ns - first_wall) / NS
    assert 29.0 < span < 30.5
    # At speed 1.0 the replay slept (on the manual clock) as long as the media lasts.
    assert 29.0 < sum(clock.slept) < 32.5
    # Same file, same alignment: the offsets within the window are identical (deterministic).
    again = ListSink()
    await replay(str(media_dir / "street.ts"), "street", "hq", again, ReplayOptions(speed=None), ManualClock())
    assert [m.wall_ns - first_wall for m in sink.messages] == [
        m.wall_ns - again.messages[0].wall_ns for m in again.messages
    ]


async def test_recordings_replayed_side_by_side_start_at_one_wallclock(media_dir: Path) -> None:
    sink = ListSink()
    recordings = {"street": media_dir / "street.ts", "lobby": media_dir / "lobby.ts"}
    results = await replay_side_by_side(recordings, "hq", sink, wall_base_ns=1_700_000_000 * NS)
    assert {name: result.wall_start_ns for name, result in results.items()} == dict.fromkeys(
        recordings, 1_700_000_000 * NS
    )
    for name in recordings:
        first = next(m for m in sink.messages if m.stream == name)
        assert isinstance(first, StreamInit) and first.wall_ns == 1_700_000_000 * NS, name
    assert sum(isinstance(m, EndOfStream) for m in sink.messages) == 2


async def test_replay_loops_with_increasing_wallclock(media_dir: Path) -> None:
    sink = ListSink()
    result = await replay(
        str(media_dir / "street.ts"), "s", "hq", sink, ReplayOptions(speed=None, loops=2), ManualClock()
    )
    walls = [p.wall_ns for p in sink.packets("video")]
    assert len(walls) == 2 * 750
    assert walls[750] > walls[749]
    assert 59 < (walls[-1] - walls[0]) / NS < 61
    assert result.stats.video_packets == 1500
    assert sum(isinstance(m, EndOfStream) for m in sink.messages) == 1


async def test_looped_replay_at_real_speed_sends_each_packet_at_its_wallclock(media_dir: Path) -> None:
    clock = ManualClock()

    class SentAt(ListSink):
        def __init__(self) -> None:
            super().__init__()
            self.lag: list[float] = []

        async def publish(self, message: MediaMessage) -> None:
            self.lag.append((clock.wall_ns() - message.wall_ns) / NS)
            await super().publish(message)

    sink = SentAt()
    await replay(str(media_dir / "street.ts"), "s", "hq", sink, ReplayOptions(speed=1.0, loops=3), clock)
    assert 89 < sum(clock.slept) < 93, "three loops of 30 s take 90 s"
    # Packets go out in file order; audio and video are interleaved up to ~0.5 s apart in the mux,
    # so some leave a little after their wallclock — but the lag never grows from loop to loop.
    assert max(abs(lag) for lag in sink.lag) < 0.6
    third = len(sink.lag) // 3
    assert max(sink.lag[-third:]) < max(sink.lag[:third]) + 0.05


async def test_missing_file_is_a_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no such media file"):
        await replay(str(tmp_path / "nope.ts"), "x", "hq", ListSink())


async def test_unreadable_file_is_a_source_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.ts"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(SourceError, match=r"cannot open|neither video nor audio"):
        await replay(str(bad), "x", "hq", ListSink())


async def test_ingest_of_a_file_source_plays_it_once_at_real_speed(media_dir: Path) -> None:
    sink = ListSink()
    clock = ManualClock()
    state = await ingest_live(str(media_dir / "street.ts"), "street", "hq", sink, Reconnect(), clock=clock)
    assert state.connects == 1 and isinstance(sink.messages[-1], EndOfStream)
    assert sum(clock.slept) > 29


@pytest.mark.parametrize(
    ("url", "target", "fmt", "live"),
    [
        ("rtsp://cam.local/s", "rtsp://cam.local/s", None, True),
        ("v4l2:///dev/video0", "/dev/video0", "v4l2", True),
        ("alsa://hw:1,0", "hw:1,0", "alsa", True),
    ],
)
def test_open_spec_maps_urls_to_ffmpeg_inputs(url: str, target: str, fmt: str | None, live: bool) -> None:
    spec = open_spec(url)
    assert (spec.target, spec.format, spec.live) == (target, fmt, live)
    if url.startswith("rtsp"):
        assert spec.options["rtsp_transport"] == "tcp"


async def test_a_replay_marks_every_init_as_not_live(media_dir: Path) -> None:
    sink = ListSink()
    await replay(str(media_dir / "street.ts"), "s", "hq", sink, ReplayOptions(speed=None, loops=2), ManualClock())
    inits = sink.inits()
    assert len(inits) > 2 and all(init.live is False for init in inits)
    # A caller that stands a recording in for a camera says so, and its frames may then be dropped.
    camera = ListSink()
    await replay(str(media_dir / "street.ts"), "s", "hq", camera, ReplayOptions(speed=None, live=True), ManualClock())
    assert camera.inits() and all(init.live for init in camera.inits())


async def test_a_file_source_ingested_from_the_config_is_a_replay_too(media_dir: Path) -> None:
    sink = ListSink()
    await ingest_live(str(media_dir / "street.ts"), "street", "hq", sink, Reconnect(), clock=ManualClock())
    assert sink.inits() and not any(init.live for init in sink.inits())


def test_a_live_source_marks_its_inits_live(media_dir: Path) -> None:
    # What `ingest_live` opens for an RTSP/HTTP/V4L2/ALSA URL: a spec with `live` set.
    spec = open_spec(str(media_dir / "street.ts"))
    live = dataclasses.replace(spec, live=True)
    with Demuxer(live, "cam", "hq") as demuxer:
        inits = [m for _, m in demuxer.messages(lambda t: int(t * NS)) if isinstance(m, StreamInit)]
    assert inits and all(init.live for init in inits)
    with Demuxer(spec, "rec", "hq") as demuxer:
        assert demuxer.init(0).live is False


def test_a_directory_or_an_empty_file_is_not_called_missing(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r" is a directory, not a media file$"):
        open_spec(str(tmp_path))
    (tmp_path / "empty.ts").write_bytes(b"")
    with pytest.raises(SourceError, match=r"empty\.ts is empty \(0 bytes\), not a media file$"):
        open_spec(str(tmp_path / "empty.ts"))


def test_an_unreadable_file_is_reported_without_errno_noise(tmp_path: Path) -> None:
    bad = tmp_path / "notes.ts"
    bad.write_text("not a recording\n" * 50)
    with pytest.raises(SourceError) as caught:
        Demuxer(open_spec(str(bad)), "x", "hq")
    assert str(caught.value) == f"cannot open {bad}: Invalid data found when processing input"
