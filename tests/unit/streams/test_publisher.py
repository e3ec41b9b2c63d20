"""`MediaPublisher` and `DeadLetters` say when the broker did not acknowledge records, instead of going on as if
it had."""

from __future__ import annotations

import asyncio
from fractions import Fraction
from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError

from config.schema import KafkaConfig
from streams.kafka import DeadLetters, MediaPublisher, SourcePosition, Unacknowledged
from streams.models import Packet
from streams.wire import WireRecord


class ScriptedProducer:
    """Acknowledges the first `good` sends; the broker goes away for the rest."""

    def __init__(self, good: int) -> None:
        self.good = good
        self.pending: list[asyncio.Future[Any]] = []

    async def send(
        self, topic: str, value: bytes | None, key: bytes | None, headers: Any, timestamp_ms: int | None = None
    ) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.pending.append(future)
        return future

    async def flush(self) -> None:
        for index, future in enumerate(self.pending):
            if not future.done():
                if index < self.good:
                    future.set_result(index)
                else:
                    future.set_exception(KafkaTimeoutError("broker went away"))


def _packet(seq: int) -> Packet:
    return Packet("cam", "video", b"\x00\x00\x01", seq * 3000, seq * 3000, Fraction(1, 90000), True, 0, seq)


async def test_flush_raises_with_the_number_of_records_the_broker_never_acknowledged() -> None:
    producer = ScriptedProducer(good=3)
    publisher = MediaPublisher(KafkaConfig(), producer=producer)  # type: ignore[arg-type]
    for seq in range(5):
        await publisher.publish(_packet(seq))
    with pytest.raises(Unacknowledged, match=r"^2 of 5 records were not acknowledged .*broker went away"):
        await publisher.flush()


async def test_a_source_cannot_go_on_publishing_after_a_send_failed() -> None:
    producer = ScriptedProducer(good=1)
    publisher = MediaPublisher(KafkaConfig(), producer=producer)  # type: ignore[arg-type]
    await publisher.publish(_packet(0))
    await publisher.publish(_packet(1))
    with pytest.raises(Unacknowledged):
        await publisher.flush()
    with pytest.raises(Unacknowledged, match=r"^1 of 2 records"):
        await publisher.publish(_packet(2))


async def test_everything_acknowledged_flushes_quietly() -> None:
    publisher = MediaPublisher(KafkaConfig(), producer=ScriptedProducer(good=10))  # type: ignore[arg-type]
    for seq in range(4):
        await publisher.publish(_packet(seq))
    await publisher.flush()
    assert publisher.sent == 4 and publisher.failed == 0


async def test_dead_letters_do_not_wait_for_each_ack_and_flush_raises_a_lost_one() -> None:
    producer = ScriptedProducer(good=2)
    dead = DeadLetters(producer, "fw.dead-letter", stage="decode")  # type: ignore[arg-type]
    for offset in range(3):
        await dead.send(
            WireRecord(b"cam", b"junk", [("kind", b"smell")]),
            SourcePosition("fw.media", 1, offset),
            "unknown kind 'smell'",
        )
    assert dead.count == 3 and not any(future.done() for future in producer.pending), "no send waited for its ack"
    flushing = asyncio.create_task(dead.flush())
    await asyncio.sleep(0)
    assert not flushing.done(), "flush waits for the broker"
    await producer.flush()
    with pytest.raises(KafkaTimeoutError):
        await flushing
    await dead.flush()  # a failed send is raised once, then forgotten
