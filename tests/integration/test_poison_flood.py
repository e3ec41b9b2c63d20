"""A flood of malformed records into fw.media and fw.features while a real replay goes through.

`run_analyze` and `run_fuse` run in-process against a broker of this test's own (and the
session's Redis). While lobby.ts is replayed at max speed, N malformed records go straight
into the media topic (garbage, missing, doubled and non-ASCII headers, int64-overflowing pts,
a 100-bit time base, inits with a bogus layout or a 2^40 Hz sample rate, packets of streams
nobody sent an init for, non-UTF-8 keys) and N into the features topic (invalid JSON, JSON
of the wrong shape, a valid WindowFeatures of the lobby's site one year ahead). The call for
help must still give exactly one distress alert, no role may crash, and every malformed
record must be on the dead-letter topic exactly once, with its origin, and be counted once.

N is `FUSEWATCH_POISON_N` (default 10,000 per topic).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from config.schema import FusewatchConfig
from daemon.analyze.context import AnalyzeCounters
from daemon.analyze.worker import run_analyze
from daemon.fuse.worker import FuseWorker, run_fuse
from daemon.runtime.services import EmbeddedService, ServiceSet, free_port
from daemon.telemetry.metrics import Telemetry
from streams.kafka import MediaPublisher, assign_all, ensure_topics, make_consumer, make_producer
from streams.sources import ReplayOptions, replay
from tests.helpers import demo_config_on, read_topic, redis_alerts

pytestmark = pytest.mark.integration

N = int(os.environ.get("FUSEWATCH_POISON_N", "10000"))
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
YEAR_MS = 365 * 24 * 3600 * 1000
WINDOW_MS = 2000
# From the flood's start; together below pytest-timeout's 300 s, so that a slow run still writes its figures.
ALERT_WITHIN, DRAINED_WITHIN = 170.0, 200.0

Headers = list[tuple[str, bytes]]
Poison = tuple[bytes | None, bytes | None, Headers]


# --------------------------------------------------------------------------- the malformed records


def _noise(i: int, size: int = 64) -> bytes:
    return hashlib.sha256(str(i).encode()).digest() * (size // 32)


def _packet_headers(
    pts: bytes = b"0", tb: bytes = b"1/90000", wall: bytes | None = None, kind: bytes = b"video"
) -> Headers:
    wall = wall if wall is not None else str(time.time_ns()).encode()
    return [
        ("fw-v", b"1"),
        ("kind", kind),
        ("pts", pts),
        ("dts", pts),
        ("tb", tb),
        ("key", b"1"),
        ("wall", wall),
        ("seq", b"0"),
    ]


def _init(stream: str, track: dict[str, Any], key: str | None = None) -> Poison:
    value = json.dumps({"stream": stream, "site": "demo", "tracks": [track], "live": False}).encode()
    headers: Headers = [("fw-v", b"1"), ("kind", b"init"), ("wall", str(time.time_ns()).encode()), ("seq", b"0")]
    return (key or stream).encode(), value, headers


_AAC = {"kind": "audio", "codec": "aac", "tb": "1/48000", "sample_rate": 48000, "channels": 2, "layout": "stereo"}

MEDIA: list[tuple[str, str, Callable[[int], Poison]]] = [
    # (case, what the dead letter's reason must say, the record for the i-th one)
    ("garbage-no-headers", "missing header 'fw-v'", lambda i: (f"junk-{i}".encode(), _noise(i), [])),
    ("no-key", "missing key", lambda i: (None, _noise(i), _packet_headers())),
    ("non-utf8-key", "key is not UTF-8", lambda i: (b"\xff\xfe\xc3(" + str(i).encode(), _noise(i), _packet_headers())),
    ("wire-v2", "unsupported wire version", lambda i: (b"lobby", _noise(i), [("fw-v", b"2"), *_packet_headers()[1:]])),
    ("missing-kind", "missing header 'kind'", lambda i: (b"lobby", _noise(i), [("fw-v", b"1")])),
    ("unknown-kind", "unknown kind", lambda i: (b"lobby", _noise(i), _packet_headers(kind=b"smell"))),
    ("non-ascii-header", "is not ASCII", lambda i: (b"lobby", _noise(i), _packet_headers(kind="vidéo".encode()))),
    ("duplicate-header", "appears twice", lambda i: (b"lobby", _noise(i), [*_packet_headers(), ("pts", b"1")])),
    (
        "hostile-pts",
        "header 'pts' is out of range",
        lambda i: (b"lobby", _noise(i), _packet_headers(pts=b"1180591620717411303424")),
    ),
    (
        "hostile-tb",
        "does not fit a 32-bit time base",
        lambda i: (b"lobby", _noise(i), _packet_headers(tb=b"1/999999999999999999999999999999")),
    ),
    ("zero-tb", "is not a time base", lambda i: (b"lobby", _noise(i), _packet_headers(tb=b"1/0"))),
    ("negative-wall", "header 'wall' is out of range", lambda i: (b"lobby", _noise(i), _packet_headers(wall=b"-1"))),
    ("empty-packet", "packet has no data", lambda i: (b"lobby", b"", _packet_headers())),
    (
        "init-not-json",
        "invalid init JSON",
        lambda i: (b"lobby", b'{"stream": "lobby", ', _packet_headers(kind=b"init")),
    ),
    ("init-bogus-layout", "Invalid layout", lambda i: _init(f"ghost-{i}", _AAC | {"layout": "bogus-layout"})),
    ("init-hostile-rate", "sample_rate", lambda i: _init("lobby", _AAC | {"sample_rate": 1099511627776})),
    ("init-other-stream", "init names stream", lambda i: _init("lobby", _AAC, key=f"ghost-{i}")),
    ("unknown-stream", "before any init", lambda i: (f"ghost-{i}".encode(), _noise(i, 256), _packet_headers())),
]
"""None of these may reach a decoder of the lobby: those keyed `lobby` fail in the wire format."""


def _features(start: int, **changes: Any) -> bytes:
    record: dict[str, Any] = {
        "stream": "lobby",
        "site": "demo",
        "modality": "video",
        "window_start": start,
        "window_end": start + WINDOW_MS,
        "video": {"frames": 4},
    }
    return json.dumps(record | changes).encode()


def _future(i: int) -> int:
    now = int(time.time() * 1000)
    return now - now % WINDOW_MS + YEAR_MS + (i % 100) * WINDOW_MS


FEATURES: list[tuple[str, str, Callable[[int], Poison]]] = [
    ("not-json", "invalid WindowFeatures", lambda i: (b"demo", b'{"stream": "lobby",' + _noise(i, 32), [])),
    ("non-utf8", "invalid WindowFeatures", lambda i: (b"demo", b"\xff\xfe" + _noise(i), [])),
    ("tombstone", "invalid WindowFeatures", lambda i: (b"demo", None, [])),
    ("wrong-shape", "invalid WindowFeatures", lambda i: (b"demo", json.dumps({"hello": i}).encode(), [])),
    ("array", "invalid WindowFeatures", lambda i: (None, json.dumps([i, "lobby"]).encode(), [])),
    ("bad-modality", "invalid WindowFeatures", lambda i: (b"demo", _features(_future(i), modality="smell"), [])),
    ("extra-field", "invalid WindowFeatures", lambda i: (b"demo", _features(_future(i), evil=i), [])),
    ("future-dated", "ahead of the site's newest window", lambda i: (b"demo", _features(_future(i)), [])),
]
OUT_OF_RANGE = {"future-dated"}


def _flood(cases: list[tuple[str, str, Callable[[int], Poison]]], count: int) -> list[tuple[str, Poison]]:
    return [(cases[i % len(cases)][0], cases[i % len(cases)][2](i)) for i in range(count)]


# --------------------------------------------------------------------------- producing and reading


@dataclass
class Sent:
    """The malformed records of one topic, by where the broker put them."""

    at: dict[tuple[int, int], tuple[str, Poison]] = field(default_factory=dict)  # (partition, offset) → record
    seconds: float = 0.0


async def _produce(config: FusewatchConfig, topic: str, records: list[tuple[str, Poison]]) -> Sent:
    producer = make_producer(config.kafka)
    await producer.start()
    started = time.monotonic()
    try:
        futures = []
        for index, (_, (key, value, headers)) in enumerate(records):
            futures.append(await producer.send(topic, value=value, key=key, headers=headers))
            if index % 500 == 0:
                await asyncio.sleep(0)  # interleave with the replay's records
        done = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    sent = Sent(seconds=time.monotonic() - started)
    for meta, record in zip(done, records, strict=True):
        sent.at[(meta.partition, meta.offset)] = record
    assert len(sent.at) == len(records)
    return sent


async def _replay(config: FusewatchConfig, lobby: Path) -> int:
    async with MediaPublisher(config.kafka) as publisher:
        result = await replay(str(lobby), "lobby", config.site, publisher, ReplayOptions(speed=None))
        await publisher.flush()
    return result.messages


class DeadLetterCount:
    """How many records the dead-letter topic holds (its fetched high watermarks), polled in the background.

    Not the records a consumer tailing the topic received: under CPU contention the embedded
    broker (Tansu 0.6.0) lets a consumer that tails a partition written by two producers at
    once skip a record now and then (it is in the log: a read from the beginning finds it).
    Not ListOffsets either: Tansu answers it with the last batch's base offset + 1, short of
    the end once dead letters go out in batches. The high watermark of each fetch response is
    right; the records themselves are read once from the beginning after the roles stopped.
    """

    def __init__(self, config: FusewatchConfig) -> None:
        self._config = config
        self.count = 0
        self._stop = asyncio.Event()

    async def run(self) -> None:
        consumer = make_consumer(self._config.kafka, group=None)
        await consumer.start()
        try:
            await assign_all(consumer, self._config.kafka.topics.dead_letter)
            while not self._stop.is_set():
                await consumer.getmany(timeout_ms=500, max_records=10_000)
                self.count = sum(consumer.highwater(tp) or 0 for tp in consumer.assignment())
        finally:
            await consumer.stop()

    def stop(self) -> None:
        self._stop.set()


async def _until(condition: Callable[[], Awaitable[bool]], within: float, what: str, every: float = 0.5) -> None:
    deadline = time.monotonic() + within
    while not await condition():
        assert time.monotonic() < deadline, f"{what}: not within {within:.0f} s"
        await asyncio.sleep(every)


async def _drained(roles: dict[str, asyncio.Task[Any]], registry: CollectorRegistry, partitions: int) -> bool:
    """Every record of both topics handled (the lag gauges of both groups at 0): the replay's last ones too."""
    assert not any(role.done() for role in roles.values()), "a role ended after the flood"
    lags = {
        (s.labels["group"], s.labels["partition"]): s.value
        for metric in registry.collect()
        if metric.name == "fusewatch_consumer_lag"
        for s in metric.samples
    }
    return len(lags) == partitions and not any(lags.values())


