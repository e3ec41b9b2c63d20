"""A second analyze worker joins the group mid-replay: the rebalance loses no window and corrupts none.

After a rebalance every assigned partition is read again from its committed offset, also
by the worker that keeps it; each window that comes out must equal the one an undisturbed
worker emits from the same records. One stream is busy (people walk through the lobby all
the time), the other quiet (the empty hall of `bench.scenes`, one walk-through), so motion
gating spares the detector frames and must decide them alike in both workers.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiokafka.partitioner import murmur2

from bench.scenes import quiet_scene
from config.schema import DetectorsConfig, FusewatchConfig, KafkaTopics, MotionConfig, SourceConfig, VideoInput
from daemon.analyze.context import AnalyzeCounters
from daemon.analyze.worker import run_analyze
from daemon.telemetry.metrics import Telemetry
from daemon.telemetry.status import StatusStore
from streams.kafka import MediaPublisher, ensure_topics
from streams.models import WINDOW_FEATURES, WindowFeatures
from streams.redis_schema import redis_client
from streams.sources import ReplayOptions, replay
from tests.helpers import read_topic

pytestmark = pytest.mark.integration

STREAMS = {"lobby": "lobby.ts", "cam1": "quiet.ts"}
Key = tuple[str, str, int]


def _partition(stream: str, partitions: int) -> int:
    return (murmur2(stream.encode()) & 0x7FFFFFFF) % partitions  # the producer's default partitioner


async def _features(config: FusewatchConfig, one_poll: bool = False) -> list[WindowFeatures]:
    records = await read_topic(config.kafka, config.kafka.topics.features, one_poll=one_poll)
    return [WINDOW_FEATURES.validate_json(record.value) for record in records]


async def _split_shown(first: Telemetry, store: StatusStore) -> bool:
    """The first worker counts a revocation and shows the lag of the two partitions (of four) it kept;
    each stream's status comes from the worker that has it."""
    metrics = first.metrics
    revoked = metrics.registry.get_sample_value("fusewatch_partitions_revoked_total", {"role": "analyze"})
    lag_series = {s.labels["partition"] for s in metrics.consumer_lag.collect()[0].samples}
    owners = {status.stream: status.worker for status in await store.streams()}
    return (
        bool(revoked)
        and len(lag_series) <= 2
        and set(owners) == set(STREAMS)
        and set(owners.values()) == {"first", "second"}
    )


def _same(features: WindowFeatures, reference: WindowFeatures) -> bool:
    if features.video is not None and reference.video is not None:
        # A new tracker numbers its tracks afresh; all else is the same.
        return ({k: v.max_count for k, v in features.video.classes.items()}, features.video.frames) == (
            {k: v.max_count for k, v in reference.video.classes.items()},
            reference.video.frames,
        )
    if features.audio is not None and reference.audio is not None:
        # A reader resuming at an init decodes its first AAC frame without the previous frame's
        # overlap, so a window starting right there can differ in the last printed digit.
        levels = [
            (features.audio.loudness_dbfs, reference.audio.loudness_dbfs),
            (features.audio.peak_dbfs, reference.audio.peak_dbfs),
            (features.audio.loudness_lufs or -120.0, reference.audio.loudness_lufs or -120.0),
        ]
        return (
            features.model_dump(exclude={"latency_ms", "audio"})
            == reference.model_dump(exclude={"latency_ms", "audio"})
            and all(abs(a - b) <= 0.05 for a, b in levels)
            and abs(features.audio.speech_ratio - reference.audio.speech_ratio) <= 0.05
        )
    return features.model_dump(exclude={"latency_ms"}) == reference.model_dump(exclude={"latency_ms"})


async def test_a_worker_joining_mid_replay_takes_over_streams_and_every_window_is_the_same(
    fw_config: FusewatchConfig, media_dir: Path
) -> None:
    partitions = fw_config.kafka.media_partitions
    quiet_scene(media_dir)  # quiet.ts, made from lobby.ts on first use
    owners = {_partition(stream, partitions) for stream in STREAMS}
    assert len({p % 2 for p in owners}) == 2, "round robin over two members gives the streams to different ones"
    # Motion gating on (the default): each window's first frame seeds the background and is
    # detected, so the reader that resumes mid-stream gates each window as the undisturbed one.
    config = fw_config.model_copy(
        update={
            "detectors": DetectorsConfig(when_behind="wait"),
            "sources": [
                SourceConfig(id=stream, url=str(media_dir / name), video=VideoInput(motion=MotionConfig()))
                for stream, name in STREAMS.items()
            ],
        }
    )
    reference_config = config.model_copy(
        update={
            "kafka": config.kafka.model_copy(
                update={
                    "group_prefix": f"{config.kafka.group_prefix}-ref",
                    "topics": KafkaTopics(
                        **(config.kafka.topics.model_dump() | {"features": f"{config.kafka.topics.features}.ref"})
                    ),
                }
            )
        }
    )
    await ensure_topics(reference_config.kafka)

    async def publish() -> None:  # 2x real speed: the second worker joins while records still arrive
        async with MediaPublisher(config.kafka) as publisher:
            await asyncio.gather(
                *(
                    replay(str(media_dir / name), stream, "hq", publisher, ReplayOptions(speed=2.0))
                    for stream, name in STREAMS.items()
                )
            )
            await publisher.flush()

    async with asyncio.timeout(300):
        publishing = asyncio.create_task(publish())
        telemetry = {name: Telemetry(process=name) for name in ("first", "second")}
        first = asyncio.create_task(run_analyze(config, idle_timeout=20.0, telemetry=telemetry["first"]))
        while not await _features(config, one_poll=True):  # the first worker is under way
            assert not first.done(), first
            await asyncio.sleep(0.5)
        assert not publishing.done(), "the join must come mid-replay"
        second = asyncio.create_task(run_analyze(config, idle_timeout=20.0, telemetry=telemetry["second"]))
        # While both run: each shows only what it has now (metrics and stream status).
        redis = redis_client(config.redis)
        try:
            while not await _split_shown(telemetry["first"], StatusStore(redis, config.redis.key_prefix)):
                assert not second.done(), second
                await asyncio.sleep(0.5)
        finally:
            await redis.aclose()
        await publishing
        counters: list[AnalyzeCounters] = list(await asyncio.gather(first, second))
        await run_analyze(reference_config, idle_timeout=5.0)  # the same records, one undisturbed worker

    assert counters[0].partitions_released >= 1, "the first worker went through a rebalance"
    assert counters[1].frames_analysed > 0, "the second worker took a stream over"
    assert all(c.frames_dropped == 0 for c in counters)
    assert sum(c.frames_without_motion for c in counters) > 0, "motion gating reused detections in this run"
    reference: dict[Key, WindowFeatures] = {}
    for features in await _features(reference_config):
        key = (features.stream, features.modality, features.window_start)
        assert key not in reference
        reference[key] = features
    assert {stream for stream, _, _ in reference} == set(STREAMS)
    assert len(reference) > 80
    seen: set[Key] = set()
    for features in await _features(config):
        key = (features.stream, features.modality, features.window_start)
        assert key in reference, key
        assert _same(features, reference[key]), (features, reference[key])  # re-emitted windows are the same
        seen.add(key)
    assert seen == set(reference), f"lost windows: {sorted(set(reference) - seen)[:10]}"
