"""Search quality and the index role's cost on real media: recall@5 and MRR per ranking.

Replays the labelled recordings (lobby.ts: people, JFK, a call for help, two book
readings; street.ts: traffic, a dog, an alarm) through the embedded broker into analyze,
fuse and the index role of the demo config, then asks the labelled query set
(`tests/data/search_queries.json`: the labels' speech verbatim and in other words, objects
and sounds, each with its answer's stream and span) three ways: keyword only (BM25),
vector only (MiniLM embedding) and hybrid (reciprocal rank fusion of the two). The baseline
for the hybrid ranking is each single ranking, in the same run on the same index. Also
reported: the records read and moments made by one run of the index role, and query latency
on this small index, which is mostly embedding the query (the latency at 10k and 100k
moments, and the embedding cost per moment, are `bench/search_stores.py`'s).

    .venv/bin/python -m bench.search
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from bench.common import percentile, write_result
from config import load_config
from config.schema import FusewatchConfig, KafkaConfig, KafkaTopics
from daemon.analyze.worker import run_analyze
from daemon.cli.commands import fetch_media
from daemon.cli.main import default_config_path
from daemon.evaluation.search import load_queries, score
from daemon.fuse.worker import run_fuse
from daemon.runtime.services import ServiceSet
from daemon.search.index import MomentFilter
from daemon.search.query import RANKINGS, Searcher
from daemon.search.store import open_index
from daemon.search.worker import run_index
from detectors.text_embedding import load_embedder
from streams.kafka import MediaPublisher, ensure_topics
from streams.sources import replay_side_by_side

QUERIES = Path(__file__).resolve().parents[1] / "tests" / "data" / "search_queries.json"


async def _index(config: FusewatchConfig, media: Path) -> tuple[dict[str, int], dict[str, Any]]:
    await ensure_topics(config.kafka)
    recordings = {"lobby": media / "lobby.ts", "street": media / "street.ts"}
    async with MediaPublisher(config.kafka) as publisher:
        lobby = (await replay_side_by_side(recordings, config.site, publisher))["lobby"]
        await publisher.flush()
    await run_analyze(config, idle_timeout=5.0)
    await run_fuse(config, idle_timeout=3.0)
    started = time.perf_counter()
    indexer = await run_index(config, idle_timeout=2.0)
    seconds = time.perf_counter() - started - 2.0  # the idle wait that ends the run
    wall = lobby.wall_start_ns // 1_000_000
    counters = indexer.counters
    return {"lobby": wall, "street": wall}, {
        "records": counters.records,
        "moments": counters.moments,
        "upserts": counters.upserted,
        "index_role_seconds": round(seconds, 2),  # the whole run: model load, group join, records, writes
    }


def _latency(searcher: Searcher, queries: list[str]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for ranking in RANKINGS:
        times = []
        for _ in range(3):
            for query in queries:
                started = time.perf_counter()
                searcher.search(query, MomentFilter(), 10, ranking)
                times.append((time.perf_counter() - started) * 1000)
        out[ranking] = {"p50_ms": round(percentile(times, 50), 2), "p95_ms": round(percentile(times, 95), 2)}
    return out


async def _run(media: Path, scratch: Path) -> dict[str, Any]:
    services = ServiceSet(Path(".cache/services/bench-search"))
    services.start()
    try:
        demo = load_config(default_config_path(), env={})
        suffix = f"search{int(time.time())}"
        config = demo.model_copy(
            update={
                "kafka": KafkaConfig(bootstrap_servers=[services.kafka.address], topics=KafkaTopics.suffixed(suffix)),
                "redis": demo.redis.model_copy(
                    update={"url": f"redis://{services.redis.address}/0", "key_prefix": suffix}
                ),
                "detectors": demo.detectors.model_copy(update={"when_behind": "wait"}),
                "outputs": demo.outputs.model_copy(update={"snapshots_dir": str(scratch / "snapshots")}),
                "search": demo.search.model_copy(update={"path": str(scratch / "search")}),
            }
        )
        walls, indexing = await _index(config, media)
    finally:
        services.stop()
    index = open_index(Path(config.search.path) / "moments", readonly=True)
    try:
        searcher = Searcher(index, load_embedder(), config.search)
        queries = load_queries(QUERIES, walls)
        quality = score(searcher, queries)
        latency = _latency(searcher, [q.query for q in queries])
    finally:
        index.close()
    return {
        "queries": len(queries),
        "indexing": indexing,
        "quality": {
            name: {"recall_at_5": round(s.recall_at_k, 3), "mrr": round(s.mrr, 3), "first_ranks": s.first_ranks}
            for name, s in quality.items()
        },
        "latency_small_index": latency,
    }


def main() -> None:
    import tempfile

    media = fetch_media(Path(".cache/media"))
    with tempfile.TemporaryDirectory() as scratch:
        result = asyncio.run(_run(media, Path(scratch)))
    print(json.dumps(result, indent=2))
    print(write_result("search", result))


if __name__ == "__main__":
    main()