def _headers(record: Any) -> dict[str, bytes]:
    return {name: value for name, value in record.headers if name.startswith("dl-")}


# --------------------------------------------------------------------------- the test


async def test_a_poison_flood_loses_no_alert_and_dead_letters_each_record_once(
    services: ServiceSet, media_dir: Path, tmp_path: Path
) -> None:
    began = time.monotonic()
    broker = EmbeddedService("kafka", tmp_path, port=free_port())
    broker.start()
    config = demo_config_on(broker.address, services.redis.address, tmp_path / "snapshots", "p")
    topics = config.kafka.topics
    media_poison, feature_poison = _flood(MEDIA, N), _flood(FEATURES, N)
    telemetry = Telemetry()
    registry = telemetry.metrics.registry
    stop = asyncio.Event()
    await ensure_topics(config.kafka)
    roles = {
        "analyze": asyncio.create_task(run_analyze(config, stop=stop, telemetry=telemetry)),
        "fuse": asyncio.create_task(run_fuse(config, stop=stop, telemetry=telemetry)),
    }
    reader = DeadLetterCount(config)
    reading = asyncio.create_task(reader.run())
    marks: dict[str, float] = {}  # seconds from the flood's start to each phase's end
    phase = "loading the models"
    sent_media = sent_features = Sent()
    replayed = 0
    try:

        async def loaded() -> bool:
            assert not any(role.done() for role in roles.values()), "a role ended while loading"
            return {"analyze", "fuse"} <= telemetry.loaded

        await _until(loaded, 60, "analyze and fuse loaded")

        phase = "flooding while the replay is sent"
        flood_start = time.monotonic()

        def left() -> float:
            return max(DRAINED_WITHIN - (time.monotonic() - flood_start), 1.0)

        sent_media, sent_features, replayed = await asyncio.gather(
            _produce(config, topics.media, media_poison),
            _produce(config, topics.features, feature_poison),
            _replay(config, media_dir / "lobby.ts"),
        )
        marks["flood_and_replay_sent"] = time.monotonic() - flood_start

        phase = "waiting for the alert"

        async def alerted() -> bool:
            assert not any(role.done() for role in roles.values()), "a role ended during the flood"
            return len(await redis_alerts(config)) >= 1

        await _until(alerted, ALERT_WITHIN, "the distress alert of the lobby")
        marks["alert"] = time.monotonic() - flood_start

        phase = "waiting for every dead letter"

        async def all_dead_lettered() -> bool:
            assert not any(role.done() for role in roles.values()), "a role ended during the flood"
            return reader.count >= 2 * N

        await _until(all_dead_lettered, left(), f"{2 * N} dead letters")
        marks["all_dead_letters"] = time.monotonic() - flood_start

        phase = "waiting for both groups to reach the end of their topics"
        await _until(
            functools.partial(_drained, roles, registry, 2 * config.kafka.media_partitions),
            left(),
            "both consumer groups at the end of their topics",
        )
        await asyncio.sleep(3.0)  # room for a late duplicate dead letter or alert to show
        marks["drained"] = time.monotonic() - flood_start
        assert all(not role.done() for role in roles.values()), "no role crashed"
        phase = "done"
    finally:
        stop.set()
        reader.stop()
        ended: dict[str, Any] = {}
        for name, role in roles.items():
            try:
                ended[name] = await asyncio.wait_for(role, 60)
            except Exception as exc:  # reported below with the figures
                ended[name] = exc
        with contextlib.suppress(Exception):
            await asyncio.wait_for(reading, 10)
        try:
            alerts = await redis_alerts(config)
            kafka_alerts = await read_topic(config.kafka, topics.alerts)
            letters = await read_topic(config.kafka, topics.dead_letter)  # from the beginning, all written
        finally:
            broker.stop()
        # ---- the figures, also (as far as they go) when a phase failed
        stages = Counter(_headers(r)["dl-stage"].decode() for r in letters)
        metric = {
            stage: registry.get_sample_value("fusewatch_dead_letters_total", {"stage": stage}) or 0
            for stage in ("decode", "analyze", "fuse")
        }
        spans = {stage: [r.timestamp for r in letters if _headers(r)["dl-stage"].decode() == stage] for stage in stages}
        restarts = {
            role: registry.get_sample_value("fusewatch_role_restarts_total", {"role": role}) or 0 for role in roles
        }
        analyze, fuse = ended["analyze"], ended["fuse"]
        figures = {
            "phase_reached": phase,
            "n_per_topic": N,
            "records_sent": {
                "media_poison": len(sent_media.at),
                "features_poison": len(sent_features.at),
                "media_replayed": replayed,
            },
            "send_seconds": {"media": round(sent_media.seconds, 2), "features": round(sent_features.seconds, 2)},
            "dead_letters_by_stage": dict(stages),
            "dead_letters_metric": metric,
            "dead_letter_topic_records": len(letters),
            "dead_letter_seconds_first_to_last": {
                stage: round((max(ts) - min(ts)) / 1000, 2) for stage, ts in spans.items()
            },
            "alerts": {
                "redis": len(alerts),
                "kafka": len(kafka_alerts),
                "events": [(a["event"], a["site"], a["streams"]) for a in alerts],
            },
            "seconds_from_flood_start": {mark: round(seconds, 2) for mark, seconds in marks.items()},
            "role_restarts": restarts,
            "roles_ended": {
                name: repr(value)[:300] if isinstance(value, BaseException) else type(value).__name__
                for name, value in ended.items()
            },
            "analyze_item_errors": getattr(analyze, "item_errors", None),
            "fuse_out_of_range": fuse.joiner.counters.out_of_range if isinstance(fuse, FuseWorker) else None,
            "late_records": registry.get_sample_value("fusewatch_late_records_total") or 0,
            "elapsed_seconds": round(time.monotonic() - began, 2),
        }
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / "poison_flood.json").write_text(json.dumps(figures, indent=1))
        print("\npoison flood:", json.dumps(figures, indent=1))

    # ---- no role crashed, nothing restarted, no item failed
    assert isinstance(analyze, AnalyzeCounters), f"analyze ended with {analyze!r}"
    assert isinstance(fuse, FuseWorker), f"fuse ended with {fuse!r}"
    assert restarts == {"analyze": 0, "fuse": 0}
    assert analyze.item_errors == 0, "the flood made analysis of a decoded item fail"
    assert fuse.joiner.counters.out_of_range == sum(case in OUT_OF_RANGE for case, _ in feature_poison)

    # ---- exactly one distress alert of the lobby, in Redis and on Kafka
    assert [(a["event"], a["site"]) for a in alerts] == [("distress", "demo")], alerts
    assert "lobby" in alerts[0]["streams"]
    assert [r.key.decode() for r in kafka_alerts] == [alerts[0]["id"]]
    assert registry.get_sample_value("fusewatch_alerts_total", {"event": "distress", "site": "demo"}) == 1

    # ---- every malformed record dead-lettered exactly once, unchanged, with its origin and reason
    for stage, topic, sent, cases in (
        ("decode", topics.media, sent_media, MEDIA),
        ("fuse", topics.features, sent_features, FEATURES),
    ):
        reasons = {case: reason for case, reason, _ in cases}
        staged = [r for r in letters if _headers(r)["dl-stage"] == stage.encode()]
        origins = Counter((int(_headers(r)["dl-partition"]), int(_headers(r)["dl-offset"])) for r in staged)
        assert {_headers(r)["dl-topic"].decode() for r in staged} == {topic}
        twice = {origin: count for origin, count in origins.items() if count > 1}
        assert not twice, f"{stage}: dead-lettered more than once: {list(twice.items())[:5]}"
        assert set(origins) == set(sent.at), (
            f"{stage}: {len(set(sent.at) - set(origins))} records never "
            f"dead-lettered, {len(set(origins) - set(sent.at))} not ours"
        )
        for letter in staged:
            case, (key, value, headers) = sent.at[
                (int(_headers(letter)["dl-partition"]), int(_headers(letter)["dl-offset"]))
            ]
            assert (letter.key, letter.value) == (key, value), case
            assert [h for h in letter.headers if not h[0].startswith("dl-")] == headers, case
            assert reasons[case] in _headers(letter)["dl-reason"].decode(errors="replace"), (
                case,
                _headers(letter)["dl-reason"],
            )
    assert dict(stages) == {"decode": N, "fuse": N}, "nothing but the malformed records was dead-lettered"
    assert metric == {"decode": N, "analyze": 0, "fuse": N}, (
        "fusewatch_dead_letters_total counts each dead letter once, under the stage its dl-stage header names"
    )
