"""Clips cut from the packets on `fw.media` through the embedded broker: the reader, `fusewatch clip`."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import av
import pytest

from config.schema import FusewatchConfig
from streams.clipping import cut_clip
from streams.clock import NS_PER_MS
from streams.kafka import MediaPublisher
from streams.media_span import BeyondRetention, MediaSpanReader, SpanError
from streams.sources import ReplayResult, replay_side_by_side
from tests.conftest import ROOT
from tests.helpers import write_config

pytestmark = pytest.mark.integration


async def _replay_both(config: FusewatchConfig, media_dir: Path) -> ReplayResult:
    """The lobby and the street into `fw.media` as fast as possible, on one wallclock; the lobby's result."""
    recordings = {"lobby": media_dir / "lobby.ts", "street": media_dir / "street.ts"}
    async with MediaPublisher(config.kafka) as publisher:
        replayed = await replay_side_by_side(recordings, config.site, publisher)
        await publisher.flush()
    return replayed["lobby"]


def _probe(path: Path) -> tuple[dict[str, float], bool, int]:
    """Per stream kind its duration in seconds; whether the first video frame is a keyframe; video frames."""
    with av.open(str(path)) as container:
        durations = {
            stream.type: float(stream.duration * stream.time_base)
            for stream in container.streams
            if stream.duration is not None and stream.time_base is not None
        }
        first_key, frames = False, 0
        for frame in container.decode(video=0):
            first_key = first_key or (frames == 0 and frame.key_frame)
            frames += 1
    return durations, first_key, frames


def _names(folder: Path) -> list[str]:
    return [path.name for path in folder.iterdir()]


async def test_a_span_becomes_an_mp4_from_the_keyframe_before_it(
    fw_config: FusewatchConfig, media_dir: Path, tmp_path: Path
) -> None:
    lobby = await _replay_both(fw_config, media_dir)
    start_ms = lobby.wall_start_ns // NS_PER_MS
    from_ms, to_ms = start_ms + 10_000, start_ms + 25_000
    async with MediaSpanReader(fw_config.kafka) as reader:
        clip = await cut_clip(reader, "lobby", from_ms, to_ms, time.monotonic() + 10, tmp_path / "c.mp4", "c")

        assert clip.complete and not clip.starts_late and clip.stream == "lobby" and clip.site == fw_config.site
        assert clip.start_ms <= from_ms < to_ms - 1000 <= clip.end_ms <= to_ms
        assert (clip.video_codec, clip.audio_codec) == ("h264", "aac")
        durations, first_key, frames = _probe(tmp_path / "c.mp4")
        assert set(durations) == {"video", "audio"} and first_key
        span_s = (to_ms - clip.start_ms) / 1000
        assert all(span_s - 0.5 <= seconds <= span_s + 0.2 for seconds in durations.values()), durations
        assert frames >= 10 * (to_ms - from_ms) / 1000 * 0.95  # the lobby runs at 10 fps: every frame is there

        # Only the lobby's packets: the street's (on the same topic, maybe the same partition) stay out.
        street = await cut_clip(reader, "street", from_ms, to_ms, time.monotonic() + 10, tmp_path / "s.mp4", "s")
        assert street.stream == "street" and street.bytes != clip.bytes

        with pytest.raises(BeyondRetention, match=r"no longer holds lobby at .* its oldest record is from"):
            await reader.read("lobby", start_ms - 3_600_000, start_ms - 3_000_000, time.monotonic() + 1)
        after = lobby.wall_end_ns // NS_PER_MS + 600_000
        with pytest.raises(SpanError, match="no packets of stream lobby between"):
            await reader.read("lobby", after, after + 5000, time.monotonic() + 0.5)


async def test_fusewatch_clip_writes_the_file_or_says_why_not(
    fw_config: FusewatchConfig, media_dir: Path, tmp_path: Path
) -> None:
    lobby = await _replay_both(fw_config, media_dir)
    config_file = write_config(fw_config, tmp_path / "site.yaml")
    start_ms = lobby.wall_start_ns // NS_PER_MS

    def clip(start: int, end: int, out: Path) -> subprocess.CompletedProcess[str]:
        command = ["clip", "--config", str(config_file), "--stream", "street", "--from", str(start), "--to", str(end)]
        return subprocess.run(
            [sys.executable, "-m", "daemon.cli", *command, "-o", str(out), "--wait", "1"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=120,
            check=False,
        )

    done = clip(start_ms + 20_000, start_ms + 30_000, tmp_path / "out" / "street.mp4")
    assert done.returncode == 0, done.stderr
    assert "street.mp4" in done.stderr and "h264" in done.stderr
    durations, first_key, _ = _probe(tmp_path / "out" / "street.mp4")
    assert first_key and durations["video"] >= 10.0 - 0.2

    gone = clip(start_ms - 7_200_000, start_ms - 7_100_000, tmp_path / "gone.mp4")
    assert gone.returncode == 1 and "no longer holds street" in gone.stderr and "retention" in gone.stderr
    assert not [name for name in _names(tmp_path) if "gone" in name]
