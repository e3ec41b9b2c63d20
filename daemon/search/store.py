"""The moment index on one machine: SQLite (FTS5, BM25) for documents and keywords, usearch for vectors.

Chosen over LanceDB by `bench/search_stores.py` (figures and reasons in `bench/README.md`,
"Search store"; the plan for more than one machine in `docs/design.md` §13).

**Layout** of the index directory: `moments.sqlite` (WAL) holds each moment's JSON, its
metadata columns (site, stream, start, end, has-alert; B-tree indexes on them), its
embedding as a float32 BLOB, and an FTS5 table of the descriptions (Porter stemming,
Unicode folding, no diacritics) whose rowid is the moment's key; `vectors.usearch` is the
HNSW graph (cosine) over the same keys. SQLite is the source of truth: every write
transaction bumps a generation number and stamps the rows it writes with it. The graph is
saved with the generation it reflects (`vectors.json`, written after it) on close and at
most `SAVE_EVERY_S` after a write. At open a graph of an older generation (a crash, a kill)
is caught up: the rows written since are put again and the keys SQLite no longer has are
removed; a missing or unreadable graph is rebuilt from the BLOBs. So the two never disagree
after a restart. One process owns a directory (an exclusive `flock`); the calls block and
are serialised by a lock, callers run them in a thread.

**Readers** (`readonly=True`: the web role, `fusewatch search`, beside the index role that
writes) take no lock and open SQLite read-only. They load the graph file the writer last
saved, and load it again when the writer saves a newer one; what was written since (rows
of a later generation) is scored exactly from SQLite and overrides the graph's score, and a
moment deleted since is dropped because every graph hit is looked up in SQLite. So a reader
sees every committed write, at the cost of scoring at most `SAVE_EVERY_S` of writes exactly.

**Keyword search**: the query's words (common English stop words dropped when others are
left), each a quoted FTS5 term ORed together, plus the whole query as one phrase, so a
description holding the exact phrase gains that phrase's BM25 weight on top of its words'.
The metadata filter is a WHERE clause on the joined moments table, in the same statement.

**Vector search under a filter**: usearch's Python API has no filter predicate, so the
filter is counted in SQLite first. Without a filter, or with one that keeps most moments,
the graph is searched for more than `k` (`k` over the share kept, doubled until `k`
survivors are found) and the candidates are checked against the filter in SQLite. A
selective filter (at most `EXACT_LIMIT` moments) is answered exactly instead: those
moments' vectors are read from SQLite with them and scored by one matrix product, so a
narrow filter (one stream for an hour) never misses a neighbour that an over-fetch of the
graph would not reach.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

# usearch loads numkong's extension with RTLD_GLOBAL; an onnxruntime loaded after that binds to
# its symbols and dies of SIGSEGV on import (the VAD's, in any process that also searches).
# Loaded first, onnxruntime keeps its own. tests/unit/daemon/search/test_import_order.py
import onnxruntime  # noqa: F401
from usearch.index import Index

from daemon.search.index import Hit, MomentFilter, MomentIndex, Vectors
from daemon.search.words import STOP_WORDS, TOKENIZE, WORD
from detectors.base import available_cores
from streams.models import Moment

EXACT_LIMIT = 20_000
"""A filter keeping at most this many moments is answered by exact scoring of those moments."""
EXPANSION = 128
"""HNSW candidates kept while searching (usearch's default is 64): recall against query time."""
SAVE_EVERY_S = 600.0
"""The graph is saved at most this long after a write, so a crash replays at most that much."""
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS moments (
    key INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    site TEXT NOT NULL,
    stream TEXT NOT NULL,
    start_ms INTEGER NOT NULL,
    end_ms INTEGER NOT NULL,
    has_alert INTEGER NOT NULL,
    moment TEXT NOT NULL,
    vector BLOB NOT NULL,
    written INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS moments_written ON moments (written);
CREATE INDEX IF NOT EXISTS moments_stream ON moments (stream, start_ms);
CREATE INDEX IF NOT EXISTS moments_site ON moments (site, start_ms);
CREATE INDEX IF NOT EXISTS moments_end ON moments (end_ms);
CREATE VIRTUAL TABLE IF NOT EXISTS descriptions USING fts5 (
    description, tokenize = '{TOKENIZE}'
);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta VALUES ('generation', 0);
"""


def filter_sql(where: MomentFilter) -> tuple[str, list[Any]]:
    """The filter as a WHERE condition on `moments` (alias `m`) and its parameters; `1` when empty."""
    clauses: list[str] = []
    params: list[Any] = []
    if where.site is not None:
        clauses.append("m.site = ?")
        params.append(where.site)
    if where.streams:
        clauses.append(f"m.stream IN ({','.join('?' * len(where.streams))})")
        params.extend(where.streams)
    if where.since_ms is not None:
        clauses.append("m.end_ms >= ?")
        params.append(where.since_ms)
    if where.until_ms is not None:
        clauses.append("m.start_ms < ?")
        params.append(where.until_ms)
    if where.has_alert is not None:
        clauses.append("m.has_alert = ?")
        params.append(int(where.has_alert))
    return (" AND ".join(clauses) or "1"), params


def fts_query(text: str) -> str | None:
    """The FTS5 query for what an operator typed: each word, ORed, and the words as one phrase."""
    words = [word.lower() for word in WORD.findall(text)]
    if not words:
        return None
    telling = [word for word in words if word not in STOP_WORDS] or words
    terms = [f'"{word}"' for word in dict.fromkeys(telling)]
    if len(words) > 1:
        terms.insert(0, '"' + " ".join(words) + '"')
    return " OR ".join(terms)


class SqliteMomentIndex:
    """`MomentIndex` in one directory: SQLite + FTS5 for moments and keywords, a usearch HNSW graph for vectors."""

    def __init__(self, directory: Path, threads: int | None = None, readonly: bool = False) -> None:
        self._directory = directory
        self._threads = threads or available_cores()
        self._lock = threading.Lock()
        self._readonly = readonly
        self._graph: Index | None = None
        self._graph_generation = -1  # readers: the generation of the graph file loaded
        self._closed = False
        self._saved_at = time.monotonic()
        self._owner = None
        if readonly:
            database = directory / "moments.sqlite"
            if not database.is_file():
                raise FileNotFoundError(f"no moment index at {directory}")
            self._db = sqlite3.connect(
                f"file:{database}?mode=ro", uri=True, check_same_thread=False, isolation_level=None
            )
            self._reload_graph()
            return
        directory.mkdir(parents=True, exist_ok=True)
        self._owner = (directory / "lock").open("a")
        try:
            fcntl.flock(self._owner, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            self._owner.close()
            raise RuntimeError(f"{directory} is open in another process") from exc
        self._db = sqlite3.connect(directory / "moments.sqlite", check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = NORMAL")
        self._db.executescript(_SCHEMA)
        self._load_graph()

    # -- the graph file and its consistency with SQLite

    def _generation(self) -> int:
        return int(self._db.execute("SELECT value FROM meta WHERE name = 'generation'").fetchone()[0])

    def _dimensions(self) -> int | None:
        row = self._db.execute("SELECT length(vector) FROM moments LIMIT 1").fetchone()
        return None if row is None else int(row[0]) // 4

    def _new_graph(self, dimensions: int) -> Index:
        return Index(ndim=dimensions, metric="cos", dtype="f32", expansion_search=EXPANSION)

    def _load_graph(self) -> None:
        """The saved graph brought up to date with SQLite, or, without a usable one, a graph built anew."""
        dimensions = self._dimensions()
        if dimensions is None:
            return
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError, RuntimeError):
            state = json.loads((self._directory / "vectors.json").read_text())
            if state["generation"] <= self._generation() and state["dimensions"] == dimensions:
                graph = self._new_graph(dimensions)
                graph.load(str(self._directory / "vectors.usearch"))
                self._catch_up(graph, int(state["generation"]), dimensions)
                if len(graph) == self._scalar("SELECT COUNT(*) FROM moments", ()):
                    self._graph = graph
                    return
        self.rebuild()

    def _reload_graph(self) -> None:
        """Readers: load the graph file the writer saved last, when it is newer than the one loaded."""
        try:
            state = json.loads((self._directory / "vectors.json").read_text())
            generation, dimensions = int(state["generation"]), int(state["dimensions"])
        except (OSError, ValueError, KeyError, TypeError):
            return  # none saved yet: every row is scored exactly
        if generation == self._graph_generation:
            return
        graph = self._new_graph(dimensions)
        try:
            graph.load(str(self._directory / "vectors.usearch"))
        except (OSError, RuntimeError, ValueError):
            return  # being replaced this instant: the next query loads it
        self._graph, self._graph_generation = graph, generation

    def _catch_up(self, graph: Index, generation: int, dimensions: int) -> None:
        """Apply to a graph saved at `generation` what SQLite committed since: moments written after it
        are put again (idempotent, so a graph saved a little later than its generation says is fine),
        keys SQLite no longer has are removed."""
        cursor = self._db.execute("SELECT key, vector FROM moments WHERE written > ?", (generation,))
        while rows := cursor.fetchmany(50_000):
            keys = np.fromiter((row[0] for row in rows), dtype=np.uint64, count=len(rows))
            graph.remove(keys)
            graph.add(keys, np.frombuffer(b"".join(row[1] for row in rows), np.float32).reshape(len(rows), dimensions))
        kept = np.fromiter((row[0] for row in self._db.execute("SELECT key FROM moments")), dtype=np.uint64)
        gone = np.setdiff1d(np.asarray(graph.keys, dtype=np.uint64), kept, assume_unique=True)
        if len(gone):
            graph.remove(gone)

    def rebuild(self) -> None:
        """Build the graph again from the vectors in SQLite (at open when its file is stale; compacts it)."""
        dimensions = self._dimensions()
        if dimensions is None:
            self._graph = None
            return
        graph = self._new_graph(dimensions)
        cursor = self._db.execute("SELECT key, vector FROM moments ORDER BY key")
        while rows := cursor.fetchmany(50_000):
            keys = np.fromiter((row[0] for row in rows), dtype=np.uint64, count=len(rows))
            vectors = np.frombuffer(b"".join(row[1] for row in rows), dtype=np.float32).reshape(len(rows), dimensions)
            graph.add(keys, vectors, threads=self._threads)
        self._graph = graph
        self._save_graph()

    def _save_graph(self) -> None:
        """Write the graph, then the generation it reflects; each file replaced whole."""
        self._saved_at = time.monotonic()
        if self._graph is None:
            return
        graph_file, saved = self._directory / "vectors.usearch", self._directory / "vectors.json"
        partial = graph_file.with_suffix(".partial")
        self._graph.save(str(partial))
        partial.replace(graph_file)
        state = {"generation": self._generation(), "dimensions": self._graph.ndim}
        saved.with_suffix(".partial").write_text(json.dumps(state))
        saved.with_suffix(".partial").replace(saved)

    def save(self) -> None:
        """Save the graph now (`close` does; writes do when `SAVE_EVERY_S` passed since the last save)."""
        with self._lock:
            self._save_graph()

    @contextlib.contextmanager
    def _write(self) -> Iterator[int]:
        """One write transaction; it yields the new generation, which the rows it writes carry."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute("UPDATE meta SET value = value + 1 WHERE name = 'generation'")
            yield self._generation()
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _written(self) -> None:
        """After a write reached the graph: save it when the last save is old."""
        if time.monotonic() - self._saved_at >= SAVE_EVERY_S:
            self._save_graph()

    # -- MomentIndex

    def upsert(self, moments: Sequence[Moment], vectors: Vectors) -> None:
        if len(moments) != len(vectors):
            raise ValueError(f"{len(moments)} moments, {len(vectors)} vectors")
        if not moments:
            return
        rows = np.ascontiguousarray(vectors, dtype=np.float32)
        with self._lock:
            if self._graph is not None and rows.shape[1] != self._graph.ndim:
                raise ValueError(f"vectors of {rows.shape[1]} dimensions in an index of {self._graph.ndim}")
            keys: dict[int, int] = {}  # key → row of `rows` (the last, for a moment given twice)
            with self._write() as generation:
                for row, moment in enumerate(moments):
                    keys[self._put(self._db, moment, rows[row].tobytes(), generation)] = row
            if self._graph is None:
                self._graph = self._new_graph(rows.shape[1])
            replaced = [key for key in keys if self._graph.contains(key)]
            if replaced:
                self._graph.remove(np.array(replaced, dtype=np.uint64))
            ordered = np.fromiter(keys, dtype=np.uint64, count=len(keys))
            self._graph.add(ordered, rows[list(keys.values())], threads=self._threads)
            self._written()

    @staticmethod
    def _put(db: sqlite3.Connection, moment: Moment, vector: bytes, generation: int) -> int:
        key: int = db.execute(
            "INSERT INTO moments (id, site, stream, start_ms, end_ms, has_alert, moment, vector, written) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET site = excluded.site, "
            "stream = excluded.stream, start_ms = excluded.start_ms, end_ms = excluded.end_ms, "
            "has_alert = excluded.has_alert, moment = excluded.moment, vector = excluded.vector, "
            "written = excluded.written RETURNING key",
            (
                moment.id,
                moment.site,
                moment.stream,
                moment.start_ms,
                moment.end_ms,
                int(bool(moment.alerts)),
                moment.model_dump_json(),
                vector,
                generation,
            ),
        ).fetchone()[0]
        db.execute("DELETE FROM descriptions WHERE rowid = ?", (key,))
        db.execute("INSERT INTO descriptions (rowid, description) VALUES (?, ?)", (key, moment.description))
        return key

    def keyword(self, query: str, where: MomentFilter, k: int) -> list[Hit]:
        match = fts_query(query)
        if match is None or k <= 0:
            return []
        condition, params = filter_sql(where)
        sql = (
            "SELECT m.id, bm25(descriptions) AS rank FROM descriptions JOIN moments m ON m.key = descriptions.rowid "
            f"WHERE descriptions MATCH ? AND {condition} ORDER BY rank LIMIT ?"
        )
        with self._lock:
            rows = self._db.execute(sql, [match, *params, k]).fetchall()
        return [Hit(id=row[0], score=-float(row[1])) for row in rows]  # FTS5's bm25() is lower-is-better

    def nearest(self, vector: Vectors, where: MomentFilter, k: int) -> list[Hit]:
        query = np.asarray(vector, dtype=np.float32).reshape(-1)
        if self._readonly:
            return self._nearest_reading(query, where, k)
        with self._lock:
            if self._graph is None or k <= 0 or len(self._graph) == 0:
                return []
            condition, params = filter_sql(where)
            total = len(self._graph)
            kept = (
                total if condition == "1" else self._scalar(f"SELECT COUNT(*) FROM moments m WHERE {condition}", params)
            )
            if kept == 0:
                return []
            if condition != "1" and kept <= EXACT_LIMIT:
                return self._exact(query, condition, params, k)
            return self._graph_search(query, condition, params, k, kept / total)

    def _nearest_reading(self, query: Vectors, where: MomentFilter, k: int) -> list[Hit]:
        """A reader's search: the saved graph, and exactly the rows written after it (they win)."""
        if k <= 0:
            return []
        with self._lock:
            self._reload_graph()
            condition, params = filter_sql(where)
            written_since = [*params, self._graph_generation]
            fresh = self._exact(query, f"{condition} AND m.written > ?", written_since, k)
            newer = {
                row[0]
                for row in self._db.execute("SELECT m.id FROM moments m WHERE m.written > ?", [self._graph_generation])
            }
            older: list[Hit] = []
            if self._graph is not None and len(self._graph):
                kept = self._scalar(f"SELECT COUNT(*) FROM moments m WHERE {condition}", params)
                wanted = k + len(newer)  # room for the hits dropped below
                if kept and condition != "1" and kept <= EXACT_LIMIT:
                    older = self._exact(query, condition, params, wanted)
                elif kept:
                    older = self._graph_search(query, condition, params, wanted, kept / max(len(self._graph), kept))
        # The graph holds the old vector of a moment rewritten since it was saved: only the fresh score counts.
        scores = {hit.id: hit.score for hit in older if hit.id not in newer} | {hit.id: hit.score for hit in fresh}
        return [Hit(id, score) for id, score in sorted(scores.items(), key=lambda item: -item[1])[:k]]

    def _scalar(self, sql: str, params: Sequence[Any]) -> int:
        return int(self._db.execute(sql, list(params)).fetchone()[0])

    def _exact(self, query: Vectors, condition: str, params: list[Any], k: int) -> list[Hit]:
        rows = self._db.execute(f"SELECT m.id, m.vector FROM moments m WHERE {condition}", params).fetchall()
        if not rows:
            return []
        matrix = np.frombuffer(b"".join(row[1] for row in rows), dtype=np.float32).reshape(len(rows), len(query))
        scores = matrix @ query / max(float(np.linalg.norm(query)), 1e-12)
        best = np.argsort(-scores, kind="stable")[:k]
        return [Hit(id=rows[i][0], score=float(scores[i])) for i in best]

    def _graph_search(self, query: Vectors, condition: str, params: list[Any], k: int, share: float) -> list[Hit]:
        assert self._graph is not None
        total = len(self._graph)
        wanted = min(total, math.ceil(k / share * 2))
        while True:
            matches = self._graph.search(query, wanted, threads=1)
            keys = [int(key) for key in matches.keys]
            distances = dict(zip(keys, (float(d) for d in matches.distances), strict=True))
            ids: dict[int, str] = {}
            for first in range(0, len(keys), 900):
                chunk = keys[first : first + 900]
                sql = f"SELECT m.key, m.id FROM moments m WHERE m.key IN ({','.join('?' * len(chunk))}) AND {condition}"
                ids.update(self._db.execute(sql, [*chunk, *params]).fetchall())
            if len(ids) >= k or wanted >= total:
                hits = [Hit(id=ids[key], score=1.0 - distances[key]) for key in keys if key in ids]
                return sorted(hits, key=lambda hit: -hit.score)[:k]
            wanted = min(total, wanted * 2)

    def get(self, ids: Sequence[str]) -> list[Moment]:
        found: dict[str, Moment] = {}
        with self._lock:
            for first in range(0, len(ids), 900):
                chunk = list(ids[first : first + 900])
                sql = f"SELECT id, moment FROM moments WHERE id IN ({','.join('?' * len(chunk))})"
                for moment_id, text in self._db.execute(sql, chunk):
                    found[moment_id] = Moment.model_validate_json(text)
        return [found[moment_id] for moment_id in ids if moment_id in found]

    def at(self, stream: str, time_ms: int) -> Moment | None:
        with self._lock:
            row = self._db.execute(
                "SELECT moment FROM moments WHERE stream = ? AND start_ms <= ? AND end_ms > ? "
                "ORDER BY start_ms DESC LIMIT 1",
                (stream, time_ms, time_ms),
            ).fetchone()
        return None if row is None else Moment.model_validate_json(row[0])

    def vector(self, moment_id: str) -> Vectors | None:
        with self._lock:
            row = self._db.execute("SELECT vector FROM moments WHERE id = ?", (moment_id,)).fetchone()
        return None if row is None else np.frombuffer(row[0], dtype=np.float32).copy()

    def delete(self, ids: Sequence[str]) -> None:
        if not ids:
            return
        with self._lock:
            keys: list[int] = []
            with self._write():
                for first in range(0, len(ids), 900):
                    chunk = list(ids[first : first + 900])
                    marks = ",".join("?" * len(chunk))
                    keys += [
                        row[0] for row in self._db.execute(f"SELECT key FROM moments WHERE id IN ({marks})", chunk)
                    ]
                    self._db.execute(
                        f"DELETE FROM descriptions WHERE rowid IN (SELECT key FROM moments WHERE id IN ({marks}))",
                        chunk,
                    )
                    self._db.execute(f"DELETE FROM moments WHERE id IN ({marks})", chunk)
            if keys and self._graph is not None:
                self._graph.remove(np.array(keys, dtype=np.uint64))
                self._written()

    def delete_before(self, end_ms: int) -> int:
        with self._lock:
            with self._write():
                db = self._db
                keys = [row[0] for row in db.execute("SELECT key FROM moments WHERE end_ms < ?", (end_ms,))]
                db.execute(
                    "DELETE FROM descriptions WHERE rowid IN (SELECT key FROM moments WHERE end_ms < ?)", (end_ms,)
                )
                db.execute("DELETE FROM moments WHERE end_ms < ?", (end_ms,))
            if keys and self._graph is not None:
                self._graph.remove(np.array(keys, dtype=np.uint64))
                self._written()
            return len(keys)

    def count(self) -> int:
        with self._lock:
            return self._scalar("SELECT COUNT(*) FROM moments", ())

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if not self._readonly:
                self._save_graph()
            self._db.close()
            if self._owner is not None:
                self._owner.close()  # releases the flock


def open_index(path: Path, readonly: bool = False) -> MomentIndex:
    """The moment index kept in directory `path`: the writer's (created when missing, one process), or a reader's."""
    return SqliteMomentIndex(path, readonly=readonly)
