"""Replay → fw.media → `fusewatch analyze` worker → fw.features, on the embedded broker."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from pathlib import Path

import pytest

from config.schema import DetectorsConfig, FasterWhisperConfig, FusewatchConfig
from daemon.analyze.worker import run_analyze
from streams.kafka import MediaPublisher
from streams.models import WINDOW_FEATURES
from streams.sources import ReplayOptions, replay
from tests.helpers import read_topic

pytestmark = pytest.mark.integration


async def test_replay_then_analyze_emits_features_for_every_window(
    fw_config: FusewatchConfig, media_dir: Path, tmp_path: Path
) -> None:
    config = fw_config.model_copy(
        update={
            "detectors": DetectorsConfig(
                when_behind="wait", transcriber=FasterWhisperConfig(type="faster-whisper", keywords=["help", "police"])
            ),
            "outputs": fw_config.outputs.model_copy(update={"snapshots_dir": str(tmp_path)}),
        }
    )
    walls: dict[str, tuple[int, int]] = {}
    async with MediaPublisher(config.kafka) as publisher:
        for path, stream in ((media_dir / "street.ts", "street"), (media_dir / "lobby.ts", "lobby")):
            result = await replay(str(path), stream, "hq", publisher, ReplayOptions(speed=None))
            walls[stream] = (result.wall_start_ns // 1_000_000, result.wall_end_ns // 1_000_000)
        await publisher.flush()

    counters = await asyncio.wait_for(run_analyze(config, idle_timeout=5.0), 300)
    assert counters.frames_dropped == 0 and counters.frames_analysed > 500

    records = await read_topic(config.kafka, config.kafka.topics.features, quiet_ms=3000)
    windows: dict[tuple[str, str], list[int]] = defaultdict(list)
    for record in records:
        features = WINDOW_FEATURES.validate_json(record.value)
        assert record.key == b"hq" and features.site == "hq"
        windows[(features.stream, features.modality)].append(features.window_start)
    for stream, (first, last) in walls.items():
        for modality in ("video", "audio", "speech"):
            starts = sorted(windows[(stream, modality)])
            assert starts == sorted(set(starts)), "no window twice"
            assert starts == list(range(starts[0], starts[-1] + 1, 2000)), (stream, modality)
            assert first - 4000 < starts[0] <= first, "from the start (audio may begin a frame early)"
            assert last - last % 2000 <= starts[-1] <= last + 2000, "through the end (audio may run a frame past)"
    assert len(windows[("lobby", "video")]) >= 39 and len(windows[("street", "video")]) >= 15
