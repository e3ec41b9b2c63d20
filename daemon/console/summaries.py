"""Reading period summaries back out of Redis and showing them: `fusewatch summary` and `/api/summaries`.

The fuse stage keeps each stream's recent `PeriodSummary`s in a sorted set per period
(`P:summaries:<stream>:<period_s>`, scored by period start). An operator asks "what happened
on the lobby camera in the last hour": on a terminal each period is one block (time range,
what was seen, zones, what was said and when, loudness and loud moments, alerts); piped
elsewhere it is one JSON object per line.
"""

from __future__ import annotations

import sys
from datetime import datetime
from typing import Any, TextIO

import redis.asyncio as aioredis
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from config.schema import FusewatchConfig
from streams.models import PeriodSummary
from streams.redis_schema import RedisKeys, redis_client

MAX_PERIODS = 10_000
"""The most periods one read returns (the newest)."""


class SummaryStore:
    """A stream's period summaries in Redis under one key prefix."""

    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self._client = client
        self.keys = RedisKeys(prefix)
        self.invalid = 0

    async def recent(
        self, stream: str, period_s: int, since_ms: int | None = None, limit: int = MAX_PERIODS
    ) -> list[PeriodSummary]:
        """The newest `limit` periods that end after `since_ms` (all kept when None), oldest first."""
        lowest: int | str = "-inf" if since_ms is None else since_ms - period_s * 1000 + 1
        raw: Any = await self._client.zrevrangebyscore(
            self.keys.period_summaries(stream, period_s), "+inf", lowest, start=0, num=min(max(limit, 1), MAX_PERIODS)
        )
        found = []
        for value in reversed(raw or []):
            try:
                found.append(PeriodSummary.model_validate_json(value))
            except ValidationError:
                self.invalid += 1
        return found


def period_label(period_s: int) -> str:
    """`1 h`, `5 m`, `90 s`."""
    if period_s % 3600 == 0:
        return f"{period_s // 3600} h"
    if period_s % 60 == 0:
        return f"{period_s // 60} m"
    return f"{period_s} s"


def _time(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000).strftime("%H:%M:%S")


def _date_time(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S")


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _seen(summary: PeriodSummary) -> str | None:
    if summary.objects:
        return "; ".join(
            f"{escape(label)} max {stats.max_count} mean {stats.mean_count:.2f}, "
            f"{_plural(stats.new_tracks, 'new track')}"
            for label, stats in sorted(summary.objects.items(), key=lambda item: -item[1].mean_count)
        )
    return "nothing detected" if summary.video_windows else None


def _zones(summary: PeriodSummary) -> str | None:
    if not summary.zones:
        return None
    return "; ".join(
        f"{escape(name)} {zone.entries} {'entry' if zone.entries == 1 else 'entries'}, "
        f"at most {zone.max_occupancy:g} at once, longest stay {zone.dwell_s:.1f} s"
        for name, zone in sorted(summary.zones.items())
    )


def _sound(summary: PeriodSummary) -> str | None:
    loudness = summary.loudness
    if loudness is None:
        return None
    text = f"mean {loudness.mean_dbfs:.1f} dBFS, peak {loudness.peak_dbfs:.1f} dBFS"
    if loudness.loud_moments:
        moments = ", ".join(
            f"{_time(m.start_ms)}–{_time(m.end_ms)} ({m.loudness_dbfs:.1f} dBFS)" for m in loudness.loud_moments
        )
        text += f"; loud {moments}"
    return text


def summary_block(summary: PeriodSummary) -> str:
    """One period as rich markup for a terminal: a header line, then one line per kind of thing."""
    state = "" if summary.complete else ", so far"
    lines = [
        f"[bold]{escape(summary.stream)}[/]  {_date_time(summary.period_start)} – {_time(summary.period_end)}  "
        f"[dim]({period_label(summary.period_s)}, {_plural(summary.windows, 'window')}{state})[/]"
    ]
    rows: list[tuple[str, str | None]] = [("seen", _seen(summary)), ("zones", _zones(summary))]
    said = [f'{_time(line.start_ms)}–{_time(line.end_ms)}  "{escape(line.text)}"' for line in summary.speech]
    rows += [("said", text) for text in said]
    rows.append(("keywords", escape(", ".join(summary.keywords)) if summary.keywords else None))
    rows.append(("sound", _sound(summary)))
    rows += [
        ("alert", f"{_time(alert.window_start)}  {escape(alert.event)}  {alert.score:.2f}") for alert in summary.alerts
    ]
    previous = ""
    for name, text in rows:
        if text is None:
            continue
        shown = "" if name == previous else name
        lines.append(f"  [cyan]{shown:<9}[/] {text}")
        previous = name
    return "\n".join(lines)


class SummaryPrinter:
    """Prints period summaries as blocks on a terminal and JSON lines otherwise (or when asked)."""

    def __init__(self, stream: TextIO | None = None, json_lines: bool | None = None) -> None:
        self._stream = stream or sys.stdout
        self.json_lines = (not self._stream.isatty()) if json_lines is None else json_lines
        self._console = Console(file=self._stream, highlight=False, soft_wrap=True)

    def print(self, summary: PeriodSummary) -> None:
        if self.json_lines:
            self._stream.write(summary.model_dump_json() + "\n")
            self._stream.flush()
        else:
            self._console.print(summary_block(summary) + "\n")


async def show_summaries(
    config: FusewatchConfig, stream: str, period_s: int, since_ms: int | None, printer: SummaryPrinter
) -> int:
    """`fusewatch summary`: a stream's periods that end after `since_ms`, oldest first; returns how many."""
    client = redis_client(config.redis)
    try:
        found = await SummaryStore(client, config.redis.key_prefix).recent(stream, period_s, since_ms)
    finally:
        await client.aclose()
    for summary in found:
        printer.print(summary)
    return len(found)
