"""Asking the index: a text query → moments, ranked keyword + meaning; and moments like a given one.

What `fusewatch search`, `GET /api/search` and the dashboard's search box share. A query is
run twice under the same filter, as BM25 over the descriptions and as the nearest
embeddings, and the lists are fused (`daemon.search.rank`). A moment only the embedding
found must be at least `search.min_similarity` close to the query, so a query about
nothing that happened gets no results rather than the least unlike moments.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from config.schema import SearchConfig
from daemon.search.index import MomentFilter, MomentIndex
from daemon.search.rank import Fused, reciprocal_rank_fusion
from daemon.search.words import WORD, stems
from detectors.text_embedding import TextEmbedder
from streams.models import Moment

Ranking = Literal["hybrid", "keyword", "vector"]
RANKINGS: tuple[Ranking, ...] = ("keyword", "vector", "hybrid")
_CANDIDATES = 50  # per list, before fusion
# Left out of "why it matched" (they match nearly every description); the ranking still sees them.
_COMMON = frozenset(
    [
        "a",
        "an",
        "and",
        "at",
        "by",
        "for",
        "from",
        "i",
        "in",
        "is",
        "it",
        "of",
        "on",
        "or",
        "the",
        "to",
        "was",
        "were",
        "what",
        "you",
        "your",
    ]
)


@dataclass(frozen=True, slots=True)
class Found:
    """One result: the moment, its fused score, and why it matched."""

    moment: Moment
    rank: Fused
    matched: tuple[str, ...]  # the query's words found in the description

    def as_dict(self) -> dict[str, object]:
        """JSON-ready: the moment, the fused score, each list's rank, and why it matched."""
        return {
            "moment": self.moment.model_dump(mode="json"),
            "score": round(self.rank.score, 6),
            "keyword_rank": self.rank.keyword_rank,
            "vector_rank": self.rank.vector_rank,
            "similarity": None if self.rank.similarity is None else round(self.rank.similarity, 4),
            "why": self.why,
        }

    @property
    def why(self) -> str:
        reasons = []
        if self.matched:
            reasons.append("words: " + ", ".join(self.matched))
        if self.rank.similarity is not None and self.rank.vector_rank is not None:
            reasons.append(f"meaning {self.rank.similarity:.2f}")
        return "; ".join(reasons)


class Searcher:
    """Runs queries against a `MomentIndex` with a text embedder (blocking: call from a thread)."""

    def __init__(self, index: MomentIndex, embedder: TextEmbedder, config: SearchConfig) -> None:
        self._index = index
        self._embedder = embedder
        self._config = config

    def search(self, query: str, where: MomentFilter, limit: int = 10, ranking: Ranking = "hybrid") -> list[Found]:
        text = query.strip()
        if not text:
            return []
        keyword = self._index.keyword(text, where, _CANDIDATES) if ranking != "vector" else []
        vector = []
        if ranking != "keyword":
            nearest = self._index.nearest(self._embedder.embed([text])[0], where, _CANDIDATES)
            floor = self._config.min_similarity
            keyed = {hit.id for hit in keyword}
            vector = [hit for hit in nearest if hit.score >= floor or hit.id in keyed]
        fused = reciprocal_rank_fusion(keyword, vector)[:limit]
        return self._found(fused, text)

    def similar(self, moment_id: str, where: MomentFilter, limit: int = 10) -> list[Found]:
        """The moments nearest in meaning to one moment (query by example), itself left out."""
        vector = self._index.vector(moment_id)
        if vector is None:
            return []
        nearest = [hit for hit in self._index.nearest(vector, where, _CANDIDATES + 1) if hit.id != moment_id]
        return self._found(reciprocal_rank_fusion([], nearest)[:limit], "")

    def _found(self, fused: list[Fused], query: str) -> list[Found]:
        moments = {moment.id: moment for moment in self._index.get([f.id for f in fused])}
        found = [(rank, moments[rank.id]) for rank in fused if rank.id in moments]  # else forgotten meanwhile
        words = sorted({w.lower() for w in WORD.findall(query) if len(w) > 1} - _COMMON)  # not the s of "it's"
        if not words:
            return [Found(moment, rank, ()) for rank, moment in found]
        stemmed = stems(words + [moment.description for _, moment in found])
        asked = list(zip(words, stemmed[: len(words)], strict=True))
        return [
            Found(moment, rank, tuple(word for word, stem in asked if stem and stem <= described))
            for (rank, moment), described in zip(found, stemmed[len(words) :], strict=True)
        ]
