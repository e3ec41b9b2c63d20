"""What the search needs of a moment index: one protocol, so the store is chosen by measurement.

A store keeps `Moment` documents with their description's embedding, replaces a moment
given again under the same id, answers a keyword (full-text, BM25) query and a nearest-
vector query, each under the same metadata filter, and forgets moments older than the
media retention. The hybrid ranking (`daemon.search.rank`) combines the two result lists;
the store only answers each.

Calls block (disk, native indexes): the async callers run them in a thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from detectors.base import Vectors as Vectors  # rows of unit-length float32 embeddings, in the moments' order
from streams.models import Moment


@dataclass(frozen=True, slots=True)
class MomentFilter:
    """Metadata every query can be narrowed by; empty means no narrowing."""

    site: str | None = None
    streams: tuple[str, ...] = ()
    since_ms: int | None = None  # the moment ends at or after it
    until_ms: int | None = None  # the moment starts before it
    has_alert: bool | None = None


@dataclass(frozen=True, slots=True)
class Hit:
    """One moment found by one ranking, with that ranking's score (higher is better)."""

    id: str
    score: float


class MomentIndex(Protocol):
    """A persistent index of moments with keyword and vector search under metadata filters."""

    def upsert(self, moments: Sequence[Moment], vectors: Vectors) -> None:
        """Add or replace (by `Moment.id`) moments; `vectors[i]` embeds `moments[i].description`."""
        ...

    def keyword(self, query: str, where: MomentFilter, k: int) -> list[Hit]:
        """Full-text matches of `query` in the descriptions, best first (BM25)."""
        ...

    def nearest(self, vector: Vectors, where: MomentFilter, k: int) -> list[Hit]:
        """The `k` moments whose embeddings are closest to `vector` (cosine), best first."""
        ...

    def get(self, ids: Sequence[str]) -> list[Moment]:
        """The moments of `ids` that exist, in the order asked."""
        ...

    def at(self, stream: str, time_ms: int) -> Moment | None:
        """The stream's moment that covers `time_ms` (start ≤ t < end), if any."""
        ...

    def vector(self, moment_id: str) -> Vectors | None:
        """The stored embedding of a moment (query by example), or None."""
        ...

    def delete(self, ids: Sequence[str]) -> None:
        """Forget these moments (a rebuilt block no longer makes them); unknown ids are no error."""
        ...

    def delete_before(self, end_ms: int) -> int:
        """Forget the moments that ended before `end_ms` (retention); how many went."""
        ...

    def count(self) -> int: ...

    def close(self) -> None: ...
