"""Where alerts and summaries go: Redis (operators) and Kafka (downstream consumers).

Redis writes are idempotent: one Lua script appends an alert to the `…:alerts` stream and
publishes it on `…:alerts:live` only if its id is not in the stream yet, so a window
processed twice never shows twice while its alert is kept. The id → entry keys are trimmed
with the stream (`alerts_maxlen`): there are never more of them than alerts kept. When
Redis is unreachable, outputs wait in a bounded buffer (counted; the oldest is dropped only
when the buffer is full) and are written, in order, as soon as it answers again. Kafka
alerts are keyed by alert id so downstream consumers can deduplicate too.
"""

from __future__ import annotations

import asyncio
import errno
import logging
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from config.schema import KafkaConfig, RedisConfig
from streams.backoff import SERVICE_RETRY, Backoff
from streams.kafka import PendingAcks
from streams.models import Alert, Summary

log = logging.getLogger(__name__)

# KEYS: alert id key, alerts stream, live channel.
# ARGV: alert JSON, MAXLEN, alert id, id key prefix, most entries trimmed in one call.
# The id key holds the stream entry id, so an alert is found by id without a scan, and it
# lives exactly as long as that entry: the script trims the stream itself (exactly, oldest
# first, at most _TRIM_STEP entries a call, so a lowered MAXLEN never blocks Redis for long)
# and deletes the id keys of the entries it trims. An alert is a duplicate while its id key
# points at an entry still in the stream; a key left by an entry gone some other way (the
# stream deleted) does not block it. Entries carry their alert id in an `id` field; those
# written before it are read from the alert JSON.
_TRIM_STEP = 1000
_PUBLISH_ALERT = """
local function still_there(entry)
  if not entry then return false end
  local rows = redis.pcall('XRANGE', KEYS[2], entry, entry)
  return type(rows) == 'table' and rows.err == nil and #rows > 0
end
if still_there(redis.call('GET', KEYS[1])) then
  return 0
end
local surplus = redis.call('XLEN', KEYS[2]) + 1 - tonumber(ARGV[2])
if surplus > 0 then
  local oldest = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', math.min(surplus, tonumber(ARGV[5])))
  for _, row in ipairs(oldest) do
    local fields, id = row[2], nil
    for i = 1, #fields, 2 do
      if fields[i] == 'id' then id = fields[i + 1] end
    end
    if not id then
      for i = 1, #fields, 2 do
        if fields[i] == 'alert' then
          local ok, alert = pcall(cjson.decode, fields[i + 1])
          if ok and type(alert) == 'table' and type(alert.id) == 'string' then id = alert.id end
        end
      end
    end
    if id and redis.call('GET', ARGV[4] .. id) == row[1] then
      redis.call('DEL', ARGV[4] .. id)
    end
  end
  redis.call('XTRIM', KEYS[2], 'MAXLEN', '=', redis.call('XLEN', KEYS[2]) - #oldest)
end
local entry = redis.call('XADD', KEYS[2], '*', 'alert', ARGV[1], 'id', ARGV[3])
redis.call('SET', KEYS[1], entry)
redis.call('PUBLISH', KEYS[3], ARGV[1])
return 1
"""
# KEYS: latest-summary hash. ARGV: stream, window_start, summary JSON. Only newer windows replace.
_LATEST_SUMMARY = """
local current = redis.call('HGET', KEYS[1], ARGV[1] .. ':start')
if (not current) or tonumber(current) <= tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3], ARGV[1] .. ':start', ARGV[2])
  return 1
end
return 0
"""

REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, OSError)


@dataclass
class OutputCounters:
    """Exported as metrics."""

    alerts_published: int = 0
    alerts_duplicate: int = 0
    summaries: int = 0
    buffered: int = 0
    buffer_dropped: int = 0
    redis_errors: int = 0


class RedisKeys:
    """Key names under the configured prefix."""

    def __init__(self, prefix: str) -> None:
        self.alerts = f"{prefix}:alerts"
        self.live = f"{prefix}:alerts:live"
        self.latest = f"{prefix}:summary:latest"
        self.acks = f"{prefix}:acks"
        self.acks_live = f"{prefix}:acks:live"
        self.rules = f"{prefix}:rules"

    def alert_id(self, alert_id: str) -> str:
        return f"{self.alert_id_prefix}{alert_id}"

    @property
    def alert_id_prefix(self) -> str:
        return f"{self.alerts}:id:"


