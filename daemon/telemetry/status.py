"""What every stream and role is doing right now, kept in Redis for `fusewatch status` and the dashboard.

Stages share nothing but Kafka and Redis, so the analyze workers write one small JSON
record per stream (frames per second, dropped frames, consumer lag, last window) and every
`fusewatch run` process one per role, each a few seconds apart. Readers treat a record
older than `STALE_MS` as a worker that stopped reporting.
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis.asyncio as aioredis
from pydantic import BaseModel, ConfigDict

from streams.models import Alert, Summary
from streams.redis_schema import RedisKeys, redis_text

STALE_MS = 15_000
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


def now_ms() -> int:
    return time.time_ns() // 1_000_000


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
        """Everything `fusewatch status` and the dashboard's stream panel show, as JSON-ready data."""
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
        roles = [json.loads(r.model_dump_json()) | {"stale": now - r.updated_ms > STALE_MS} for r in await self.roles()]
        return {"streams": rows, "roles": roles, "now_ms": now}
