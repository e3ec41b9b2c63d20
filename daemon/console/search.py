"""The dashboard's side of search: `GET /api/search` and `GET /api/moments/<id>/similar`.

The web role reads the index the index role writes (`search.path`), with its own sentence
model, both opened at the first query (the model costs memory and a second or two to load;
a dashboard nobody searches never pays it). Queries run in a thread, one at a time per
process: the index connection and the model are not shared between threads. Request
parameters are checked here, and a wrong one is a 400 that says which and why.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from pydantic import TypeAdapter, ValidationError
from starlette.datastructures import QueryParams

from config.schema import Identifier, SearchConfig
from daemon.search.incidents import Incident, group_alerts
from daemon.search.index import MomentFilter, MomentIndex, Vectors
from daemon.search.query import RANKINGS, Found, Ranking, Searcher
from daemon.search.store import open_index
from detectors.text_embedding import load_embedder
from streams.models import Alert

MAX_RESULTS = 100
_NAME: TypeAdapter[str] = TypeAdapter(Identifier)


class BadSearch(ValueError):
    """A search request the API answers 400, with this message."""


class NoIndex(RuntimeError):
    """The index role has not written an index yet (503)."""


@dataclass(frozen=True, slots=True)
class SearchRequest:
    """A checked `/api/search` query."""

    query: str
    where: MomentFilter
    limit: int
    ranking: Ranking


def parse_search(params: QueryParams) -> SearchRequest:
    """`q` (required), `site`, `stream` (repeatable), `since_ms`, `until_ms`, `has_alert`, `n`, `ranking`."""
    query = params.get("q", "").strip()
    if not query:
        raise BadSearch("q is required, e.g. /api/search?q=someone+shouted+for+help")
    if len(query) > 500:
        raise BadSearch("q is longer than 500 characters")
    ranking = params.get("ranking") or "hybrid"
    if ranking not in RANKINGS:
        raise BadSearch(f"ranking must be one of {', '.join(RANKINGS)}, got {ranking[:40]!r}")
    return SearchRequest(query, parse_filter(params), _limit(params), ranking)


def parse_similar(params: QueryParams) -> tuple[MomentFilter, int]:
    """The filter and `n` of a similar-moments request, checked as a search's are."""
    return parse_filter(params), _limit(params)


def parse_filter(params: QueryParams) -> MomentFilter:
    """The metadata filter of a search or similar-moments request; an empty `stream` or `site` narrows nothing."""
    streams = tuple(stream for stream in params.getlist("stream") if stream)
    site = params.get("site") or None
    for name in (*streams, *([site] if site else [])):
        try:
            _NAME.validate_python(name)
        except ValidationError:
            raise BadSearch(f"not a stream or site name: {name[:40]!r}") from None
    has_alert = params.get("has_alert")
    if has_alert not in (None, "", "true", "false"):
        raise BadSearch("has_alert must be true or false")
    return MomentFilter(
        site=site,
        streams=streams,
        since_ms=_int(params, "since_ms", None, 0, 1 << 62),
        until_ms=_int(params, "until_ms", None, 0, 1 << 62),
        has_alert=None if not has_alert else has_alert == "true",
    )


def _limit(params: QueryParams) -> int:
    return int(_int(params, "n", 10, 1, MAX_RESULTS))


def _int(params: QueryParams, name: str, default: int | None, low: int, high: int) -> Any:
    raw = params.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadSearch(f"{name} must be an integer, got {raw[:40]!r}") from None
    if not low <= value <= high:
        raise BadSearch(f"{name} must be between {low} and {high}, got {value}")
    return value


class SearchService:
    """The index and model of this web process, opened at first use, queried one at a time."""

    def __init__(self, config: SearchConfig) -> None:
        self._config = config
        self._searcher: Searcher | None = None
        self._index: MomentIndex | None = None
        self._lock = asyncio.Lock()

    async def search(self, request: SearchRequest) -> list[dict[str, object]]:
        async with self._lock:
            searcher = await self._open()
            found = await asyncio.to_thread(
                searcher.search, request.query, request.where, request.limit, request.ranking
            )
        return [_result(item) for item in found]

    async def similar(self, moment_id: str, where: MomentFilter, limit: int) -> list[dict[str, object]] | None:
        """Moments like `moment_id` (None when there is no such moment)."""
        async with self._lock:
            searcher = await self._open()
            assert self._index is not None
            if not await asyncio.to_thread(self._index.get, [moment_id]):
                return None
            found = await asyncio.to_thread(searcher.similar, moment_id, where, limit)
        return [_result(item) for item in found]

    async def like_alert(self, alert: Alert, limit: int) -> list[dict[str, object]]:
        """The past moments most like the moments of an alert's streams at its window (query by example)."""
        async with self._lock:
            searcher = await self._open()
            assert self._index is not None
            results: list[Found] = []
            for stream in alert.streams:
                moment = await asyncio.to_thread(self._index.at, stream, alert.window_start)
                if moment is not None:
                    earlier = MomentFilter(until_ms=moment.start_ms)
                    results += await asyncio.to_thread(searcher.similar, moment.id, earlier, limit)
        results.sort(key=lambda found: -(found.rank.similarity or 0.0))
        return [_result(item) for item in results[:limit]]

    async def incidents(self, alerts: Sequence[Alert]) -> list[Incident]:
        """The alerts grouped into incidents (near-duplicates: `daemon.search.incidents`)."""
        async with self._lock:
            await self._open()
            index = self._index
            assert index is not None

            def vectors() -> list[Vectors | None]:
                out: list[Vectors | None] = []
                for alert in alerts:
                    moment = index.at(alert.streams[0], alert.window_start) if alert.streams else None
                    out.append(index.vector(moment.id) if moment is not None else None)
                return out

            found = await asyncio.to_thread(vectors)
        gap = round(self._config.incident_gap * 1000)
        return group_alerts(alerts, found, self._config.incident_similarity, gap)

    async def _open(self) -> Searcher:
        if self._searcher is None:
            path = Path(self._config.path) / "moments"
            if self._index is None:  # kept when the model failed to load: opened once
                try:
                    self._index = await asyncio.to_thread(open_index, path, True)
                except FileNotFoundError:  # no directory yet, or the index role has not made its database yet
                    raise NoIndex(f"no search index yet at {path}: the index role writes it") from None
            self._searcher = Searcher(self._index, await asyncio.to_thread(load_embedder), self._config)
        return self._searcher

    async def close(self) -> None:
        if self._index is not None:
            await asyncio.to_thread(self._index.close)


def _result(item: Found) -> dict[str, object]:
    snapshot = item.moment.snapshot
    return item.as_dict() | {"snapshot_url": f"/snapshots/{quote(snapshot)}" if snapshot else None}
