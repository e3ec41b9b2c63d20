"""A `--speed max` replay into a running pipeline whose live policy drops frames.

Analyze runs with `detectors.when_behind: drop` and a frame queue of 2, the setting that
keeps a live camera current. The lobby recording published as fast as possible reaches it
far faster than the detector works, so frames would be dropped (exactly in the speech
windows: before the fix the call for help raised no alert). A replay marks its stream as
not live in its `init`, so analyze waits for its frames instead, and the replay gives the
lobby's known real-speed alert: one `distress` at "Help! Somebody call the police!".
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from config.schema import FusewatchConfig
from daemon.analyze.worker import run_analyze
from daemon.fuse.worker import run_fuse
from daemon.telemetry.metrics import Telemetry
from streams.kafka import MediaPublisher
from streams.models import Alert
from streams.redis_schema import RedisKeys, redis_client
from streams.sources import ReplayOptions, replay
from tests.helpers import demo_on

pytestmark = pytest.mark.e2e


async def test_a_max_speed_replay_into_a_dropping_pipeline_gives_the_real_speed_alert(
    fw_config: FusewatchConfig, media_dir: Path, tmp_path: Path
) -> None:
    config = demo_on(fw_config, tmp_path, when_behind="drop", frame_queue=2)
    telemetry = Telemetry()
    analyze = asyncio.create_task(run_analyze(config, idle_timeout=6.0, telemetry=telemetry))
    async with asyncio.timeout(60):  # the worker has loaded its models and joined its group
        while "analyze" not in telemetry.loaded:
            assert not analyze.done(), analyze
            await asyncio.sleep(0.1)
    async with MediaPublisher(config.kafka) as publisher:
        result = await replay(
            str(media_dir / "lobby.ts"),
            "lobby",
            config.site,
            publisher,
            ReplayOptions(speed=None, align_s=config.windows.size),
        )
        await publisher.flush()
    counters = await asyncio.wait_for(analyze, 240)
    assert counters.frames_dropped == 0 and counters.frames_analysed >= 150, counters
    worker = await asyncio.wait_for(run_fuse(config, idle_timeout=3.0), 120)
    assert worker.joiner.counters.late == 0

    redis = redis_client(config.redis)
    try:
        entries: Any = await redis.xrange(RedisKeys(config.redis.key_prefix).alerts)
    finally:
        await redis.aclose()
    alerts = [Alert.model_validate_json(fields[b"alert"]) for _, fields in entries]
    base = result.wall_start_ns // 1_000_000
    (expected,) = json.loads((media_dir / "lobby.labels.json").read_text())["events"]
    assert [(a.event, a.severity) for a in alerts] == [("distress", "high")], [
        ((a.window_start - base) / 1000, a.score) for a in alerts
    ]
    alert = alerts[0]
    assert expected["start"] - 2 <= (alert.window_start - base) / 1000 <= expected["end"]
    assert {term.signal: term.contribution for term in alert.terms} == {
        "video.person.count": 0.4,
        "speech.keywords": 0.6,
    }
    assert alert.score == pytest.approx(1.0) and alert.streams == ["lobby"]
    assert "help" in alert.evidence.transcript.lower() or "police" in alert.evidence.transcript.lower()
