"""Hybrid ranking: keyword (BM25) and meaning (embedding) result lists fused by reciprocal rank.

BM25 finds the moments that contain the query's words ("help", "police") and misses those
that say it otherwise; the embedding finds moments that mean the same ("someone shouted")
and ranks word-for-word matches no higher than loose paraphrases. Reciprocal rank fusion
(Cormack et al., SIGIR 2009) adds 1 / (k + rank) over the lists a moment appears in: it
needs no score calibration between BM25 and cosine, and a moment high in both lists wins.
k = 60 is the paper's value, which damps the weight of the very first ranks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from daemon.search.index import Hit

RRF_K = 60


@dataclass(frozen=True, slots=True)
class Fused:
    """A moment's place in the fused ranking and in each list it came from (1-based ranks)."""

    id: str
    score: float
    keyword_rank: int | None
    vector_rank: int | None
    similarity: float | None


def reciprocal_rank_fusion(keyword: Sequence[Hit], vector: Sequence[Hit], k: int = RRF_K) -> list[Fused]:
    """Both lists fused, best first; ties broken by the keyword rank, then the id."""
    keyword_ranks = {hit.id: rank for rank, hit in enumerate(keyword, start=1)}
    vector_ranks = {hit.id: rank for rank, hit in enumerate(vector, start=1)}
    similarity = {hit.id: hit.score for hit in vector}
    fused = []
    for moment_id in keyword_ranks.keys() | vector_ranks.keys():
        ranks = [r for r in (keyword_ranks.get(moment_id), vector_ranks.get(moment_id)) if r is not None]
        fused.append(
            Fused(
                id=moment_id,
                score=sum(1.0 / (k + rank) for rank in ranks),
                keyword_rank=keyword_ranks.get(moment_id),
                vector_rank=vector_ranks.get(moment_id),
                similarity=similarity.get(moment_id),
            )
        )
    fused.sort(key=lambda f: (-f.score, f.keyword_rank or 1 << 30, f.id))
    return fused
