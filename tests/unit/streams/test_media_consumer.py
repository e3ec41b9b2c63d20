"""`MediaConsumer` over a scripted consumer: pipelined decode keeps order, loses nothing, dead-letters bad records,
and decodes a partition afresh when a rebalance makes it read again."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import TopicPartition

from streams.decode import MediaConsumer, MediaDecoder
from streams.models import AudioChunk, Frame, StreamInit
from streams.sources import ReplayOptions, replay
from streams.testing import ListSink, ManualClock
from streams.wire import WireRecord, decode_media, encode_media

TOPIC = "fw.media"


@dataclass
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


class ScriptedConsumer:
    """Hands out the given records `max_records` at a time, then nothing (after the poll's timeout)."""

    def __init__(self, records: list[Record]) -> None:
        self._records = records
        self.polls: list[int] = []
        self.handed_out = 0  # the offset after the last record handed out

    def serve(self, records: list[Record]) -> None:
        """From now on hand out `records` (a rebalance: the partition is read again from its committed offset)."""
        self._records = list(records)

    async def getmany(self, timeout_ms: int = 0, max_records: int | None = None) -> dict[TopicPartition, list[Any]]:
        self.polls.append(timeout_ms)
        batch, self._records = self._records[:max_records], self._records[max_records:]
        self.handed_out = batch[-1].offset + 1 if batch else self.handed_out
        if not batch:
            await asyncio.sleep(timeout_ms / 1000)  # as a consumer waits for records
        return {TopicPartition(TOPIC, 0): batch} if batch else {}


class KeptProducer:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def send(self, topic: str, **record: Any) -> asyncio.Future[None]:
        self.sent.append({"topic": topic, **record})
        acked: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        acked.set_result(None)
        return acked


async def _wire_records(path: Path, stream: str, limit: int | None = None) -> list[Record]:
    sink = ListSink()
    await replay(str(path), stream, "hq", sink, ReplayOptions(speed=None), ManualClock())
    wire = [encode_media(message) for message in sink.messages[:limit]]
    return [Record(TOPIC, 0, offset, w.key, w.value, list(w.headers)) for offset, w in enumerate(wire)]


async def _records(media_dir: Path) -> list[Record]:
    records = await _wire_records(media_dir / "help.wav", "mic")
    records[7] = Record(TOPIC, 0, 7, records[7].key, b"\x00garbage", [("kind", b"nonsense")])
    return records


async def test_leaving_early_loses_no_decoded_batch_and_bad_records_are_dead_lettered(media_dir: Path) -> None:
    records = await _records(media_dir)
    expected = []
    decoder = MediaDecoder()
    for record in records:
        if record.offset == 7:
            continue
        message = decode_media(WireRecord(record.key, record.value, record.headers))
        expected += [(record.offset, type(item).__name__) for item in decoder.handle(message)]
    producer = KeptProducer()
    media = MediaConsumer(ScriptedConsumer(records), producer, "fw.dead-letter", batch_records=5)  # type: ignore[arg-type]
    try:
        first = []
        async for decoded in media.items(idle_timeout=0.4):
            first.append((decoded.position.offset, type(decoded.item).__name__))
            break  # the caller leaves while the next batch is already decoding
        rest = [(d.position.offset, type(d.item).__name__) async for d in media.items(idle_timeout=0.4)]
    finally:
        media.close()
    assert first == expected[:1]
    batch_one_left = [item for item in expected[1:] if item[0] < 5]  # the rest of the batch the caller left
    assert first + rest == [item for item in expected if item not in batch_one_left]
    assert rest[0][0] == 5, "the batch decoded ahead is delivered first by the next call"
    assert [(s["topic"], dict(s["headers"])["dl-offset"]) for s in producer.sent] == [("fw.dead-letter", b"7")]
    assert media.counters.dead_letters == 1


def _summary(item: object) -> tuple[str, int | None]:
    assert isinstance(item, Frame | AudioChunk)
    return type(item).__name__, item.pts


async def test_a_released_partition_read_again_is_decoded_afresh_from_its_init(media_dir: Path) -> None:
    records = await _wire_records(media_dir / "lobby.ts", "lobby", limit=154)  # inits at 0, 51, 102
    restart = 51
    init = decode_media(WireRecord(records[restart].key, records[restart].value, records[restart].headers))
    assert isinstance(init, StreamInit) and init.seq > 0
    decoder = MediaDecoder()
    expected = []  # what a consumer that starts at the committed init decodes
    for record in records[restart:]:
        message = decode_media(WireRecord(record.key, record.value, record.headers))
        expected += [(record.offset, *_summary(item)) for item in decoder.handle(message)]

    consumer = ScriptedConsumer(records)
    media = MediaConsumer(consumer, KeptProducer(), "fw.dead-letter", batch_records=20)  # type: ignore[arg-type]
    before: list[int] = []
    after = []
    try:
        async for decoded in media.items(idle_timeout=0.4):
            if len(before) < 5:
                before.append(decoded.position.offset)
                if len(before) == 5:  # a rebalance: revoked, then assigned again from the committed init
                    media.release([TopicPartition(TOPIC, 0)])
                    assert media.handled_positions == {}
                    consumer.serve(records[restart:])
                continue
            after.append(decoded)
    finally:
        media.close()
    assert before == sorted(before) and before[-1] < restart
    assert media.counters.released_items > 0, "what was fetched before the release is not delivered"
    assert [(d.position.offset, *_summary(d.item)) for d in after] == expected
    assert {d.origin_seq for d in after} == {init.seq}, "the stream starts at the init read again, not at seq 0"
    assert {d.restart.offset for d in after if d.restart} <= {51, 102}
    assert media.handled_positions == {(TOPIC, 0): len(records) - 1}


async def test_a_stream_holds_commits_at_its_init_until_its_first_item_is_handled(media_dir: Path) -> None:
    records = await _wire_records(media_dir / "lobby.ts", "lobby", limit=60)
    media = MediaConsumer(ScriptedConsumer(records), KeptProducer(), "fw.dead-letter", batch_records=1)  # type: ignore[arg-type]
    seen = []
    try:
        async for decoded in media.items(idle_timeout=0.4):
            seen.append((decoded.position.offset, media.unstarted_positions))
    finally:
        media.close()
    first_offset, first_unstarted = seen[0]
    assert first_offset > 0, "the init gives no item"
    assert first_unstarted == {(TOPIC, 0): 0}, "until then only the init keeps a commit from passing it"
    assert seen[-1][1] == {} and media.handled_positions == {(TOPIC, 0): 59}


async def test_records_are_taken_ahead_of_decoding_up_to_a_byte_bound(media_dir: Path) -> None:
    """The consumer fetches again only once its buffer is empty: taking records early keeps the decoder busy."""
    records = await _wire_records(media_dir / "lobby.ts", "lobby", limit=400)
    ahead: dict[int, int] = {}
    for limit in (1, 64 * 1024 * 1024):
        consumer = ScriptedConsumer(records)
        media = MediaConsumer(
            consumer,
            KeptProducer(),
            "fw.dead-letter",
            batch_records=20,  # type: ignore[arg-type]
            fetch_ahead_bytes=limit,
        )
        delivered: list[int] = []
        try:
            async for decoded in media.items(idle_timeout=0.4):
                delivered.append(decoded.position.offset)
                ahead[limit] = max(ahead.get(limit, 0), consumer.handed_out - decoded.position.offset)
        finally:
            media.close()
        assert delivered == sorted(delivered) and consumer.handed_out == len(records)
    assert ahead[1] <= 4 * 20, "one batch fetched ahead, two decoding, one delivering"
    assert ahead[64 * 1024 * 1024] > 200, "with room, records are taken well ahead of the decoder"


async def test_poison_records_are_dead_lettered_once_and_other_streams_decode_on(media_dir: Path) -> None:
    """A hostile init, its stream's packets until its next good init, and packets of a stream never
    initialised are each dead-lettered with a reason; the good stream beside them loses nothing."""
    good = await _wire_records(media_dir / "street.ts", "cam", limit=300)
    bad = await _wire_records(media_dir / "help.wav", "mic", limit=40)
    init = json.loads(bad[0].value or b"")
    init["tracks"][0]["layout"] = "bogus-layout"
    poison = [Record(TOPIC, 0, 0, bad[0].key, json.dumps(init).encode(), bad[0].headers), *bad[1:]]
    ghost = [Record(TOPIC, 0, 0, b"ghost", r.value, r.headers) for r in good[5:8]]
    merged = [*poison[:10], *ghost, *good, *poison[10:]]
    records = [Record(TOPIC, 0, offset, r.key, r.value, r.headers) for offset, r in enumerate(merged)]
    producer = KeptProducer()
    media = MediaConsumer(ScriptedConsumer(records), producer, "fw.dead-letter", batch_records=16)  # type: ignore[arg-type]
    try:
        items = [d async for d in media.items(idle_timeout=0.4)]
    finally:
        media.close()
    frames = sum(isinstance(d.item, Frame) and d.item.stream == "cam" for d in items)
    alone = MediaDecoder()
    direct = sum(
        isinstance(i, Frame) for m in good for i in alone.handle(decode_media(WireRecord(m.key, m.value, m.headers)))
    )
    assert frames == direct > 0, "the good stream decodes as if alone"
    reasons = {int(dict(s["headers"])["dl-offset"]): dict(s["headers"])["dl-reason"].decode() for s in producer.sent}
    assert len(reasons) == len(producer.sent), "each record dead-lettered once"
    assert "Invalid layout" in reasons[0]
    assert all("before any init" in reasons[offset] for offset in range(10, 13)), "the ghost stream's packets"
    mic_packets = [r.offset for r in records if r.key == b"mic" and dict(r.headers)["kind"] != b"init"]
    assert all(offset in reasons for offset in mic_packets if offset < 10), "the poisoned stream until a good init"
    assert media.counters.desynchronised == 1
    assert media.handled_positions == {(TOPIC, 0): len(records) - 1}, "a commit passes every dead letter"


async def test_the_caller_keeps_committing_while_no_record_comes(media_dir: Path) -> None:
    """A worker with nothing to read must still check its offsets against the log (a replaced broker)."""
    records = await _wire_records(media_dir / "help.wav", "mic", limit=10)
    media = MediaConsumer(ScriptedConsumer(records), KeptProducer(), "fw.dead-letter", batch_records=16)  # type: ignore[arg-type]
    idle_calls: list[int] = []
    delivered: list[int] = []

    async def on_idle() -> None:
        idle_calls.append(len(delivered))

    try:
        async for decoded in media.items(idle_timeout=1.0, on_idle=on_idle):
            delivered.append(decoded.position.offset)
    finally:
        media.close()
    assert delivered and len(idle_calls) >= 3, "called on every empty fetch while idle"
    assert all(count == len(delivered) for count in idle_calls), "only once everything fetched was delivered"
