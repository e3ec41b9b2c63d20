"""Replay → analyze → fuse → clips through the embedded broker and Redis, with the demo's events."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import av
import pytest

from config.schema import FasterWhisperConfig, FusewatchConfig
from daemon.analyze.worker import run_analyze
from daemon.clips.worker import run_clips
from daemon.fuse.worker import run_fuse
from detectors import registry
from streams.kafka import MediaPublisher
from streams.models import Alert, Clip, Summary
from streams.redis_schema import RedisKeys, redis_client
from streams.sources import ReplayOptions, replay
from tests.helpers import demo_on, load_audio_16k, normalise, read_topic

pytestmark = pytest.mark.integration


async def _topic(config: FusewatchConfig, topic: str) -> list[tuple[bytes, bytes]]:
    return [(record.key, record.value) for record in await read_topic(config.kafka, topic)]


async def test_distress_alert_reaches_redis_and_kafka_exactly_once_with_its_clip(
    fw_config: FusewatchConfig, media_dir: Path, tmp_path: Path
) -> None:
    config = demo_on(fw_config, tmp_path)
    config = config.model_copy(update={"clips": config.clips.model_copy(update={"wait": 5.0})})
    async with MediaPublisher(config.kafka) as publisher:
        for path, stream in ((media_dir / "lobby.ts", "lobby"), (media_dir / "street.ts", "street")):
            await replay(str(path), stream, config.site, publisher, ReplayOptions(speed=None))
        await publisher.flush()
    await asyncio.wait_for(run_analyze(config, idle_timeout=5.0), 300)
    worker = await asyncio.wait_for(run_fuse(config, idle_timeout=3.0), 120)
    assert worker.counters.alerts == 1 and worker.joiner.counters.late == 0

    redis = redis_client(config.redis)
    keys = RedisKeys(config.redis.key_prefix)
    try:
        entries = await redis.xrange(keys.alerts)
        alerts = [Alert.model_validate_json(fields[b"alert"]) for _, fields in entries]
        assert [a.event for a in alerts] == ["distress"]
        # Both recordings are cameras of the demo site: the person count is the larger of the
        # two (the street's cyclists count too), the call for help comes from the lobby's
        # microphone. The alert names the streams that gave its contributing terms, no other.
        terms = {term.signal: term for term in alerts[0].terms}
        assert terms["speech.keywords"].stream == "lobby" and terms["video.person.count"].stream in ("lobby", "street")
        assert alerts[0].streams == sorted({t.stream for t in alerts[0].terms if t.contribution > 0 and t.stream})
        assert "lobby" in alerts[0].streams and "help" in alerts[0].evidence.transcript.lower()
        assert alerts[0].evidence.snapshot and (tmp_path / "snapshots" / alerts[0].evidence.snapshot).is_file()
        latest = {k.decode(): v for k, v in (await redis.hgetall(keys.latest)).items() if not k.endswith(b":start")}
        assert set(latest) == {"lobby", "street"}
        assert Summary.model_validate_json(latest["lobby"]).objects.get("person", 0) >= 1

        # Reading fw.features again from the start (a new group) changes nothing: the site's
        # closed windows and rule states are in Redis, so every record is recognised as seen.
        again = config.model_copy(update={"kafka": config.kafka.model_copy(update={"group_prefix": "again"})})
        second = await asyncio.wait_for(run_fuse(again, idle_timeout=3.0), 120)
        assert second.counters.alerts == 0 and second.joiner.counters.late == second.joiner.counters.records > 100
        assert len(await redis.xrange(keys.alerts)) == 1
    finally:
        await redis.aclose()
    kafka_alerts = await _topic(config, config.kafka.topics.alerts)
    assert [key for key, _ in kafka_alerts] == [alerts[0].id.encode()], "keyed by alert id"
    summaries = await _topic(config, config.kafka.topics.summaries)
    assert {json.loads(v)["stream"] for _, v in summaries} == {"lobby", "street"}

    await _check_the_clips(config, alerts[0], tmp_path / "clips")


async def _check_the_clips(config: FusewatchConfig, alert: Alert, store: Path) -> None:
    """The clips role cuts one clip per stream of the alert; read again, it writes none twice."""
    clipper = await asyncio.wait_for(run_clips(config, idle_timeout=2.0), 120)
    assert clipper.counters.written == len(alert.streams) and clipper.counters.failed == 0
    records = [Clip.model_validate_json(value) for _, value in await _topic(config, config.kafka.topics.clips)]
    lobby = next(clip for clip in records if clip.stream == "lobby")
    assert lobby.alert_id == alert.id and lobby.complete and not lobby.starts_late
    pre, post = config.clips.pre_roll * 1000, config.clips.post_roll * 1000
    assert lobby.start_ms <= alert.window_start - pre and lobby.end_ms >= alert.window_end + post - 1000
    path = store / f"{lobby.id}.mp4"
    with av.open(str(path)) as container:
        assert {s.type for s in container.streams} == {"video", "audio"}
        seconds = float(container.duration or 0) / av.time_base
        first = next(container.decode(video=0))
        assert first.key_frame and seconds >= (pre + post + (alert.window_end - alert.window_start)) / 1000 - 0.5
    whisper = registry.transcriber(FasterWhisperConfig(type="faster-whisper"))
    assert "help" in normalise(whisper.transcribe(load_audio_16k(path)).text)

    redis = redis_client(config.redis)
    try:
        stored = await redis.hgetall(RedisKeys(config.redis.key_prefix).clips_of(alert.id))
    finally:
        await redis.aclose()
    assert Clip.model_validate_json(stored[b"lobby"]) == lobby

    written = path.stat().st_mtime_ns
    again = config.model_copy(update={"kafka": config.kafka.model_copy(update={"group_prefix": "clips-again"})})
    second = await asyncio.wait_for(run_clips(again, idle_timeout=2.0), 120)
    assert (second.counters.written, second.counters.existing) == (0, len(alert.streams))
    assert path.stat().st_mtime_ns == written
