"""The terminal side of the alert feed and of the status view: `fusewatch alerts` and `fusewatch status`.

On a terminal an alert is one readable line (time, site, event, score, its streams, the
terms that made it fire and the stream of each, what was said); piped elsewhere it is one
JSON object per line, so `jq` and log shippers can take it.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from datetime import datetime
from typing import Any, TextIO

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from config.schema import FusewatchConfig
from daemon.console.alerts import AlertFilter, AlertStore, StoredAlert, feed_client
from daemon.telemetry.status import StatusStore
from streams.models import Alert
from streams.redis_schema import redis_client

_SEVERITY_STYLE = {
    "critical": "bold white on red",
    "high": "bold red",
    "medium": "yellow",
    "low": "cyan",
    "info": "dim",
}


def top_terms(alert: Alert, count: int = 3) -> str:
    """The terms that contributed most and the stream that gave each its value, e.g.
    `speech.keywords@lobby +0.60, video.person.count@lobby +0.40` (no `@` in alerts older than that)."""
    ranked = sorted((t for t in alert.terms if t.contribution > 0), key=lambda t: -t.contribution)[:count]
    return ", ".join(f"{t.signal}{f'@{t.stream}' if t.stream else ''} +{t.contribution:.2f}" for t in ranked)


def _clock(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S")


def ago(ms: int) -> str:
    """A duration for people: `12 s`, `7 min`, `3 h`, `2 d`."""
    seconds = max(ms, 0) // 1000
    for unit, size in (("d", 86_400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def role_state(role: dict[str, Any], now: int) -> str:
    """A role row's state as rich markup: its own while live; else when it left, in red when it
    stopped reporting without saying goodbye (crashed, killed or cut off from Redis)."""
    if role["live"]:
        return escape(role["state"])
    since = ago(now - role["gone_ms"])
    return f"[red]stopped reporting {since} ago[/]" if role["stale"] else f"[dim]departed {since} ago[/]"


def _share(part: int | None, whole: int | None) -> str:
    return f"{100 * (part or 0) / whole:.0f} %" if whole else "–"


def alert_line(alert: Alert, ack: str = "") -> str:
    """One alert as rich markup for a terminal."""
    style = _SEVERITY_STYLE.get(alert.severity, "")
    said = alert.evidence.transcript.strip()
    excerpt = f'  [italic]"{escape(said[:100])}{"…" if len(said) > 100 else ""}"[/]' if said else ""
    acked = f"  [green]✓ {escape(ack)}[/]" if ack else ""
    streams = escape(", ".join(alert.streams))
    return (
        f"{_clock(alert.window_start)}  {escape(alert.site)}  [{style}]{escape(alert.event)}[/]  "
        f"{alert.score:.2f}  [dim]{streams}[/]  {escape(top_terms(alert))}{excerpt}{acked}"
    )


class AlertPrinter:
    """Prints alerts as rich lines on a terminal and JSON lines otherwise (or when asked)."""

    def __init__(self, stream: TextIO | None = None, json_lines: bool | None = None) -> None:
        self._stream = stream or sys.stdout
        self.json_lines = (not self._stream.isatty()) if json_lines is None else json_lines
        self._console = Console(file=self._stream, highlight=False, soft_wrap=True)

    def print(self, stored: StoredAlert) -> None:
        if self.json_lines:
            self._stream.write(json.dumps(stored.as_dict(), ensure_ascii=False) + "\n")
            self._stream.flush()
        else:
            self._console.print(alert_line(stored.alert, stored.ack.by if stored.ack else ""))


async def show_alerts(
    config: FusewatchConfig,
    where: AlertFilter,
    limit: int,
    follow: bool,
    printer: AlertPrinter,
    stop: asyncio.Event | None = None,
) -> int:
    """`fusewatch alerts`: the newest `limit` alerts, oldest first; with `follow`, then every new one."""
    client = feed_client(config.redis)
    store = AlertStore(client, config.redis.key_prefix)
    try:
        recent = await store.recent(limit, where)
        for stored in reversed(recent):
            printer.print(stored)
        if not follow:
            return len(recent)
        after = recent[0].entry if recent else "$"
        shown = len(recent)
        async for new in store.follow(after, where):
            if stop is not None and stop.is_set():
                break
            if new is not None:
                printer.print(new)
                shown += 1
        return shown
    finally:
        await client.aclose()


def since_ms(duration_s: float) -> int:
    return int((time.time() - duration_s) * 1000)


async def read_status(config: FusewatchConfig) -> dict[str, Any]:
    client = redis_client(config.redis)
    try:
        return await StatusStore(client, config.redis.key_prefix).overview()
    finally:
        await client.aclose()


def status_tables(overview: dict[str, Any]) -> list[Table]:
    """`fusewatch status` on a terminal: one table of streams, one of roles (each role once
    unless several live processes run it; see `daemon.telemetry.status.role_rows`)."""
    now = overview["now_ms"]
    streams = Table(
        "stream", "fps", "dropped", "no motion", "lag", "last window", "last alert", "seen", "said", title="streams"
    )
    for row in overview["streams"]:
        status = row["status"] or {}
        summary = row["summary"] or {}
        last_window = status.get("last_window_end")
        age = f"{(now - last_window) / 1000:.0f} s ago" if last_window else "–"
        alert = row["last_alert"]
        seen = ", ".join(f"{v} {k}" for k, v in sorted(summary.get("objects", {}).items()))
        streams.add_row(
            row["stream"] + (" [red](not reporting)[/]" if row["stale"] else ""),
            f"{status['fps']:.1f}" if status else "–",
            str(status.get("frames_dropped", "–")),
            _share(status.get("frames_without_motion"), status.get("frames_analysed")),
            str(status.get("consumer_lag") if status.get("consumer_lag") is not None else "–"),
            age,
            f"{alert['event']} {_clock(alert['window_start'])}" if alert else "–",
            seen or "–",
            escape(summary.get("transcript", ""))[:60],
        )
    roles = Table("role", "process", "state", "restarts", "consumer", "last error", title="roles")
    for role in overview["roles"]:
        consumer = escape(role.get("consumer", ""))
        shown = consumer if consumer in ("", "ok") else f"[red]{consumer}[/]"
        roles.add_row(
            role["role"],
            role["process"],
            role_state(role, now),
            str(role["restarts"]),
            shown,
            escape(role["last_error"])[:80],
        )
    return [streams, roles]
