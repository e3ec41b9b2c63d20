"""Reading the alert feed back out of Redis: listing, following, finding by id, acknowledging.

The fuse stage appends every alert once to the `…:alerts` stream (and remembers the stream
entry under `…:alerts:id:<alert id>` for as long as the entry is in the stream: the key is
deleted when `alerts_maxlen` trims the entry, see `streams.sinks`). `fusewatch alerts` and the dashboard both read
through `AlertStore`, so they always agree. Acknowledgements live in one hash, shared by
every operator, and are announced on `…:acks:live` so open dashboards update at once.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from pydantic import BaseModel, ConfigDict, ValidationError

from config.schema import RedisConfig
from streams.backoff import SERVICE_RETRY
from streams.models import Alert
from streams.redis_schema import REDIS_DOWN, RedisKeys, redis_client, redis_text

log = logging.getLogger(__name__)

_PAGE = 500


class Ack(BaseModel):
    """Who acknowledged an alert, and when."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    by: str
    at_ms: int
    note: str = ""


@dataclass(frozen=True)
class AlertFilter:
    """Which alerts to show: a site, an event, not before `since_ms` (wallclock of the window)."""

    site: str | None = None
    event: str | None = None
    since_ms: int | None = None

    def matches(self, alert: Alert) -> bool:
        return (
            (self.site is None or alert.site == self.site)
            and (self.event is None or alert.event == self.event)
            and (self.since_ms is None or alert.window_start >= self.since_ms)
        )


@dataclass(frozen=True)
class StoredAlert:
    """An alert with its stream entry id (the feed's cursor) and its acknowledgement."""

    entry: str
    alert: Alert
    ack: Ack | None = None

    def as_dict(self) -> dict[str, object]:
        data: dict[str, object] = json.loads(self.alert.model_dump_json())
        data["entry"] = self.entry
        data["ack"] = json.loads(self.ack.model_dump_json()) if self.ack else None
        return data


def feed_client(config: RedisConfig, block_ms: int = 1000) -> aioredis.Redis:
    """A client for following the feed: its reads may block `block_ms` on purpose."""
    return redis_client(config, socket_timeout=block_ms / 1000 + 10.0)


class AlertStore:
    """The Redis alert stream and acknowledgements under one key prefix."""

    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self._client = client
        self.keys = RedisKeys(prefix)
        self.invalid = 0

    def _parse(self, entry: Any, fields: Any) -> StoredAlert | None:
        try:
            return StoredAlert(redis_text(entry), Alert.model_validate_json(fields[b"alert"]))
        except (KeyError, ValidationError):
            self.invalid += 1
            return None

    async def _with_acks(self, alerts: list[StoredAlert]) -> list[StoredAlert]:
        if not alerts:
            return alerts
        raw = await self._client.hmget(self.keys.acks, [a.alert.id for a in alerts])
        return [
            StoredAlert(a.entry, a.alert, Ack.model_validate_json(r) if r else None)
            for a, r in zip(alerts, raw, strict=True)
        ]

    async def recent(self, limit: int = 50, where: AlertFilter = AlertFilter()) -> list[StoredAlert]:
        """The newest `limit` alerts that match, newest first."""
        found: list[StoredAlert] = []
        upper = "+"
        while len(found) < limit:
            page: Any = await self._client.xrevrange(self.keys.alerts, max=upper, count=_PAGE) or []
            for entry, fields in page:
                stored = self._parse(entry, fields)
                if stored is not None and where.matches(stored.alert):
                    found.append(stored)
                    if len(found) == limit:
                        break
            if len(page) < _PAGE:
                break
            upper = "(" + redis_text(page[-1][0])
            if where.since_ms is not None and all(
                (p := self._parse(e, f)) is None or p.alert.window_start < where.since_ms for e, f in page
            ):
                break
        return await self._with_acks(found)

    async def get(self, alert_id: str) -> StoredAlert | None:
        """One alert by its id (None when unknown or trimmed from the stream)."""
        entry: Any = await self._client.get(self.keys.alert_id(alert_id))
        if entry is None or redis_text(entry) == "-":
            return None
        entry = redis_text(entry)
        rows: Any = await self._client.xrange(self.keys.alerts, min=entry, max=entry, count=1) or []
        for row_entry, fields in rows:
            stored = self._parse(row_entry, fields)
            if stored is not None and stored.alert.id == alert_id:
                return (await self._with_acks([stored]))[0]
        return None

    async def follow(
        self, after: str = "$", where: AlertFilter = AlertFilter(), block_ms: int = 1000
    ) -> AsyncIterator[StoredAlert | None]:
        """Alerts appended after the entry `after` ('$': from now on); yields None when a block times out.

        Survives Redis restarts: it waits with backoff and resumes after the last entry it saw.
        The client needs a socket timeout above `block_ms` (see `feed_client`).
        """
        cursor = after
        if cursor == "$":
            last: Any = await self._client.xrevrange(self.keys.alerts, count=1) or []
            cursor = redis_text(last[0][0]) if last else "0-0"
        delays = SERVICE_RETRY.delays()
        while True:
            try:
                reply: Any = await self._client.xread({self.keys.alerts: cursor}, count=_PAGE, block=block_ms) or []
            except REDIS_DOWN as exc:
                log.warning("alert feed: redis unavailable (%s); retrying in %.1fs", exc, delays.next)
                await delays.wait()
                yield None
                continue
            delays.succeeded()
            if not reply:
                yield None
                continue
            for _, rows in reply:
                for entry, fields in rows:
                    cursor = redis_text(entry)
                    stored = self._parse(entry, fields)
                    if stored is not None and where.matches(stored.alert):
                        yield stored

    async def acknowledge(self, alert_id: str, by: str, note: str = "") -> Ack:
        """Record an acknowledgement (the latest wins) and announce it to every open dashboard."""
        ack = Ack(by=by, at_ms=time.time_ns() // 1_000_000, note=note)
        payload = ack.model_dump_json()
        await self._client.hset(self.keys.acks, alert_id, payload)
        await self._client.publish(self.keys.acks_live, json.dumps({"id": alert_id, "ack": json.loads(payload)}))
        return ack