def redis_client(config: RedisConfig, socket_timeout: float = 2.0) -> aioredis.Redis:
    """An asyncio Redis client from the config: TLS with rediss:// (CA bundle, client certificate),
    ACL user and password.

    `socket_timeout` bounds every reply; blocking reads (XREAD BLOCK) need it above their block time.
    With rediss://, the server's certificate must chain to `ssl_ca_certs` (or the system's CAs)
    and name the host, else connecting raises a ConnectionError naming CERTIFICATE_VERIFY_FAILED;
    a server that requires a client certificate resets a connection without one. A configured
    TLS file that is missing raises FileNotFoundError naming the setting here, not a bare
    "No such file" at the first connection.
    """
    password = config.password.get_secret_value() if config.password else None
    tls: dict[str, Any] = {}
    for setting in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile"):
        path = getattr(config, setting)
        if path is not None:
            if not Path(path).is_file():
                raise FileNotFoundError(errno.ENOENT, f"redis.{setting}: no such file", path)
            tls[setting] = path
    client: aioredis.Redis = aioredis.Redis.from_url(
        config.url,
        username=config.username,
        password=password,
        socket_timeout=socket_timeout,
        socket_connect_timeout=2.0,
        decode_responses=False,
        **tls,
    )
    return client


class RedisOutputs:
    """Alerts, latest summaries and rule state in Redis, buffered while Redis is down."""

    def __init__(self, config: RedisConfig, client: aioredis.Redis | None = None) -> None:
        self._config = config
        self._client = client or redis_client(config)
        self.keys = RedisKeys(config.key_prefix)
        self._buffer: deque[tuple[str, tuple[Any, ...]]] = deque()
        self._alert_script = self._client.register_script(_PUBLISH_ALERT)
        self._summary_script = self._client.register_script(_LATEST_SUMMARY)
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
        self._enqueue("alert", (alert,))
        await self.flush(raise_on_error=False)

    async def publish_summary(self, summary: Summary) -> None:
        self._enqueue("summary", (summary,))
        await self.flush(raise_on_error=False)

    async def save_rule_state(self, site: str, event: str, state_json: str) -> None:
        self._enqueue("rule", (site, event, state_json))
        await self.flush(raise_on_error=False)

    async def load_rule_states(self, site: str) -> dict[str, str]:
        raw = await self._client.hgetall(f"{self.keys.rules}:{site}")
        return {redis_text(k): redis_text(v) for k, v in raw.items()}

    def _enqueue(self, kind: str, args: tuple[Any, ...]) -> None:
        if len(self._buffer) >= self._config.buffer_max:
            self._buffer.popleft()
            self.counters.buffer_dropped += 1
            log.error("redis output buffer full (%d): dropped the oldest output", self._config.buffer_max)
        self._buffer.append((kind, args))

    async def flush(self, raise_on_error: bool = True) -> bool:
        """Write everything buffered, in order; False (or raise) if Redis is still unreachable."""
        while self._buffer:
            kind, args = self._buffer[0]
            try:
                await self._write(kind, args)
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

    async def _write(self, kind: str, args: tuple[Any, ...]) -> None:
        if kind == "alert":
            alert: Alert = args[0]
            payload = alert.model_dump_json()
            added = await self._alert_script(
                keys=[self.keys.alert_id(alert.id), self.keys.alerts, self.keys.live],
                args=[payload, self._config.alerts_maxlen, alert.id, self.keys.alert_id_prefix, _TRIM_STEP],
            )
            if added:
                self.counters.alerts_published += 1
            else:
                self.counters.alerts_duplicate += 1
        elif kind == "summary":
            summary: Summary = args[0]
            await self._summary_script(
                keys=[self.keys.latest], args=[summary.stream, summary.window_start, summary.model_dump_json()]
            )
            self.counters.summaries += 1
        else:
            site, event, state_json = args
            await self._client.hset(f"{self.keys.rules}:{site}", event, state_json)


def redis_text(value: bytes | str) -> str:
    """A Redis reply value as text (the clients here return bytes)."""
    return value.decode() if isinstance(value, bytes) else value


class KafkaOutputs:
    """`fw.alerts` keyed by alert id and `fw.summaries` keyed by stream; `flush` awaits the acks."""

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

    async def flush(self) -> None:
        await self._acks.wait()
