"""One owner of a consumer-group stage's at-least-once commits (analyze and fuse both use it).

A commit runs in numbered steps, as quix-streams' `Checkpoint` does, under one lock that a
rebalance's commit takes too:

1. flush the stage's outputs and wait for their acknowledgements (a flush may refuse: Redis
   down, so offsets stay where they are);
2. merge, per partition, the record after the last one processed with the positions the
   stage must not pass yet (the init of an unfinished window, the first record of an open
   one): the lowest wins;
3. check each offset against the partition's log: an offset beyond the log end means the
   topic was recreated or the broker replaced (its log starts again at 0). That partition
   is logged as an error, counted, forgotten by the stage and read again per the reset
   policy (`earliest` by default), instead of waiting silently for offsets that never come.
   The log end judged is the high watermark of the partition's latest fetch response, which
   aiokafka keeps for every fetch, empty ones included. A ListOffsets request is not used for
   this: the embedded broker (Tansu) answers it with the last batch's base offset + 1, short
   of the real end whenever that batch held several records, which would reset healthy
   partitions. A partition not fetched yet is judged at a later commit;
4. commit the partitions still assigned.

It also tells whether the broker answers and which partitions are stalled (their log grows
while nothing is processed), for `/readyz` and `fusewatch status`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from streams.kafka import CommitThenRelease, Revocations, commit_assigned

log = logging.getLogger(__name__)

Offsets = Mapping[tuple[str, int], int]
"""(topic, partition) → offset"""
ResetPolicy = Literal["earliest", "latest"]


def merge_offsets(processed: Offsets, *holds: Offsets) -> dict[TopicPartition, int]:
    """Per partition: the offset after the last processed record, lowered to every hold on it."""
    offsets = {TopicPartition(topic, part): offset + 1 for (topic, part), offset in processed.items()}
    for hold in holds:
        for (topic, part), offset in hold.items():
            tp = TopicPartition(topic, part)
            offsets[tp] = min(offsets.get(tp, offset), offset)
    return offsets


@dataclass
class CheckpointCounters:
    """Exported as metrics."""

    commits: int = 0
    skipped: int = 0  # the flush refused (outputs not acknowledged)
    offset_resets: int = 0
    revoked: int = 0


@dataclass
class _Progress:
    processed: int
    end: int
    since: float


@dataclass
class CheckpointHealth:
    """What readiness and status show of a stage's consumer."""

    broker: str = "unknown"  # "ok", or the error of the last log-end request
    stalled: list[str] = field(default_factory=list)  # "topic[partition]"


