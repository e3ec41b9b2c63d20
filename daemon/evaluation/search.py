"""Search quality against labelled queries: recall@k and MRR per ranking (keyword, vector, hybrid).

A labelled query names the stream and the span of a recording its answer lies in; a result
is relevant when it is a moment of that stream overlapping the span. Per ranking:
recall@k is the share of queries with a relevant moment among the first k results (each
query has one answer span, so this is the hit rate at k), MRR the mean of 1 / the rank of
the first relevant result (0 when none is in the first `depth`). Used by the search test
and `bench/search.py`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from daemon.search.index import MomentFilter
from daemon.search.query import RANKINGS, Searcher


@dataclass(frozen=True, slots=True)
class LabelledQuery:
    """A query and where its answer is: a stream and a wallclock span (ms)."""

    query: str
    stream: str
    start_ms: int
    end_ms: int
    kind: str


@dataclass(frozen=True, slots=True)
class RankingScore:
    """How one ranking did on a query set."""

    ranking: str
    recall_at_k: float
    mrr: float
    queries: int
    first_ranks: tuple[int | None, ...]  # per query, the rank of its first relevant result


def load_queries(path: Path, wall_start_ms: Mapping[str, int]) -> list[LabelledQuery]:
    """The query set, its spans placed at each stream's replay wallclock (`stream` → ms of its t = 0)."""
    document = json.loads(path.read_text())
    return [
        LabelledQuery(
            query=item["query"],
            stream=item["stream"],
            start_ms=wall_start_ms[item["stream"]] + round(item["start"] * 1000),
            end_ms=wall_start_ms[item["stream"]] + round(item["end"] * 1000),
            kind=item.get("kind", ""),
        )
        for item in document["queries"]
    ]


def score(
    searcher: Searcher, queries: Sequence[LabelledQuery], k: int = 5, depth: int = 10, where: MomentFilter | None = None
) -> dict[str, RankingScore]:
    """Recall@k and MRR (within `depth`) of each ranking on the query set."""
    out: dict[str, RankingScore] = {}
    for ranking in RANKINGS:
        ranks: list[int | None] = []
        for labelled in queries:
            found = searcher.search(labelled.query, where or MomentFilter(), depth, ranking)
            ranks.append(
                next(
                    (
                        position
                        for position, item in enumerate(found, start=1)
                        if item.moment.stream == labelled.stream
                        and item.moment.start_ms < labelled.end_ms
                        and item.moment.end_ms > labelled.start_ms
                    ),
                    None,
                )
            )
        out[ranking] = RankingScore(
            ranking=ranking,
            recall_at_k=sum(1 for r in ranks if r is not None and r <= k) / len(queries),
            mrr=sum(1 / r for r in ranks if r is not None) / len(queries),
            queries=len(queries),
            first_ranks=tuple(ranks),
        )
    return out
