"""The moment index: SQLite (FTS5 + usearch) against LanceDB, on the same moments and queries.

Moments are synthetic but made of what the pipeline really produces: the object classes,
sounds, speech and events of the shared recordings' labels (`.cache/media/*.labels.json`)
and the test transcripts, as counts, zones, loudness words and transcript fragments, the way
a moment's description reads. A pool of distinct descriptions is embedded once with the real
MiniLM (`detectors.text_embedding`, OpenVINO); moment i takes description i mod pool and
that embedding plus small Gaussian noise (σ = 0.02 per dimension, renormalised), so
descriptions repeat beyond the pool size while no two vectors are equal. Moments are 2 s
windows of 20 streams on 4 sites, one in ten with an alert.

Per store and size N: indexing throughput (upserts of 500, the store's own upkeep
included: LanceDB's `optimize` every 50 writes), then, interleaved across the stores, query
latency for keyword (BM25), vector (cosine; the query texts embedded), and both filtered by
one stream and one hour; recall@10 of the vector queries against exact scoring (numpy);
close and reopen time (for SQLite also the reopen after a crash, which rebuilds the graph);
bytes on disk. Also the embedding cost per moment of MiniLM on the CPU, batches of 32, on
OpenVINO and on PyTorch, interleaved.

    .venv/bin/python -m bench.search_stores [--sizes 10000 100000] [--queries 100] [--pool 8000]
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import median, percentile, write_result
from bench.lance_store import LanceMomentIndex
from daemon.search.index import Hit, MomentFilter, MomentIndex, Vectors
from daemon.search.store import SqliteMomentIndex
from detectors.text_embedding import MiniLmEmbedder
from streams.models import AlertRef, Moment

MEDIA = Path(".cache/media")
T0 = 1_800_000_000_000
WINDOW_MS = 2000
SITES = ("hq", "depot", "yard", "annex")
STREAMS = tuple(f"{site}-cam{n}" for site in SITES for n in range(5))
ZONES = ("door", "gate", "lobby", "loading bay", "parking")
EXTRA_CLASSES = ("truck", "backpack", "handbag", "bus", "motorcycle")
LOUDNESS = (("silent", -70), ("quiet", -45), ("moderate", -28), ("loud", -14), ("very loud", -4))
TRANSCRIPTS = (  # tests/helpers.py TRANSCRIPTS: the test speech whose words are known
    "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country.",
    "and mister john dashwood had then leisure to consider how much there might be prudently in his power to do "
    "for them",
    "he was not an ill disposed young man",
)
QUERIES = (
    "someone calls for help",
    "call the police",
    "dog barking",
    "alarm ringing",
    "person at the door",
    "bicycle and car",
    "loud truck in the loading bay",
    "ask not what your country can do for you",
    "people walking through the hall",
    "quiet parking with nobody",
    "a man shouting",
    "john dashwood",
)
SIGMA = 0.02


def _labels() -> tuple[list[str], list[str], list[str], list[str]]:
    """Object classes, sound labels, speech lines and event names of the shared recordings."""
    classes, speech = set(EXTRA_CLASSES), list(TRANSCRIPTS)
    sounds: set[str] = set()
    events: set[str] = set()
    for path in sorted(MEDIA.glob("*.labels.json")):
        labels = json.loads(path.read_text())
        classes.update(item["class"] for item in labels.get("objects", []))
        sounds.update(item["label"].replace("_", " ") for item in labels.get("sounds", []))
        speech.extend(item["text"] for item in labels.get("speech", []))
        events.update(item["event"] for item in labels.get("events", []))
    return sorted(classes), sorted(sounds), speech, sorted(events)


def descriptions(count: int, seed: int = 1) -> list[str]:
    """`count` distinct moment descriptions: objects with counts, zones, loudness, sounds, speech, alerts."""
    classes, sounds, speech, events = _labels()
    words = [re.findall(r"[\w']+", line) for line in speech]
    rng = random.Random(seed)
    found: dict[str, None] = {}
    while len(found) < count:
        parts = []
        seen = rng.sample(classes, rng.randint(0, 3))
        if seen:
            parts.append("seen: " + ", ".join(f"{rng.randint(1, 6)} {name}" for name in seen))
        if rng.random() < 0.4:
            parts.append(f"zone {rng.choice(ZONES)}: {rng.randint(1, 4)} entered")
        word, level = rng.choice(LOUDNESS)
        parts.append(f"{word} ({level + rng.randint(-3, 3)} dBFS)")
        if sounds and rng.random() < 0.25:
            parts.append("heard: " + rng.choice(sounds))
        if rng.random() < 0.45:
            line = rng.choice(words)
            start = rng.randrange(len(line))
            parts.append('said: "' + " ".join(line[start : start + rng.randint(2, 12)]) + '"')
        if events and rng.random() < 0.1:
            parts.append("alert: " + rng.choice(events))
        found["; ".join(parts)] = None
    return list(found)


def moments(n: int, pool: list[str], pool_vectors: Vectors, seed: int = 2) -> tuple[list[Moment], Vectors]:
    """N moments over the streams, round robin, consecutive 2 s windows; vectors = pool + noise."""
    rng = np.random.default_rng(seed)
    built = []
    for i in range(n):
        stream = STREAMS[i % len(STREAMS)]
        start = T0 + (i // len(STREAMS)) * WINDOW_MS
        description = pool[i % len(pool)]
        alerts = [AlertRef(id=f"a{i}", event="distress", score=0.9, window_start=start)] if i % 10 == 0 else []
        built.append(
            Moment(
                id=f"{stream}@{start}",
                site=stream.split("-")[0],
                stream=stream,
                start_ms=start,
                end_ms=start + WINDOW_MS,
                windows=1,
                alerts=alerts,
                description=description,
            )
        )
    vectors = pool_vectors[np.arange(n) % len(pool)] + rng.normal(0, SIGMA, (n, pool_vectors.shape[1])).astype(
        np.float32
    )
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return built, vectors.astype(np.float32)


def embedding_cost(embedder: dict[str, MiniLmEmbedder], texts: list[str], rounds: int = 3) -> dict[str, Any]:
    """ms per description at batch 32 for each runtime, rounds interleaved."""
    times: dict[str, list[float]] = {name: [] for name in embedder}
    for _ in range(rounds):
        for name, model in embedder.items():
            started = time.perf_counter()
            model.embed(texts)
            times[name].append((time.perf_counter() - started) * 1000 / len(texts))
    return {name: {"ms_per_moment": round(median(v), 2), "runs": [round(x, 2) for x in v]} for name, v in times.items()}


Opener = Callable[[Path], MomentIndex]
STORES: dict[str, Opener] = {"sqlite_usearch": SqliteMomentIndex, "lancedb": LanceMomentIndex}


def _disk_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def build(
    opener: Opener, folder: Path, items: list[Moment], vectors: Vectors, batch: int
) -> tuple[MomentIndex, dict[str, Any]]:
    index = opener(folder)
    started = time.perf_counter()
    for first in range(0, len(items), batch):
        index.upsert(items[first : first + batch], vectors[first : first + batch])
    upserts = time.perf_counter() - started
    finish = time.perf_counter()
    if isinstance(index, LanceMomentIndex):
        index.optimize()  # fold the last writes into the indexes, as its upkeep would
    finished = time.perf_counter() - finish
    return index, {
        "upsert_s": round(upserts, 2),
        "moments_per_s": round(len(items) / upserts, 1),
        "finish_s": round(finished, 2),
    }


def _stream_hour(rng: random.Random, n: int) -> MomentFilter:
    stream = rng.choice(STREAMS)
    span = max(n // len(STREAMS), 1) * WINDOW_MS
    since = T0 + rng.randrange(max(span - 3_600_000, 1))
    return MomentFilter(streams=(stream,), since_ms=since, until_ms=since + 3_600_000)


def _exact_top(vectors: Vectors, items: list[Moment], query: Vectors, where: MomentFilter, k: int) -> list[str]:
    scores = vectors @ query
    if where.streams:
        assert where.since_ms is not None and where.until_ms is not None
        keep = np.array(
            [m.stream in where.streams and m.end_ms >= where.since_ms and m.start_ms < where.until_ms for m in items]
        )
        scores = np.where(keep, scores, -np.inf)
    best = np.argsort(-scores)[:k]
    return [items[i].id for i in best if np.isfinite(scores[i])]


def queries(
    indexes: dict[str, MomentIndex], items: list[Moment], vectors: Vectors, query_vectors: Vectors, count: int
) -> dict[str, Any]:
    """Each query on every store in turn (the order rotated), latencies and recall@10."""
    rng = random.Random(3)
    kinds = ("keyword", "vector", "keyword_filtered", "vector_filtered")
    times: dict[str, dict[str, list[float]]] = {name: {kind: [] for kind in kinds} for name in indexes}
    recall: dict[str, dict[str, list[float]]] = {name: {"vector": [], "vector_filtered": []} for name in indexes}
    names = list(indexes)
    for q in range(count):
        text, qv = QUERIES[q % len(QUERIES)], query_vectors[q % len(QUERIES)]
        where = _stream_hour(rng, len(items))
        truth = {"vector": _exact_top(vectors, items, qv, MomentFilter(), 10)}
        truth["vector_filtered"] = _exact_top(vectors, items, qv, where, 10)
        order = names[q % len(names) :] + names[: q % len(names)]
        for name in order:
            index = indexes[name]
            calls: dict[str, Callable[[], list[Hit]]] = {
                "keyword": partial(index.keyword, text, MomentFilter(), 10),
                "vector": partial(index.nearest, qv, MomentFilter(), 10),
                "keyword_filtered": partial(index.keyword, text, where, 10),
                "vector_filtered": partial(index.nearest, qv, where, 10),
            }
            for kind, call in calls.items():
                started = time.perf_counter()
                hits = call()
                times[name][kind].append((time.perf_counter() - started) * 1000)
                if kind in recall[name] and truth[kind]:
                    recall[name][kind].append(len({h.id for h in hits} & set(truth[kind])) / len(truth[kind]))
    return {
        name: {
            kind: {"p50_ms": round(median(v), 2), "p95_ms": round(percentile(v, 95), 2)}
            for kind, v in times[name].items()
        }
        | {f"recall10_{kind}": round(float(np.mean(v)), 4) for kind, v in recall[name].items()}
        for name in indexes
    }


def reopen(name: str, opener: Opener, folder: Path, index: MomentIndex) -> dict[str, Any]:
    started = time.perf_counter()
    index.close()
    closed = time.perf_counter() - started
    result = {"close_s": round(closed, 3), "disk_bytes": _disk_bytes(folder)}
    started = time.perf_counter()
    again = opener(folder)
    again.count()
    result["reopen_s"] = round(time.perf_counter() - started, 3)
    again.close()
    if name == "sqlite_usearch":  # the graph file lost: rebuilt from the vectors in SQLite
        (folder / "vectors.json").unlink()
        started = time.perf_counter()
        rebuilt = opener(folder)
        result["rebuild_s"] = round(time.perf_counter() - started, 3)
        rebuilt.close()
    return result


def run_size(
    n: int,
    pool: list[str],
    pool_vectors: Vectors,
    query_vectors: Vectors,
    count: int,
    scratch: Path,
    stores: list[str],
) -> dict[str, Any]:
    items, vectors = moments(n, pool, pool_vectors)
    indexes: dict[str, MomentIndex] = {}
    result: dict[str, Any] = {}
    for name in stores:
        opener = STORES[name]
        print(f"N={n}: indexing into {name}", flush=True)
        indexes[name], result[name] = build(opener, scratch / f"{name}-{n}", items, vectors, 500)
        print(f"  {result[name]}", flush=True)
    for name, stats in queries(indexes, items, vectors, query_vectors, count).items():
        result[name] |= stats
    for name, index in indexes.items():
        result[name] |= reopen(name, STORES[name], scratch / f"{name}-{n}", index)
        shutil.rmtree(scratch / f"{name}-{n}")
        print(f"  {name}: {result[name]}", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--pool", type=int, default=8000)
    parser.add_argument("--stores", nargs="+", choices=sorted(STORES), default=sorted(STORES))
    parser.add_argument("--name", default="search_stores", help="results file (search_scale: the chosen store at 1M)")
    args = parser.parse_args()
    embedders = {"openvino": MiniLmEmbedder("openvino"), "torch": MiniLmEmbedder("torch")}
    pool = descriptions(args.pool)
    cost = embedding_cost(embedders, pool[:640])
    started = time.perf_counter()
    pool_vectors = embedders["openvino"].embed(pool)
    pool_seconds = time.perf_counter() - started
    query_vectors = embedders["openvino"].embed(list(QUERIES))
    print(f"embedding: {cost}; pool of {len(pool)} in {pool_seconds:.1f} s", flush=True)
    sizes: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="fw-search-") as scratch:
        for n in args.sizes:
            sizes[str(n)] = run_size(n, pool, pool_vectors, query_vectors, args.queries, Path(scratch), args.stores)
    result = {
        "embedding": cost | {"pool": len(pool), "pool_seconds": round(pool_seconds, 1), "batch": 32},
        "noise_sigma": SIGMA,
        "batch": 500,
        "queries": args.queries,
        "streams": len(STREAMS),
        "sizes": sizes,
        "example_descriptions": pool[:5],
    }
    print(json.dumps(result, indent=2))
    print(write_result(args.name, result))


if __name__ == "__main__":
    main()
