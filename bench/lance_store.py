"""The moment index on LanceDB (embedded): one Lance table with Lance's own full-text and vector indexes.

The candidate measured against `daemon.search.store` (SQLite FTS5 + usearch) by
`bench/search_stores.py`, and not chosen (`bench/README.md`, "Search store"); it lives here,
used by the benchmark only, so the daemon ships no store it does not run.

One table `moments` in the directory: metadata columns (site, stream, start, end,
has-alert), the description, the moment's JSON and its embedding (a fixed-size float32
list). Upserts are `merge_insert` on `id`. Keyword search is Lance's native inverted index
(BM25, English stemming, stop words removed) over the descriptions, created with the
table: rows written after the index was last updated are still searched (flat), and
`optimize()` folds them in, compacts the fragments each write adds and drops old
versions; it runs every `OPTIMIZE_EVERY` writes. A query is the words (ORed) plus the whole
query as a phrase, as in the SQLite store. Vector search is exact (a scan) until the table
holds `ANN_MIN` rows, then an IVF-HNSW (scalar-quantized) index is trained; filters are SQL
predicates applied before the search (`prefilter`), inside Lance, for both kinds of query.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import lancedb
import numpy as np
import pyarrow as pa
from lancedb import query as lance_query

from daemon.search.index import Hit, MomentFilter, Vectors
from streams.models import Moment

OPTIMIZE_EVERY = 50
ANN_MIN = 50_000
TABLE = "moments"


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def filter_predicate(where: MomentFilter) -> str | None:
    """The filter as a Lance SQL predicate, or None when it keeps everything."""
    clauses: list[str] = []
    if where.site is not None:
        clauses.append(f"site = {_literal(where.site)}")
    if where.streams:
        clauses.append(f"stream IN ({', '.join(_literal(s) for s in where.streams)})")
    if where.since_ms is not None:
        clauses.append(f"end_ms >= {int(where.since_ms)}")
    if where.until_ms is not None:
        clauses.append(f"start_ms < {int(where.until_ms)}")
    if where.has_alert is not None:
        clauses.append(f"has_alert = {'true' if where.has_alert else 'false'}")
    return " AND ".join(clauses) or None


class LanceMomentIndex:
    """`MomentIndex` on an embedded LanceDB table in `directory`."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self._db = lancedb.connect(str(directory))
        self._table: Any = self._db.open_table(TABLE) if TABLE in self._db.list_tables().tables else None
        self._writes = 0
        self._lock = threading.Lock()

    def _schema(self, dimensions: int) -> pa.Schema:
        return pa.schema(
            [
                ("id", pa.string()),
                ("site", pa.string()),
                ("stream", pa.string()),
                ("start_ms", pa.int64()),
                ("end_ms", pa.int64()),
                ("has_alert", pa.bool_()),
                ("description", pa.string()),
                ("moment", pa.string()),
                ("vector", pa.list_(pa.float32(), dimensions)),
            ]
        )

    def upsert(self, moments: Sequence[Moment], vectors: Vectors) -> None:
        if len(moments) != len(vectors):
            raise ValueError(f"{len(moments)} moments, {len(vectors)} vectors")
        if not moments:
            return
        last = {moment.id: i for i, moment in enumerate(moments)}  # merge_insert refuses a key twice
        rows = [moments[i] for i in last.values()]
        matrix = np.ascontiguousarray(vectors[list(last.values())], dtype=np.float32)
        schema = self._schema(matrix.shape[1])
        data = pa.table(
            {
                "id": [m.id for m in rows],
                "site": [m.site for m in rows],
                "stream": [m.stream for m in rows],
                "start_ms": [m.start_ms for m in rows],
                "end_ms": [m.end_ms for m in rows],
                "has_alert": [bool(m.alerts) for m in rows],
                "description": [m.description for m in rows],
                "moment": [m.model_dump_json() for m in rows],
                "vector": pa.FixedSizeListArray.from_arrays(pa.array(matrix.ravel()), matrix.shape[1]),
            },
            schema=schema,
        )
        with self._lock:
            if self._table is None:
                self._table = self._db.create_table(TABLE, data, schema=schema)
                self._table.create_fts_index("description", use_tantivy=False, with_position=True)
            else:
                self._table.merge_insert("id").when_matched_update_all().when_not_matched_insert_all().execute(data)
            self._writes += 1
            if self._writes % OPTIMIZE_EVERY == 0:
                self._optimize()

    def _optimize(self) -> None:
        if self._table is None:
            return
        if self._table.count_rows() >= ANN_MIN and not any(
            index.index_type.startswith("IVF") for index in self._table.list_indices()
        ):
            self._table.create_index(metric="cosine", vector_column_name="vector", index_type="IVF_HNSW_SQ")
        self._table.optimize(cleanup_older_than=timedelta(0))

    def optimize(self) -> None:
        """Fold recent writes into the indexes, compact, drop old versions (also every `OPTIMIZE_EVERY` writes)."""
        with self._lock:
            self._optimize()

    def keyword(self, query: str, where: MomentFilter, k: int) -> list[Hit]:
        if self._table is None or k <= 0 or not any(ch.isalnum() for ch in query):
            return []
        queries: Any = lance_query  # its query models type every option as required; they have defaults
        should = queries.Occur.SHOULD
        text = queries.BooleanQuery(
            [(should, queries.MatchQuery(query, "description")), (should, queries.PhraseQuery(query, "description"))]
        )
        search = self._table.search(text, query_type="fts")
        predicate = filter_predicate(where)
        if predicate:
            search = search.where(predicate, prefilter=True)
        with self._lock:
            rows = search.limit(k).select(["id"]).to_list()
        return [Hit(id=row["id"], score=float(row["_score"])) for row in rows]

    def nearest(self, vector: Vectors, where: MomentFilter, k: int) -> list[Hit]:
        if self._table is None or k <= 0:
            return []
        query = np.asarray(vector, dtype=np.float32).reshape(-1)
        search = self._table.search(query, vector_column_name="vector").distance_type("cosine")
        predicate = filter_predicate(where)
        if predicate:
            search = search.where(predicate, prefilter=True)
        with self._lock:
            rows = search.limit(k).select(["id"]).to_list()
        return [Hit(id=row["id"], score=1.0 - float(row["_distance"])) for row in rows]

    def _rows(self, ids: Sequence[str], column: str) -> dict[str, Any]:
        if self._table is None or not ids:
            return {}
        found: dict[str, Any] = {}
        with self._lock:
            for first in range(0, len(ids), 500):
                chunk = ids[first : first + 500]
                predicate = f"id IN ({', '.join(_literal(i) for i in chunk)})"
                for row in self._table.search().where(predicate).select(["id", column]).limit(None).to_list():
                    found[row["id"]] = row[column]
        return found

    def get(self, ids: Sequence[str]) -> list[Moment]:
        found = self._rows(ids, "moment")
        return [Moment.model_validate_json(found[i]) for i in ids if i in found]

    def vector(self, moment_id: str) -> Vectors | None:
        found = self._rows([moment_id], "vector")
        return np.asarray(found[moment_id], dtype=np.float32) if moment_id in found else None

    def at(self, stream: str, time_ms: int) -> Moment | None:
        if self._table is None:
            return None
        quoted = stream.replace("'", "''")
        condition = f"stream = '{quoted}' AND start_ms <= {int(time_ms)} AND end_ms > {int(time_ms)}"
        with self._lock:
            rows = self._table.search().where(condition).limit(1).to_list()
        return Moment.model_validate_json(rows[0]["moment"]) if rows else None

    def delete(self, ids: Sequence[str]) -> None:
        if self._table is None or not ids:
            return
        quoted = ", ".join("'" + moment_id.replace("'", "''") + "'" for moment_id in ids)
        with self._lock:
            self._table.delete(f"id IN ({quoted})")

    def delete_before(self, end_ms: int) -> int:
        if self._table is None:
            return 0
        with self._lock:
            gone = int(self._table.count_rows(f"end_ms < {int(end_ms)}"))
            if gone:
                self._table.delete(f"end_ms < {int(end_ms)}")
            return gone

    def count(self) -> int:
        with self._lock:
            return 0 if self._table is None else int(self._table.count_rows())

    def close(self) -> None:
        """Nothing is held open between calls: every write is a committed Lance version."""
