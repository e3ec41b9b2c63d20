"""Replay real recordings into the embedded broker and decode them back from Kafka."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner

from config.schema import FusewatchConfig
from streams.decode import DecodedItem, MediaConsumer, StreamEnded
from streams.kafka import MediaPublisher, assign_all, client_options, consumer_lag, make_consumer, make_producer
from streams.models import AudioChunk, Frame
from streams.sources import ReplayOptions, replay
from tests.helpers import DirectDecode, decode_directly

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def lobby(media_dir: Path) -> Path:
    return media_dir / "lobby.ts"


@pytest.fixture(scope="module")
def lobby_direct(lobby: Path) -> DirectDecode:
    return decode_directly(lobby)


async def _replay(config: FusewatchConfig, path: Path, stream: str) -> None:
    async with MediaPublisher(config.kafka) as publisher:
        await replay(str(path), stream, config.site, publisher, ReplayOptions(speed=None))
        await publisher.flush()


class Decoding:
    """A MediaConsumer plus what it yielded, closed cleanly."""

    def __init__(self, config: FusewatchConfig, group: str | None = None) -> None:
        topic = config.kafka.topics.media
        self.consumer = make_consumer(config.kafka, *([topic] if group else []), group=group)
        self.producer = make_producer(config.kafka)
        self.media = MediaConsumer(self.consumer, self.producer, config.kafka.topics.dead_letter)
        self.items: list[DecodedItem] = []

    async def __aenter__(self) -> Decoding:
        await self.consumer.start()
        await self.producer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.media.close()
        await self.consumer.stop()
        await self.producer.stop()

    async def run(self, idle: float = 3.0, until_ended: set[str] | None = None, commit: bool = False) -> None:
        ended: set[str] = set()
        async for decoded in self.media.items(idle_timeout=idle):
            self.items.append(decoded)
            if commit:
                await self.media.commit([decoded.position])
            if isinstance(decoded.item, StreamEnded):
                ended.add(decoded.item.stream)
                if until_ended is not None and until_ended <= ended:
                    return

    def frames(self, stream: str | None = None) -> list[Frame]:
        return [d.item for d in self.items if isinstance(d.item, Frame) and stream in (None, d.item.stream)]

    def samples(self, stream: str | None = None) -> int:
        return sum(
            d.item.samples.shape[1]
            for d in self.items
            if isinstance(d.item, AudioChunk) and stream in (None, d.item.stream)
        )


async def test_replay_then_decode_matches_direct_pyav_decode(
    fw_config: FusewatchConfig, lobby: Path, lobby_direct: DirectDecode
) -> None:
    await _replay(fw_config, lobby, "lobby")
    async with Decoding(fw_config) as decoding:
        await assign_all(decoding.consumer, fw_config.kafka.topics.media)
        await asyncio.wait_for(decoding.run(until_ended={"lobby"}), 120)
    frames = decoding.frames("lobby")
    assert len(frames) == lobby_direct.frames
    assert decoding.samples("lobby") == lobby_direct.audio_samples
    assert np.array_equal(frames[0].image, lobby_direct.first)
    assert np.array_equal(frames[-1].image, lobby_direct.last)
    assert [f.pts for f in frames] == lobby_direct.video_pts
    walls = [f.wall_ns for f in frames]
    assert walls == sorted(walls), "wallclock follows presentation order"
    counters = decoding.media.counters
    assert counters.corrupt_packets == counters.dead_letters == counters.skipped_before_init == 0


async def test_consumer_joining_mid_stream_starts_at_next_keyframe(
    fw_config: FusewatchConfig, lobby: Path, lobby_direct: DirectDecode
) -> None:
    await _replay(fw_config, lobby, "lobby")
    topic = fw_config.kafka.topics.media
    partition = DefaultPartitioner()(b"lobby", list(range(4)), list(range(4)))
    # Find a mid-stream offset that is a plain (non-key) video packet.
    probe = AIOKafkaConsumer(**client_options(fw_config.kafka), enable_auto_commit=False)
    await probe.start()
    tp = TopicPartition(topic, partition)
    probe.assign([tp])
    await probe.seek_to_beginning(tp)
    records = []
    while True:
        batch = await probe.getmany(tp, timeout_ms=1000)
        if not batch:
            break
        records += batch[tp]
    await probe.stop()
    headers = [dict(r.headers) for r in records]
    start = next(
        i
        for i in range(len(records) // 2, len(records))
        if headers[i]["kind"] == b"video" and headers[i]["key"] == b"0"
    )
    next_key = next(
        i for i in range(start, len(records)) if headers[i]["kind"] == b"video" and headers[i]["key"] == b"1"
    )
    assert headers[next_key - 1]["kind"] == b"init", "an init record precedes every keyframe"
    key_pts = int(headers[next_key]["pts"])

    async with Decoding(fw_config) as decoding:
        decoding.consumer.assign([tp])
        decoding.consumer.seek(tp, records[start].offset)
        await asyncio.wait_for(decoding.run(until_ended={"lobby"}), 120)
    frames = decoding.frames("lobby")
    assert frames[0].pts == key_pts and frames[0].keyframe
    assert len(frames) == sum(1 for pts in lobby_direct.video_pts if pts >= key_pts)
    counters = decoding.media.counters
    assert counters.skipped_before_init == next_key - 1 - start
    # Packets before the first init cannot be decoded: dead-lettered, so nothing vanishes unseen.
    assert counters.corrupt_packets == 0 and counters.dead_letters == counters.skipped_before_init


def _ids_on_distinct_partitions(count: int, partitions: int) -> list[str]:
    partitioner = DefaultPartitioner()
    chosen: dict[int, str] = {}
    for n in itertools.count():
        name = f"cam-{n}"
        p = partitioner(name.encode(), list(range(partitions)), list(range(partitions)))
        chosen.setdefault(p, name)
        if len(chosen) == count:
            return [chosen[p] for p in sorted(chosen)]
    raise AssertionError("unreachable")


async def test_two_consumers_in_a_group_split_streams_and_see_every_packet_once(
    fw_config: FusewatchConfig, media_dir: Path
) -> None:
    streams = _ids_on_distinct_partitions(4, 4)
    files = {
        streams[0]: media_dir / "lobby.ts",
        streams[1]: media_dir / "street.ts",
        streams[2]: media_dir / "street.ts",
        streams[3]: media_dir / "lobby.ts",
    }
    direct = {name: decode_directly(path) for name, path in files.items()}
    group = f"{fw_config.kafka.group_prefix}-decode"
    async with Decoding(fw_config, group) as a, Decoding(fw_config, group) as b:
        runs = [asyncio.create_task(d.run(idle=4.0, commit=True)) for d in (a, b)]
        for _ in range(200):  # wait for the group to settle before any record exists
            if (
                a.consumer.assignment()
                and b.consumer.assignment()
                and (len(a.consumer.assignment()) + len(b.consumer.assignment()) == 4)
            ):
                break
            await asyncio.sleep(0.1)
        assert len(a.consumer.assignment()) == len(b.consumer.assignment()) == 2
        async with asyncio.TaskGroup() as group_tasks:
            for name, path in files.items():
                group_tasks.create_task(_replay(fw_config, path, name))
        await asyncio.wait_for(asyncio.gather(*runs), 180)
    seen_by = defaultdict(set)
    for label, decoding in (("a", a), ("b", b)):
        for d in decoding.items:
            seen_by[d.item.stream].add(label)
    assert all(len(labels) == 1 for labels in seen_by.values()), seen_by
    assert {label for labels in seen_by.values() for label in labels} == {"a", "b"}
    for name in streams:
        frames = a.frames(name) + b.frames(name)
        assert len(frames) == direct[name].frames, name
        assert a.samples(name) + b.samples(name) == direct[name].audio_samples, name


MALFORMED_KINDS = [
    "garbage",
    "no-headers",
    "wrong-version",
    "missing-kind",
    "missing-wall",
    "bad-pts",
    "bad-tb",
    "truncated-init",
    "unknown-kind",
    "empty-packet",
    "unknown-codec",
    "no-key",
    "bad-extradata",
]


def _malformed(n: int, rng: random.Random) -> tuple[bytes | None, bytes | None, list[tuple[str, bytes]], str]:
    kind = MALFORMED_KINDS[n % len(MALFORMED_KINDS)]
    base = [
        ("fw-v", b"1"),
        ("kind", b"video"),
        ("pts", b"1"),
        ("dts", b"1"),
        ("tb", b"1/90000"),
        ("key", b"0"),
        ("wall", b"1"),
        ("seq", str(n).encode()),
    ]
    init_base = [("fw-v", b"1"), ("kind", b"init"), ("wall", b"1"), ("seq", str(n).encode())]
    key = f"junk-{n % 7}".encode()
    garbage = rng.randbytes(rng.randint(1, 300))

    def replaced(name: str, value: bytes) -> list[tuple[str, bytes]]:
        return [(name, value) if h[0] == name else h for h in base]

    def init(tracks: bytes) -> bytes:
        return b'{"stream": "%s", "site": "s", "tracks": %s}' % (key, tracks)

    records: dict[str, Callable[[], tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]]] = {
        "garbage": lambda: (key, garbage, [("x", rng.randbytes(4))]),
        "no-headers": lambda: (key, garbage, []),
        "wrong-version": lambda: (key, garbage, [("fw-v", b"7"), *base[1:]]),
        "missing-kind": lambda: (key, garbage, [h for h in base if h[0] != "kind"]),
        "missing-wall": lambda: (key, garbage, [h for h in base if h[0] != "wall"]),
        "bad-pts": lambda: (key, garbage, replaced("pts", b"soon")),
        "bad-tb": lambda: (key, garbage, replaced("tb", b"0/0")),
        "truncated-init": lambda: (
            key,
            b'{"stream": "%s", "site": "s", "tracks": [{"kind": "video", "codec": "h2' % key,
            init_base,
        ),
        "unknown-kind": lambda: (key, garbage, replaced("kind", b"smell")),
        "empty-packet": lambda: (key, b"", base),
        "unknown-codec": lambda: (key, init(b'[{"kind": "video", "codec": "nope264", "tb": "1/90000"}]'), init_base),
        "no-key": lambda: (None, garbage, base),
        "bad-extradata": lambda: (
            key,
            init(b'[{"kind": "audio", "codec": "aac", "tb": "1/90000", "extradata": "!!"}]'),
            init_base,
        ),
    }
    return (*records[kind](), kind)


async def test_malformed_records_go_to_dead_letter_and_good_stream_still_decodes(
    fw_config: FusewatchConfig, lobby: Path, lobby_direct: DirectDecode
) -> None:
    rng = random.Random(1234)
    sent = Counter[str]()
    producer = AIOKafkaProducer(**client_options(fw_config.kafka))
    await producer.start()

    async def send_junk() -> None:
        for n in range(1000):
            key, value, headers, kind = _malformed(n, rng)
            await producer.send(fw_config.kafka.topics.media, value=value, key=key, headers=headers)
            sent[kind] += 1
            if n % 50 == 0:
                await asyncio.sleep(0.005)
        await producer.flush()

    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(_replay(fw_config, lobby, "lobby"))
            group.create_task(send_junk())
    finally:
        await producer.stop()

    async with Decoding(fw_config) as decoding:
        await assign_all(decoding.consumer, fw_config.kafka.topics.media)
        await asyncio.wait_for(decoding.run(idle=3.0), 180)
    assert len(decoding.frames("lobby")) == lobby_direct.frames
    assert decoding.samples("lobby") == lobby_direct.audio_samples
    assert decoding.media.counters.dead_letters == 1000

    dead = make_consumer(fw_config.kafka, group=None)
    await dead.start()
    try:
        await assign_all(dead, fw_config.kafka.topics.dead_letter)
        letters = []
        while len(letters) < 1000:
            batch = await dead.getmany(timeout_ms=3000)
            if not batch:
                break
            letters += [r for records in batch.values() for r in records]
    finally:
        await dead.stop()
    assert len(letters) == 1000
    reasons = Counter[str]()
    for letter in letters:
        headers = dict(letter.headers)
        assert headers["dl-topic"] == fw_config.kafka.topics.media.encode()
        assert headers["dl-stage"] == b"decode"
        assert int(headers["dl-offset"]) >= 0 and int(headers["dl-partition"]) in range(4)
        reasons[headers["dl-reason"].decode()] += 1
    assert sum(reasons.values()) == 1000
    unknown_codec = [
        count
        for reason, count in reasons.items()
        if reason.startswith("init of 'junk-") and "no decoder for codec 'nope264'" in reason
    ]
    assert sum(unknown_codec) == sent["unknown-codec"]
    assert reasons["missing key (stream id)"] == sent["no-key"]
    assert reasons["unsupported wire version '7' (this reader speaks 1)"] == sent["wrong-version"]


async def test_consumer_lag_counts_records_after_the_last_processed_one(fw_config: FusewatchConfig) -> None:
    """Lag is what is left to process, not to fetch; a partition with nothing processed counts from its position."""
    topic = fw_config.kafka.topics.features
    async with make_producer(fw_config.kafka) as producer:
        for index in range(10):
            await producer.send_and_wait(topic, f"r{index}".encode(), partition=0)
        for index in range(4):
            await producer.send_and_wait(topic, f"s{index}".encode(), partition=1)
    consumer = make_consumer(fw_config.kafka, group=None)
    await consumer.start()
    try:
        await assign_all(consumer, topic)
        fetched: list[int] = []
        while len(fetched) < 14:
            batches = await consumer.getmany(timeout_ms=1000)
            fetched += [r.offset for batch in batches.values() for r in batch]
        # Everything is fetched, but only partition 0 up to offset 2 is processed.
        lags = await consumer_lag(consumer, {(topic, 0): 2})
        assert lags[TopicPartition(topic, 0)] == 7
        assert lags[TopicPartition(topic, 1)] == 0, "nothing processed: counted from the (fetched) position"
        lags = await consumer_lag(consumer, {(topic, 0): 9, (topic, 1): 0})
        assert (lags[TopicPartition(topic, 0)], lags[TopicPartition(topic, 1)]) == (0, 3)
        assert set(lags) == consumer.assignment(), "every assigned partition, the empty ones at 0"
    finally:
        await consumer.stop()
