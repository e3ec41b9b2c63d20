"""Every Redis key fusewatch uses, and the scripts that write them: the one schema writers and readers share.

Writers: `streams.sinks.RedisOutputs` (alerts, latest and period summaries, rule state), the clips role, and
`daemon.telemetry.status.StatusStore` (stream and role status); readers: the console's
alert store, feed and dashboard, and `fusewatch status`. `P` is `redis.key_prefix`:

| key | type | written by | content |
|---|---|---|---|
| `P:alerts` | stream | fuse | one entry per alert: fields `alert` (JSON) and `id` |
| `P:alerts:id:<id>` | string | fuse | the entry id of that alert, as long as the entry is in the stream |
| `P:alerts:live` | pub/sub | fuse | the alert JSON, once per new alert |
| `P:summary:latest` | hash | fuse | `<stream>` → newest `Summary` JSON, `<stream>:start` → its window start |
| `P:clips:<alert id>` | hash | clips | stream → `Clip` JSON of the alert's clip; expires after `clips.store.max_age` |
| `P:summaries:<stream>:<period_s>` | sorted set | fuse | `PeriodSummary` JSON, score: period start |
| `P:acks`, `P:acks:live` | hash, pub/sub | console | alert id → acknowledgement JSON; announcements |
| `P:rules:<site>` | hash | fuse | event → rule state JSON; `__closed_upto__`, `__rolling__:<stream>` (below) |
| `P:status:streams` | hash | analyze | stream → `StreamStatus` JSON |
| `P:status:roles` | hash | run | `<host:pid>/<role>` → `RoleStatus` JSON (see below) |

A `fusewatch run` process rewrites its role records every 2 s and, stopping cleanly, once
more with `departed_ms` set. Every run process's report also deletes (HDEL) any process's
records departed, or silent, for longer than `ROLE_EXPIRY_MS` (10 min,
`daemon.telemetry.status`): Redis 7.0 has no per-field expiry (HEXPIRE needs 7.4).

In `P:rules:<site>`, `__closed_upto__` is the start of the site's last closed window and
`__rolling__:<stream>` the stream's open period summaries (`daemon.fuse.rolling`).
"""

from __future__ import annotations

import asyncio
import errno
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from config.schema import RedisConfig
from streams.backoff import SERVICE_RETRY

log = logging.getLogger(__name__)

# KEYS: alert id key, alerts stream, live channel.
# ARGV: alert JSON, MAXLEN, alert id, id key prefix, most entries trimmed in one call.
# The id key holds the stream entry id, so an alert is found by id without a scan, and it
# lives exactly as long as that entry: the script trims the stream itself (exactly, oldest
# first, at most TRIM_STEP entries a call, so a lowered MAXLEN never blocks Redis for long)
# and deletes the id keys of the entries it trims. An alert is a duplicate while its id key
# points at an entry still in the stream; a key left by an entry gone some other way (the
# stream deleted) does not block it. Entries carry their alert id in an `id` field; those
# written before it are read from the alert JSON.
TRIM_STEP = 1000
PUBLISH_ALERT = """
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
LATEST_SUMMARY = """
local current = redis.call('HGET', KEYS[1], ARGV[1] .. ':start')
if (not current) or tonumber(current) <= tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3], ARGV[1] .. ':start', ARGV[2])
  return 1
end
return 0
"""

# KEYS: the stream's sorted set for one period. ARGV: period start, PeriodSummary JSON, how many to keep.
# One summary per period start: a re-emitted one (a partial period completed, a window re-read after a
# restart) replaces the one before; then only the newest `keep` periods stay.
PERIOD_SUMMARY = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], ARGV[1], ARGV[1])
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -tonumber(ARGV[3]) - 1)
return 1
"""

REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, OSError)


class RedisKeys:
    """Key names under the configured prefix (the table above)."""

    def __init__(self, prefix: str) -> None:
        self.alerts = f"{prefix}:alerts"
        self.live = f"{prefix}:alerts:live"
        self.latest = f"{prefix}:summary:latest"
        self.summaries = f"{prefix}:summaries"
        self.acks = f"{prefix}:acks"
        self.acks_live = f"{prefix}:acks:live"
        self.rules = f"{prefix}:rules"
        self.status_streams = f"{prefix}:status:streams"
        self.status_roles = f"{prefix}:status:roles"
        self.clips = f"{prefix}:clips"

    def alert_id(self, alert_id: str) -> str:
        return f"{self.alert_id_prefix}{alert_id}"

    @property
    def alert_id_prefix(self) -> str:
        return f"{self.alerts}:id:"

    def rules_of(self, site: str) -> str:
        return f"{self.rules}:{site}"

    def clips_of(self, alert_id: str) -> str:
        return f"{self.clips}:{alert_id}"

    def period_summaries(self, stream: str, period_s: int) -> str:
        """The sorted set of a stream's summaries over `period_s`-long periods."""
        return f"{self.summaries}:{stream}:{period_s}"


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


def redis_text(value: bytes | str) -> str:
    """A Redis reply value as text (the clients here return bytes)."""
    return value.decode() if isinstance(value, bytes) else value


async def until_redis(step: Callable[[], Awaitable[None]], stop: asyncio.Event | None, role: str) -> None:
    """Run a step that needs Redis; while Redis is down, log and retry with backoff (until `stop`)."""
    delays = SERVICE_RETRY.delays()
    while True:
        try:
            await step()
            return
        except REDIS_DOWN as exc:
            if stop is not None and stop.is_set():
                raise
            log.warning("%s: redis unavailable (%s), retrying in %.1fs", role, exc, delays.next)
            await delays.wait()
