"""What every stream and role is doing right now, kept in Redis for `fusewatch status` and the dashboard.

Stages share nothing but Kafka and Redis, so the analyze workers write one small JSON
record per stream (frames per second, dropped frames, consumer lag, last window) and every
`fusewatch run` process one per role, each a few seconds apart. Readers treat a record
older than `STALE_MS` as a worker that stopped reporting.

Role records outlive their process (Redis keeps them), so a process leaving cleanly marks
its own `departed_ms`, readers show each role once (its live processes, or else the one
that left last, `role_rows`), and every `fusewatch run` deletes the records gone longer
than `ROLE_EXPIRY_MS` (`StatusStore.prune_roles`).
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import redis.asyncio as aioredis
from pydantic import BaseModel, ConfigDict, ValidationError

from streams.clock import NS_PER_MS
from streams.models import Alert, Summary
from streams.redis_schema import RedisKeys, redis_text

STALE_MS = 15_000
# A role record whose process departed (or went silent) longer ago than this is shown no
# more and deleted by the next `fusewatch run` report: Redis 7.0 has no per-field expiry
# (HEXPIRE needs 7.4), so the writers prune with HDEL.
ROLE_EXPIRY_MS = 600_000
# How far back `last alert per stream` looks in the alert stream.
_LAST_ALERT_SCAN = 2_000


class StreamStatus(BaseModel):
    """One stream as its analyze worker sees it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    stream: str
    site: str
    worker: str
    fps: float
    frames_decoded: int
    frames_analysed: int
    frames_dropped: int
    frames_without_motion: int = 0  # of the analysed ones: the detector did not see them, nothing moved
    consumer_lag: int | None
    last_window_end: int | None
    updated_ms: int


class RoleStatus(BaseModel):
    """One role of one `fusewatch run` process."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    role: str
    process: str
    state: str
    restarts: int
    last_error: str
    updated_ms: int
    # analyze/fuse: "ok", the broker's error, or "stalled: topic[partition], …" (log grows, nothing processed)
    consumer: str = ""
    # Set by the process's last report when it stops cleanly; absent while it runs (and in
    # records of versions before it: those go stale instead).
    departed_ms: int | None = None

    def gone_since(self, now: int) -> int | None:
        """When this record's process left: its departure, or its last report once that is
        older than `STALE_MS` (it vanished without a word); None while it is live."""
        if self.departed_ms is not None:
            return self.departed_ms
        return self.updated_ms if now - self.updated_ms > STALE_MS else None

    def expired(self, now: int) -> bool:
        """Gone longer than `ROLE_EXPIRY_MS`: no longer shown, and pruned by the writers."""
        gone = self.gone_since(now)
        return gone is not None and now - gone > ROLE_EXPIRY_MS


def now_ms() -> int:
    return time.time_ns() // NS_PER_MS


def role_rows(statuses: Iterable[RoleStatus], now: int) -> list[dict[str, Any]]:
    """The roles panel: per role, every live process as it reports itself; a role with no live
    process once, by the record that left last; records expired not at all. Sorted by role,
    then process. Each row is the record's JSON plus `live`, `gone_ms` (`gone_since`) and
    `stale` (gone without a departure mark: crashed, killed or cut off)."""
    by_role: dict[str, list[RoleStatus]] = defaultdict(list)
    for status in statuses:
        by_role[status.role].append(status)
    rows = []
    for role in sorted(by_role):
        live = [s for s in by_role[role] if s.gone_since(now) is None]
        gone = [s for s in by_role[role] if not s.expired(now)]
        if live:
            shown = sorted(live, key=lambda s: s.process)
        elif gone:
            shown = [max(gone, key=lambda s: (s.gone_since(now) or 0, s.process))]
        else:
            shown = []
        for status in shown:
            left = status.gone_since(now)
            rows.append(
                json.loads(status.model_dump_json())
                | {"live": left is None, "gone_ms": left, "stale": left is not None and status.departed_ms is None}
            )
    return rows


class StatusStore:
    """Writes and reads stream and role status, latest summaries and the last alert of every stream."""

    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self._client = client
        self.keys = RedisKeys(prefix)

    async def write_streams(self, statuses: list[StreamStatus]) -> None:
        if statuses:
            await self._client.hset(self.keys.status_streams, mapping={s.stream: s.model_dump_json() for s in statuses})

    async def write_roles(self, statuses: list[RoleStatus]) -> None:
        if statuses:
            await self._client.hset(
                self.keys.status_roles, mapping={f"{s.process}/{s.role}": s.model_dump_json() for s in statuses}
            )

    async def streams(self) -> list[StreamStatus]:
        raw = await self._client.hgetall(self.keys.status_streams)
        return sorted((StreamStatus.model_validate_json(v) for v in raw.values()), key=lambda s: s.stream)

    async def roles(self) -> list[RoleStatus]:
        raw = await self._client.hgetall(self.keys.status_roles)
        return sorted((RoleStatus.model_validate_json(v) for v in raw.values()), key=lambda s: (s.role, s.process))

    async def prune_roles(self) -> int:
        """Delete the role records gone longer than `ROLE_EXPIRY_MS` (of any process); how many.

        A record that does not parse (a newer version's) is left alone. A process writing its
        record again between the read and the delete (it was silent for the whole expiry, and
        resumed just then) loses it until its next report, 2 s later.
        """
        now = now_ms()
        expired = []
        for field, value in (await self._client.hgetall(self.keys.status_roles)).items():
            try:
                if RoleStatus.model_validate_json(value).expired(now):
                    expired.append(field)
            except ValidationError:
                continue
        if expired:
            await self._client.hdel(self.keys.status_roles, *expired)
        return len(expired)

    async def latest_summaries(self) -> dict[str, Summary]:
        raw = await self._client.hgetall(self.keys.latest)
        out = {}
        for key, value in raw.items():
            name = redis_text(key)
            if not name.endswith(":start"):
                out[name] = Summary.model_validate_json(value)
        return out

    async def last_alerts(self) -> dict[str, Alert]:
        """The newest alert that names each stream, from the recent end of the alert stream."""
        found: dict[str, Alert] = {}
        for _, fields in await self._client.xrevrange(self.keys.alerts, count=_LAST_ALERT_SCAN) or []:
            if not fields or b"alert" not in fields:
                continue
            alert = Alert.model_validate_json(fields[b"alert"])
            for stream in alert.streams:
                found.setdefault(stream, alert)
        return found

    async def overview(self) -> dict[str, Any]:
        """Everything `fusewatch status` and the dashboard's stream and role panels show, as JSON-ready data."""
        streams = await self.streams()
        summaries = await self.latest_summaries()
        last_alerts = await self.last_alerts()
        now = now_ms()
        names = sorted({s.stream for s in streams} | set(summaries))
        by_name = {s.stream: s for s in streams}
        rows = []
        for name in names:
            status = by_name.get(name)
            alert = last_alerts.get(name)
            summary = summaries.get(name)
            rows.append(
                {
                    "stream": name,
                    "status": json.loads(status.model_dump_json()) if status else None,
                    "stale": status is None or now - status.updated_ms > STALE_MS,
                    "summary": json.loads(summary.model_dump_json()) if summary else None,
                    "last_alert": {
                        "id": alert.id,
                        "event": alert.event,
                        "window_start": alert.window_start,
                        "score": alert.score,
                    }
                    if alert
                    else None,
                }
            )
        return {"streams": rows, "roles": role_rows(await self.roles(), now), "now_ms": now}
