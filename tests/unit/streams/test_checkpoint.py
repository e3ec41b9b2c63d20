"""The `Checkpoint` over a scripted consumer: flush first, the lowest hold wins, offsets beyond the log reset."""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError

from streams.checkpoint import Checkpoint, merge_offsets

P0, P1 = TopicPartition("fw.media", 0), TopicPartition("fw.media", 1)


class LogConsumer:
    """Assignment, log ends and positions as a broker would give them; records commits and seeks."""

    def __init__(self, ends: dict[TopicPartition, int]) -> None:
        self.ends = ends
        self.positions = dict.fromkeys(ends, 0)
        self.commits: list[dict[TopicPartition, int]] = []
        self.sought: list[TopicPartition] = []
        self.down = False
        self.unfetched: set[TopicPartition] = set()

    def assignment(self) -> set[TopicPartition]:
        return set(self.ends)

    def highwater(self, tp: TopicPartition) -> int | None:
        """The log end of the latest fetch response (None before the first)."""
        return None if tp in self.unfetched else self.ends[tp]

    async def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        if self.down:
            raise KafkaConnectionError("Connection at 127.0.0.1:19092 closed")
        return {tp: self.ends[tp] for tp in partitions}

    async def position(self, tp: TopicPartition) -> int:
        return self.positions[tp]

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(dict(offsets))

    async def seek_to_beginning(self, *partitions: TopicPartition) -> None:
        self.sought += partitions
        for tp in partitions:
            self.positions[tp] = 0

    async def beginning_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        return dict.fromkeys(partitions, 0)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _checkpoint(consumer: Any, **options: Any) -> tuple[Checkpoint, list[str], list[set[TopicPartition]]]:
    steps: list[str] = []
    released: list[set[TopicPartition]] = []

    async def flush() -> bool:
        steps.append("flush")
        return options.pop("flush_ok", True)

    checkpoint = Checkpoint(consumer, "analyze", flush=flush, release=released.append, **options)
    return checkpoint, steps, released


def test_merge_takes_the_lowest_hold_per_partition() -> None:
    merged = merge_offsets({("t", 0): 99, ("t", 1): 5}, {("t", 0): 40}, {("t", 0): 60, ("t", 2): 7})
    assert merged == {TopicPartition("t", 0): 40, TopicPartition("t", 1): 6, TopicPartition("t", 2): 7}


async def test_commit_flushes_first_and_passes_no_hold() -> None:
    consumer = LogConsumer({P0: 500, P1: 500})
    holds = {("fw.media", 0): 120}
    checkpoint, steps, _ = _checkpoint(consumer, holds=[lambda: holds], progress=[lambda: {("fw.media", 1): 300}])
    checkpoint.processed("fw.media", 0, 199)
    await checkpoint.commit()
    assert steps == ["flush"]
    assert consumer.commits == [{P0: 120, P1: 301}]


async def test_a_refused_flush_commits_nothing() -> None:
    consumer = LogConsumer({P0: 500})

    async def refuse() -> bool:
        return False

    checkpoint = Checkpoint(consumer, "fuse", flush=refuse)
    checkpoint.processed("fw.media", 0, 10)
    await checkpoint.commit()
    assert consumer.commits == [] and checkpoint.counters.skipped == 1


async def test_an_offset_beyond_the_log_end_is_reset_to_earliest_and_forgotten(
    caplog: pytest.LogCaptureFixture,
) -> None:
    consumer = LogConsumer({P0: 3490, P1: 9000})
    checkpoint, _, released = _checkpoint(consumer)
    checkpoint.processed("fw.media", 0, 8787)  # read before the broker was replaced
    checkpoint.processed("fw.media", 1, 8000)
    await checkpoint.commit()
    assert checkpoint.counters.offset_resets == 1 and released == [{P0}]
    assert consumer.sought == [P0]
    assert consumer.commits == [{P0: 0}, {P1: 8001}], "the stale offset is never committed into the new log"
    assert "fw.media[0] is at offset 8788 but its log ends at 3490" in caplog.text
    assert checkpoint.positions == {("fw.media", 1): 8000}


async def test_a_position_beyond_the_log_end_with_nothing_processed_is_reset_too() -> None:
    consumer = LogConsumer({P0: 10})
    consumer.positions[P0] = 8788  # a restarted worker given the stale committed offset
    checkpoint, _, released = _checkpoint(consumer)
    await checkpoint.commit()
    assert released == [{P0}] and consumer.positions[P0] == 0


async def test_broker_down_and_a_stalled_partition_show_in_health() -> None:
    consumer = LogConsumer({P0: 100})
    clock = Clock()
    checkpoint, _, _ = _checkpoint(consumer, clock=clock, stall_after=30.0)
    checkpoint.processed("fw.media", 0, 49)
    await checkpoint.commit()
    assert checkpoint.health.broker == "ok" and checkpoint.health.stalled == []
    consumer.ends[P0] = 200  # the log grows, nothing is processed
    clock.now += 31
    await checkpoint.commit()
    assert checkpoint.health.stalled == ["fw.media[0]"]
    checkpoint.processed("fw.media", 0, 120)
    await checkpoint.commit()
    assert checkpoint.health.stalled == []
    consumer.down = True
    commits = len(consumer.commits)
    await checkpoint.commit()
    assert checkpoint.health.broker.startswith("KafkaConnectionError") and len(consumer.commits) == commits


async def test_only_the_fetched_high_watermark_judges_an_offset_beyond_the_log() -> None:
    consumer = LogConsumer({P0: 3490})
    consumer.unfetched.add(P0)
    checkpoint, _, released = _checkpoint(consumer)
    checkpoint.processed("fw.media", 0, 8787)
    await checkpoint.commit()
    assert released == [] and consumer.commits == [{P0: 8788}], "not judged before the partition was fetched"
    consumer.unfetched.clear()
    await checkpoint.commit()
    assert released == [{P0}] and consumer.commits[-1] == {P0: 0}


async def test_a_list_offsets_answer_short_of_the_fetched_end_resets_nothing() -> None:
    """The embedded broker answers ListOffsets with the last batch's base offset + 1."""
    consumer = LogConsumer({P0: 2081})
    checkpoint, _, released = _checkpoint(consumer)
    checkpoint.processed("fw.media", 0, 2080)

    async def short(partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        return dict.fromkeys(partitions, 2078)

    consumer.end_offsets = short  # type: ignore[method-assign]
    await checkpoint.commit()
    assert released == [] and checkpoint.counters.offset_resets == 0
    assert consumer.commits == [{P0: 2081}]
