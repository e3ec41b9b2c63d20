"""A second fuse worker joins mid-stream: the sites are split, no alert is lost or made up.

A site stays on one partition of `fw.features` (its name is the key); after the rebalance
the worker that loses a site forgets it, the one that gets it loads the stored rule state
and reads again from the committed offset.
"""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from aiokafka.partitioner import murmur2

from config.schema import AudioInput, DetectorsConfig, EventConfig, FusewatchConfig, SourceConfig, VideoInput
from daemon.fuse.worker import FuseWorker, run_fuse
from daemon.telemetry.metrics import Telemetry
from streams.kafka import make_producer
from streams.models import Alert, AudioFeatures, AudioWindowFeatures, WindowFeatures
from tests.helpers import eventually, read_topic

pytestmark = pytest.mark.integration

SITES = ("hq", "annex")
# An hour ago on a window boundary: fuse dead-letters windows further ahead than `windows.max_ahead`.
BASE_MS = (time.time_ns() // 1_000_000 - 3_600_000) // 2000 * 2000
WINDOWS = 60
LOUD = EventConfig.model_validate(
    {
        "name": "loud",
        "threshold": 0.5,
        "for": 1,
        "cooldown": 0,
        "severity": "low",
        "terms": [{"signal": "audio.loudness_dbfs", "weight": 1, "when": {"op": ">=", "value": -20}}],
    }
)


def _window(site: str, index: int) -> WindowFeatures:
    start = BASE_MS + index * 2000
    dbfs = -10.0 if index % 3 == 0 else -40.0
    return AudioWindowFeatures(
        stream=f"mic-{site}",
        site=site,
        window_start=start,
        window_end=start + 2000,
        audio=AudioFeatures(loudness_dbfs=dbfs, peak_dbfs=dbfs + 6, speech_ratio=0.0),
    )


async def _publish(config: FusewatchConfig, indices: range) -> None:
    producer = make_producer(config.kafka)
    await producer.start()
    try:
        for index in indices:
            for site in SITES:
                await producer.send(
                    config.kafka.topics.features,
                    key=site.encode(),
                    value=_window(site, index).model_dump_json().encode(),
                )
        await producer.flush()
    finally:
        await producer.stop()


async def test_a_fuse_worker_joining_mid_stream_takes_over_a_site_and_every_alert_comes_once(
    fw_config: FusewatchConfig,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="streams.kafka")

    def assignments() -> int:
        return sum(r.getMessage().startswith("fuse: partitions assigned") for r in caplog.records)

    partitions = fw_config.kafka.media_partitions
    assert len({(murmur2(s.encode()) & 0x7FFFFFFF) % partitions % 2 for s in SITES}) == 2, "one site per member"
    config = fw_config.model_copy(
        update={
            "sources": [
                SourceConfig(
                    id=f"mic-{site}",
                    url="alsa://hw:0",
                    site=site,
                    video=VideoInput(enabled=False),
                    audio=AudioInput(enabled=True),
                )
                for site in SITES
            ],
            "detectors": DetectorsConfig(transcriber=None),
            "events": [LOUD],
        }
    )
    async with asyncio.timeout(120):
        await _publish(config, range(WINDOWS // 2))
        telemetry = Telemetry(process="first")
        alerts: tuple[list[Alert], list[Alert]] = ([], [])
        first = asyncio.create_task(run_fuse(config, idle_timeout=12.0, telemetry=telemetry, on_alert=alerts[0].append))
        while not await read_topic(config.kafka, config.kafka.topics.alerts, quiet_ms=500, one_poll=True):
            assert not first.done(), first
        second = asyncio.create_task(run_fuse(config, idle_timeout=12.0, on_alert=alerts[1].append))
        await eventually(lambda: assignments() >= 3, within=30, every=0.1)  # the first twice, the second once
        await _publish(config, range(WINDOWS // 2, WINDOWS))
        workers: list[FuseWorker] = list(await asyncio.gather(first, second))

    expected = {(site, BASE_MS + i * 2000) for site in SITES for i in range(WINDOWS) if i % 3 == 0}
    fired = [{(a.site, a.window_start) for a in fired_by} for fired_by in alerts]
    assert fired[0] | fired[1] == expected, "every loud window of both sites, nothing else"
    assert len(alerts[0]) + len(alerts[1]) == len(expected), "each evaluated once, by one worker"
    assert fired[1], "the second worker took a site over"
    assert (
        workers[0].counters.partitions_released
        == telemetry.metrics.registry.get_sample_value("fusewatch_partitions_revoked_total", {"role": "fuse"})
        >= 1
    )
    assert all(a.window_start >= BASE_MS + (WINDOWS // 2 - 2) * 2000 for a in alerts[1]), (
        "it started from the committed offset, not from the beginning"
    )
