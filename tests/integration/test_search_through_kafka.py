"""Cross-media search on real media: replay → analyze → fuse → index through the broker, then ask.

The lobby recording holds JFK's "ask not what your country can do for you" (5–16 s) and a
call for help (30–33 s); the street, traffic. Asked in the operator's words, the index must
rank a JFK moment of the lobby first, keep a stream filter, re-read its topics after a
restart without a duplicate, and say so when nothing matches; on the labelled query set
(tests/data/search_queries.json) the hybrid ranking must beat both keyword-only and vector-only
(recall@5 and MRR) and find every answer either single ranking finds.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from config.schema import FusewatchConfig
from daemon.analyze.worker import run_analyze
from daemon.evaluation.search import RankingScore, load_queries, score
from daemon.fuse.worker import run_fuse
from daemon.search.query import Searcher
from daemon.search.store import open_index
from daemon.search.worker import run_index
from detectors.text_embedding import load_embedder
from streams.kafka import MediaPublisher
from streams.sources import replay_side_by_side
from tests.conftest import ROOT
from tests.helpers import demo_on, write_config

pytestmark = pytest.mark.integration


async def _pipeline(config: FusewatchConfig, media_dir: Path) -> int:
    """Both recordings through analyze and fuse; the lobby's wall start (ms)."""
    recordings = {"lobby": media_dir / "lobby.ts", "street": media_dir / "street.ts"}
    async with MediaPublisher(config.kafka) as publisher:
        lobby = (await replay_side_by_side(recordings, config.site, publisher))["lobby"]
        await publisher.flush()
    await asyncio.wait_for(run_analyze(config, idle_timeout=5.0), 300)
    await asyncio.wait_for(run_fuse(config, idle_timeout=3.0), 120)
    return lobby.wall_start_ns // 1_000_000


def _quality(config: FusewatchConfig, walls: dict[str, int]) -> dict[str, RankingScore]:
    """Recall@5 and MRR of each ranking on the labelled query set (tests/data/search_queries.json)."""
    index = open_index(Path(config.search.path) / "moments", readonly=True)
    try:
        searcher = Searcher(index, load_embedder(), config.search)
        return score(searcher, load_queries(ROOT / "tests" / "data" / "search_queries.json", walls))
    finally:
        index.close()


def _search(config_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "daemon.cli", "search", "--config", str(config_file), "--json", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=180,
        check=False,
    )


async def test_search_finds_the_moment_keeps_filters_and_reindexes_without_duplicates(
    fw_config: FusewatchConfig, media_dir: Path, tmp_path: Path
) -> None:
    config = demo_on(fw_config, tmp_path)
    lobby_ms = await _pipeline(config, media_dir)
    indexer = await asyncio.wait_for(run_index(config, idle_timeout=3.0), 300)
    assert indexer.counters.malformed == 0 and indexer.counters.upserted > 10
    moments = indexer.counters.moments
    config_file = write_config(config, tmp_path / "site.yaml")

    asked = _search(config_file, "ask what you can do for your country")
    assert asked.returncode == 0, asked.stderr
    results = [json.loads(line) for line in asked.stdout.splitlines()]
    first = results[0]["moment"]
    assert first["stream"] == "lobby" and "country" in first["transcript"].lower()
    assert first["start_ms"] < lobby_ms + 16_000 and first["end_ms"] > lobby_ms + 5_000, "within JFK's 5–16 s"

    street = _search(config_file, "ask what you can do for your country", "--stream", "street")
    assert all(json.loads(line)["moment"]["stream"] == "street" for line in street.stdout.splitlines())

    help_call = _search(config_file, "someone shouted for help", "-n", "3")
    top = [json.loads(line)["moment"] for line in help_call.stdout.splitlines()]
    assert any(m["stream"] == "lobby" and "help" in m["transcript"].lower() for m in top), top

    nothing = _search(config_file, "a giraffe eats bananas on a sailing boat")
    assert nothing.returncode == 1 and "no moment matches" in nothing.stderr

    # The labelled query set (37 queries): the hybrid ranking beats each list alone, on recall@5 and on
    # MRR, and finds (within the first 10) every answer either list finds. It leads by several queries
    # (bench/README.md, "Search quality": 26 of 37 in the first 5, against 22 and 21). Float rounding
    # can move a vector score across the `min_similarity` floor (two answers lie within 0.002 of it):
    # that moves vector-only by a query or two, and hybrid not at all (keyword search finds both).
    # One answer vector-only ranks first, hybrid ranks 6th ("emergency in the lobby": "lobby" matches
    # every lobby moment), so "finds every answer" is checked within 10 results, not 5.
    quality = await asyncio.to_thread(_quality, config, {"lobby": lobby_ms, "street": lobby_ms})
    shown = {name: (round(q.recall_at_k, 3), round(q.mrr, 3), q.first_ranks) for name, q in quality.items()}
    hybrid, keyword, vector = quality["hybrid"], quality["keyword"], quality["vector"]
    assert hybrid.queries >= 30, shown
    assert hybrid.recall_at_k > max(keyword.recall_at_k, vector.recall_at_k), shown
    assert hybrid.mrr > max(keyword.mrr, vector.mrr), shown
    assert all(
        h is not None
        for h, k, v in zip(*(q.first_ranks for q in (hybrid, keyword, vector)), strict=True)
        if k is not None or v is not None
    ), shown

    # A restarted index role (here: a new consumer group, every record read again) changes nothing.
    again = config.model_copy(update={"kafka": config.kafka.model_copy(update={"group_prefix": "reindex"})})
    second = await asyncio.wait_for(run_index(again, idle_timeout=3.0), 300)
    assert second.counters.records == indexer.counters.records
    assert (second.counters.upserted, second.counters.deleted) == (0, 0)
    assert second.counters.moments == moments
