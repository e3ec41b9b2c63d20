"""Where alerts and summaries go: Redis (operators) and Kafka (downstream consumers).

Redis writes are idempotent: one Lua script (`streams.redis_schema`, with every key)
appends an alert to the `…:alerts` stream and publishes it on `…:alerts:live` only if its
id is not in the stream yet, so a window processed twice never shows twice while its alert
is kept. The id → entry keys are trimmed with the stream (`alerts_maxlen`): there are never
more of them than alerts kept. When Redis is unreachable, outputs wait in a bounded buffer
(counted; the oldest is dropped only when the buffer is full) and are written, in order, as
soon as it answers again. Kafka alerts are keyed by alert id so downstream consumers can
deduplicate too. Period summaries go to a sorted set per (stream, period) where one per
period start is kept (a re-emitted one replaces it), trimmed to the newest `keep`; on Kafka
they share `fw.summaries` with the per-window summaries, keyed by stream.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass

import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer

from config.schema import KafkaConfig, RedisConfig
from streams.backoff import SERVICE_RETRY, Backoff
from streams.kafka import PendingAcks
from streams.models import Alert, PeriodSummary, Summary
from streams.redis_schema import (
    LATEST_SUMMARY,
    PERIOD_SUMMARY,
    PUBLISH_ALERT,
    REDIS_DOWN,
    TRIM_STEP,
    RedisKeys,
    redis_client,
    redis_text,
)

log = logging.getLogger(__name__)


@dataclass
class OutputCounters:
    """Exported as metrics."""

    alerts_published: int = 0
    alerts_duplicate: int = 0
    summaries: int = 0
    buffered: int = 0
    buffer_dropped: int = 0
    redis_errors: int = 0


@dataclass(frozen=True, slots=True)
class _RuleState:
    site: str
    event: str
    state_json: str


_Pending = Alert | Summary | PeriodSummary | _RuleState
"""What waits in the buffer for Redis: each written by its own command."""


class RedisOutputs:
    """Alerts, latest and period summaries and rule state in Redis, buffered while Redis is down.

    `summaries_keep`: period summaries kept per stream and period (`summaries.keep`).
    """

    def __init__(self, config: RedisConfig, client: aioredis.Redis | None = None, summaries_keep: int = 1440) -> None:
        self._config = config
        self._summaries_keep = summaries_keep
        self._client = client or redis_client(config)
        self.keys = RedisKeys(config.key_prefix)
        self._buffer: deque[_Pending] = deque()
        self._alert_script = self._client.register_script(PUBLISH_ALERT)
        self._summary_script = self._client.register_script(LATEST_SUMMARY)
        self._period_script = self._client.register_script(PERIOD_SUMMARY)
        self.counters = OutputCounters()

    @property
    def client(self) -> aioredis.Redis:
        return self._client

    @property
    def pending(self) -> int:
        return len(self._buffer)

    async def close(self) -> None:
        await self._client.aclose()

    async def publish_alert(self, alert: Alert) -> None:
        self._enqueue(alert)
        await self.flush(raise_on_error=False)

    async def publish_summary(self, summary: Summary) -> None:
        self._enqueue(summary)
        await self.flush(raise_on_error=False)

    async def publish_period_summary(self, summary: PeriodSummary) -> None:
        self._enqueue(summary)
        await self.flush(raise_on_error=False)

    async def save_rule_state(self, site: str, event: str, state_json: str) -> None:
        self._enqueue(_RuleState(site, event, state_json))
        await self.flush(raise_on_error=False)

    async def load_rule_states(self, site: str) -> dict[str, str]:
        raw = await self._client.hgetall(self.keys.rules_of(site))
        return {redis_text(k): redis_text(v) for k, v in raw.items()}

    def _enqueue(self, output: _Pending) -> None:
        if len(self._buffer) >= self._config.buffer_max:
            self._buffer.popleft()
            self.counters.buffer_dropped += 1
            log.error("redis output buffer full (%d): dropped the oldest output", self._config.buffer_max)
        self._buffer.append(output)

    async def flush(self, raise_on_error: bool = True) -> bool:
        """Write everything buffered, in order; False (or raise) if Redis is still unreachable."""
        while self._buffer:
            try:
                await self._write(self._buffer[0])
            except REDIS_DOWN as exc:
                self.counters.redis_errors += 1
                self.counters.buffered = len(self._buffer)
                if raise_on_error:
                    raise
                log.warning("redis unavailable (%s): %d outputs buffered", exc, len(self._buffer))
                return False
            self._buffer.popleft()
        self.counters.buffered = 0
        return True

    async def flush_with_retry(self, stop: asyncio.Event | None = None, backoff: Backoff = SERVICE_RETRY) -> None:
        """Retry with exponential backoff until the buffer is written (or `stop` is set)."""
        delays = backoff.delays()
        while not await self.flush(raise_on_error=False):
            if stop is not None and stop.is_set():
                return
            await delays.wait()

    async def _write(self, output: _Pending) -> None:
        if isinstance(output, Alert):
            added = await self._alert_script(
                keys=[self.keys.alert_id(output.id), self.keys.alerts, self.keys.live],
                args=[
                    output.model_dump_json(),
                    self._config.alerts_maxlen,
                    output.id,
                    self.keys.alert_id_prefix,
                    TRIM_STEP,
                ],
            )
            if added:
                self.counters.alerts_published += 1
            else:
                self.counters.alerts_duplicate += 1
        elif isinstance(output, Summary):
            await self._summary_script(
                keys=[self.keys.latest], args=[output.stream, output.window_start, output.model_dump_json()]
            )
            self.counters.summaries += 1
        elif isinstance(output, PeriodSummary):
            await self._period_script(
                keys=[self.keys.period_summaries(output.stream, output.period_s)],
                args=[output.period_start, output.model_dump_json(), self._summaries_keep],
            )
        else:
            await self._client.hset(self.keys.rules_of(output.site), output.event, output.state_json)


class KafkaOutputs:
    """`fw.alerts` keyed by alert id and `fw.summaries` (window and period summaries) keyed by stream;
    `flush` awaits the acks."""

    def __init__(self, config: KafkaConfig, producer: AIOKafkaProducer) -> None:
        self._topics = config.topics
        self._producer = producer
        self._acks = PendingAcks()

    async def publish_alert(self, alert: Alert) -> None:
        self._acks.add(
            await self._producer.send(
                self._topics.alerts, key=alert.id.encode(), value=alert.model_dump_json().encode()
            )
        )

    async def publish_summary(self, summary: Summary) -> None:
        self._acks.add(
            await self._producer.send(
                self._topics.summaries, key=summary.stream.encode(), value=summary.model_dump_json().encode()
            )
        )

    async def publish_period_summary(self, summary: PeriodSummary) -> None:
        self._acks.add(
            await self._producer.send(
                self._topics.summaries, key=summary.stream.encode(), value=summary.model_dump_json().encode()
            )
        )

    async def flush(self) -> None:
        await self._acks.wait()