class Checkpoint:
    """Flush, merge, check against the log, commit; and the same on revocation (see module doc)."""

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        role: str,
        *,
        flush: Callable[[], Awaitable[bool]],
        progress: Iterable[Callable[[], Offsets]] = (),
        holds: Iterable[Callable[[], Offsets]] = (),
        release: Callable[[set[TopicPartition]], None] = lambda partitions: None,
        every: float = 1.0,
        reset: ResetPolicy = "earliest",
        stall_after: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._consumer = consumer
        self._role = role
        self._flush = flush
        self._progress_sources = list(progress)
        self._holds = list(holds)
        self._release = release
        self._every = every
        self._reset = reset
        self._stall_after = stall_after
        self._clock = clock
        self._last_commit = clock()
        self._processed: dict[tuple[str, int], int] = {}
        self._progress: dict[TopicPartition, _Progress] = {}
        self.lock = asyncio.Lock()
        self.revocations = Revocations()
        self.counters = CheckpointCounters()
        self.health = CheckpointHealth()

    # ------------------------------------------------------------------ what the stage tells it

    def processed(self, topic: str, partition: int, offset: int) -> None:
        """The record at `offset` is done with (its outputs may still be unacknowledged)."""
        key = (topic, partition)
        if offset > self._processed.get(key, -1):
            self._processed[key] = offset

    def processed_upto(self, positions: Offsets) -> None:
        for (topic, partition), offset in positions.items():
            self.processed(topic, partition, offset)

    @property
    def positions(self) -> dict[tuple[str, int], int]:
        """Per partition, the last record processed (for the consumer lag), `progress` sources included."""
        for source in self._progress_sources:
            self.processed_upto(source())
        return dict(self._processed)

    def listener(self) -> CommitThenRelease:
        """The rebalance listener: commit through the same steps, then forget the revoked partitions."""
        return CommitThenRelease(self._role, self.lock, self._commit_locked, self._forget)

    # ------------------------------------------------------------------ committing

    def due(self) -> bool:
        return self._clock() - self._last_commit >= self._every

    async def maybe_commit(self) -> None:
        if self.due():
            await self.commit()

    async def commit(self) -> None:
        async with self.lock:
            await self._commit_locked()

    async def _commit_locked(self) -> None:
        self._last_commit = self._clock()
        if not await self._flush():  # 1
            self.counters.skipped += 1
            return
        offsets = merge_offsets(self.positions, *(hold() for hold in self._holds))  # 2
        offsets = await self._within_log(offsets)  # 3
        await commit_assigned(self._consumer, offsets, self._role)  # 4
        self.counters.commits += 1

    async def _within_log(self, offsets: dict[TopicPartition, int]) -> dict[TopicPartition, int]:
        assigned = set(self._consumer.assignment())
        if not assigned:
            return offsets
        try:  # the broker answers (health) and the logs grow (stalls); see the module doc for the log end
            ends: dict[TopicPartition, int] = await asyncio.wait_for(self._consumer.end_offsets(list(assigned)), 5.0)
        except (KafkaError, TimeoutError, OSError) as exc:
            self.health.broker = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            log.warning("%s: log ends unknown (%s); not committing", self._role, self.health.broker)
            return {}
        self.health.broker = "ok"
        beyond: dict[TopicPartition, int] = {}
        fetched_ends: dict[TopicPartition, int] = {}
        for tp in assigned:
            end = self._consumer.highwater(tp)
            if end is None:
                continue
            fetched_ends[tp] = end
            at: int | None = offsets.get(tp)
            if at is None:
                try:
                    at = int(await asyncio.wait_for(self._consumer.position(tp), 1.0))
                except (KafkaError, TimeoutError):
                    continue
            if at > end:
                beyond[tp] = at
        self._watch_stalls(ends)
        if beyond:
            await self._reset_partitions(beyond, fetched_ends)
        return {tp: offset for tp, offset in offsets.items() if tp not in beyond}

    async def _reset_partitions(self, beyond: dict[TopicPartition, int], ends: Mapping[TopicPartition, int]) -> None:
        for tp, at in sorted(beyond.items()):
            log.error(
                "%s: %s[%d] is at offset %d but its log ends at %d: the topic was recreated or the broker "
                "replaced; reading it again from the %s offset",
                self._role,
                tp.topic,
                tp.partition,
                at,
                ends[tp],
                self._reset,
            )
        self.counters.offset_resets += len(beyond)
        self._forget(set(beyond))
        if self._reset == "earliest":
            await self._consumer.seek_to_beginning(*beyond)
            restart = await self._consumer.beginning_offsets(list(beyond))
        else:
            await self._consumer.seek_to_end(*beyond)
            restart = {tp: ends[tp] for tp in beyond}
        await commit_assigned(self._consumer, dict(restart), self._role)  # a restart must not read the old offset

    def _forget(self, partitions: set[TopicPartition]) -> None:
        self.revocations.revoke(partitions)
        for tp in partitions:
            self._processed.pop((tp.topic, tp.partition), None)
            self._progress.pop(tp, None)
        self.counters.revoked += len(partitions)
        self._release(partitions)

    def _watch_stalls(self, ends: Mapping[TopicPartition, int]) -> None:
        now = self._clock()
        stalled = []
        for tp, end in ends.items():
            processed = self._processed.get((tp.topic, tp.partition), -1)
            seen = self._progress.get(tp)
            if seen is None or processed != seen.processed or end <= processed + 1:
                self._progress[tp] = _Progress(processed, end, now)  # moving, or nothing to do
            elif end > seen.end and now - seen.since >= self._stall_after:
                stalled.append(f"{tp.topic}[{tp.partition}]")
        if stalled and stalled != self.health.stalled:
            log.error(
                "%s: stalled: %s grew for %.0f s while nothing was processed",
                self._role,
                ", ".join(sorted(stalled)),
                self._stall_after,
            )
        self.health.stalled = sorted(stalled)
