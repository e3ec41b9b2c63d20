"""Search through the dashboard's API: `GET /api/search` and `GET /api/moments/<id>/similar`.

Against a real uvicorn server reading (read-only) a moment index that a writer built with
the real sentence model, this proves: an operator's wording finds the moment it describes
first, with why it matched, its snapshot URL and the stored moment; `stream`, `has_alert`
and `n` narrow the results; keyword-only and vector-only rankings each find what only they
can; a query about nothing that happened gets no results; wrong parameters are 400s that
say why; before the index role has written an index the API answers 503 with Retry-After
and picks the index up once it exists; similar moments rank the nearest other moment first
and never the moment itself (an unknown moment is a 404); and a writer that keeps writing
beside the web (the index role's way) is seen by the next query without a restart.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from config.schema import FusewatchConfig
from daemon.search.worker import open_indexer
from detectors.text_embedding import TextEmbedder, load_embedder
from streams.models import Moment
from tests.support.search import make_moment, search_on, write_moments
from tests.support.web import Web, running_web, write_snapshot

pytestmark = pytest.mark.integration

QUERY = "someone shouted for help"


@pytest.fixture(scope="module")
def embedder() -> TextEmbedder:
    return load_embedder()


@dataclass
class Moments:
    help: Moment
    jfk: Moment
    jfk_more: Moment
    traffic: Moment
    shout: Moment
    empty: Moment

    def all(self) -> list[Moment]:
        return [self.help, self.jfk, self.jfk_more, self.traffic, self.shout, self.empty]


def _moments(base: int, snapshot: str) -> Moments:
    return Moments(
        help=make_moment(
            "lobby",
            base + 30_000,
            base + 34_000,
            {"person": 2},
            "Help! Somebody call the police!",
            loudness_dbfs=-12.0,
            alert="distress",
            snapshot=snapshot,
        ),
        jfk=make_moment(
            "lobby",
            base + 4_000,
            base + 10_000,
            {"person": 1},
            "And so, my fellow Americans: ask not what your country can do for you",
            loudness_dbfs=-30.0,
        ),
        jfk_more=make_moment(
            "lobby", base + 10_000, base + 16_000, {"person": 1}, "ask what you can do for your country", -30.0
        ),
        traffic=make_moment("street", base, base + 30_000, {"car": 3, "bus": 1}, loudness_dbfs=-35.0),
        # A shout in the street that nothing was transcribed from: the VAD heard a voice.
        shout=make_moment("street", base + 30_000, base + 32_000, {"car": 2}, loudness_dbfs=-10.0, heard="voice"),
        empty=make_moment("street", base + 60_000, base + 120_000, loudness_dbfs=-50.0),
    )


@dataclass
class Searchable:
    web: Web
    moments: Moments
    config: FusewatchConfig


@pytest.fixture
async def searchable(fw_config: FusewatchConfig, tmp_path: Path, embedder: TextEmbedder) -> AsyncIterator[Searchable]:
    """The web over an index of six moments (two streams), written and closed before it starts."""
    base = int(time.time() * 1000) // 60_000 * 60_000 - 600_000
    snapshot = write_snapshot(tmp_path / "snapshots", f"test/lobby/{base + 32_000}.jpg")
    moments = _moments(base, snapshot)
    config = search_on(fw_config, tmp_path / "search")
    await asyncio.to_thread(write_moments, config, moments.all(), embedder)
    async with running_web(config, tmp_path / "snapshots") as web:
        yield Searchable(web, moments, config)


async def _ids(client: httpx.AsyncClient, **params: object) -> list[str]:
    response = await client.get("/api/search", params=params)
    assert response.status_code == 200, response.text
    return [result["moment"]["id"] for result in response.json()["results"]]


async def test_the_operators_words_find_the_moment_first_with_why_and_its_snapshot(searchable: Searchable) -> None:
    moments = searchable.moments
    async with searchable.web.client() as client:
        response = await client.get("/api/search", params={"q": QUERY})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["query"] == QUERY and body["ranking"] == "hybrid"
        first = body["results"][0]
        assert first["moment"] == moments.help.model_dump(mode="json")
        assert first["keyword_rank"] == 1 and first["vector_rank"] == 1
        assert first["why"].startswith("words: help, shouted; meaning 0."), first["why"]  # shouting
        assert first["similarity"] >= searchable.config.search.min_similarity
        assert first["score"] == max(result["score"] for result in body["results"])
        assert first["snapshot_url"] == f"/snapshots/{moments.help.snapshot}"
        image = await client.get(first["snapshot_url"])
        assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
        assert all(result["snapshot_url"] is None for result in body["results"][1:])
        assert len({result["moment"]["id"] for result in body["results"]}) == len(body["results"])


async def test_stream_alert_and_n_narrow_the_results(searchable: Searchable) -> None:
    moments = searchable.moments
    async with searchable.web.client() as client:
        street = await _ids(client, q=QUERY, stream="street")
        assert street and street[0] == moments.shout.id, street  # "a loud voice, shouting"
        assert all(moment_id.startswith("street@") for moment_id in street)
        both = await _ids(client, q=QUERY, stream=["street", "lobby"])
        assert both[0] == moments.help.id and moments.shout.id in both
        assert await _ids(client, q=QUERY, has_alert="true") == [moments.help.id]
        assert moments.help.id not in await _ids(client, q=QUERY, has_alert="false")
        assert await _ids(client, q=QUERY, n=1) == [moments.help.id]
        later = await _ids(client, q=QUERY, since_ms=moments.help.end_ms + 1)
        assert moments.help.id not in later and all(moment_id.startswith("street@") for moment_id in later)
        assert await _ids(client, q=QUERY, site="elsewhere") == []


async def test_keyword_and_vector_rankings_each_find_what_only_they_can(searchable: Searchable) -> None:
    moments = searchable.moments
    async with searchable.web.client() as client:
        keyword = await client.get("/api/search", params={"q": "police", "ranking": "keyword"})
        assert keyword.json()["ranking"] == "keyword"
        [only] = keyword.json()["results"]
        assert only["moment"]["id"] == moments.help.id
        assert (only["keyword_rank"], only["vector_rank"], only["similarity"]) == (1, None, None)
        assert only["why"] == "words: police"

        # No word of it is in any description: meaning alone finds the traffic.
        paraphrase = "vehicles driving past"
        assert await _ids(client, q=paraphrase, ranking="keyword") == []
        vector = (await client.get("/api/search", params={"q": paraphrase, "ranking": "vector"})).json()
        assert vector["results"][0]["moment"]["id"] == moments.traffic.id
        assert vector["results"][0]["keyword_rank"] is None and vector["results"][0]["vector_rank"] == 1
        assert vector["results"][0]["why"].startswith("meaning 0.")
        assert (await _ids(client, q=paraphrase))[0] == moments.traffic.id


async def test_a_query_about_nothing_that_happened_gets_no_results(searchable: Searchable) -> None:
    async with searchable.web.client() as client:
        for ranking in ("hybrid", "keyword", "vector"):
            response = await client.get(
                "/api/search", params={"q": "purple elephant juggling quantum marmalade", "ranking": ranking}
            )
            assert response.status_code == 200 and response.json()["results"] == [], (ranking, response.text)


async def test_wrong_parameters_are_400s_that_say_why(searchable: Searchable) -> None:
    async with searchable.web.client() as client:
        for params, said in (
            ({}, "q is required"),
            ({"q": "   "}, "q is required"),
            ({"q": "x" * 501}, "q is longer than 500 characters"),
            ({"q": QUERY, "ranking": "bm25"}, "ranking must be one of"),
            ({"q": QUERY, "n": "0"}, "n must be between 1 and 100"),
            ({"q": QUERY, "n": "lots"}, "n must be an integer"),
            ({"q": QUERY, "stream": "../../etc"}, "not a stream or site name"),
            ({"q": QUERY, "since_ms": "yesterday"}, "since_ms must be an integer"),
            ({"q": QUERY, "has_alert": "yes"}, "has_alert must be true or false"),
        ):
            response = await client.get("/api/search", params=params)
            assert response.status_code == 400, params
            assert response.json()["error"].startswith(said), (params, response.json())
        similar = f"/api/moments/{searchable.moments.help.id}/similar"
        for params, said in (
            ({"n": "0"}, "n must be between 1 and 100"),
            ({"n": "many"}, "n must be an integer"),
            ({"stream": "a/b"}, "not a stream or site name"),
            ({"has_alert": "1"}, "has_alert must be true or false"),
        ):
            response = await client.get(similar, params=params)
            assert response.status_code == 400 and response.json()["error"].startswith(said), params


async def test_similar_moments_rank_the_nearest_other_moment_first_never_itself(searchable: Searchable) -> None:
    moments = searchable.moments
    async with searchable.web.client() as client:
        response = await client.get(f"/api/moments/{moments.jfk.id}/similar")
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["moment"] == moments.jfk.id
        ids = [result["moment"]["id"] for result in body["results"]]
        assert ids[0] == moments.jfk_more.id and moments.jfk.id not in ids
        assert sorted(ids) == sorted(m.id for m in moments.all() if m.id != moments.jfk.id)
        assert all(result["keyword_rank"] is None and result["why"].startswith("meaning") for result in body["results"])
        similarities = [result["similarity"] for result in body["results"]]
        assert similarities == sorted(similarities, reverse=True)
        for moment in moments.all():
            found = (await client.get(f"/api/moments/{moment.id}/similar", params={"n": 100})).json()["results"]
            assert moment.id not in [result["moment"]["id"] for result in found]
        street = (await client.get(f"/api/moments/{moments.help.id}/similar", params={"stream": "street"})).json()
        assert street["results"][0]["moment"]["id"] == moments.shout.id
        assert all(result["moment"]["stream"] == "street" for result in street["results"])
        assert len((await client.get(f"/api/moments/{moments.jfk.id}/similar", params={"n": 2})).json()["results"]) == 2

        unknown = await client.get("/api/moments/lobby@1/similar")
        assert unknown.status_code == 404 and unknown.json()["error"] == "no such moment"


async def test_before_the_index_exists_the_api_answers_503_then_finds_it_once_written(
    fw_config: FusewatchConfig, tmp_path: Path, embedder: TextEmbedder
) -> None:
    config = search_on(fw_config, tmp_path / "search")
    base = int(time.time() * 1000) // 60_000 * 60_000 - 600_000
    moments = _moments(base, "test/lobby/none.jpg")
    async with running_web(config, tmp_path / "snapshots") as web, web.client() as client:
        for path in ("/api/search?q=help", f"/api/moments/{moments.help.id}/similar"):
            response = await client.get(path)
            assert response.status_code == 503, path
            assert response.headers["retry-after"] == "10"
            assert response.json()["error"].startswith("no search index yet at ")
        # The index role has made its directory but not yet its database: still not there.
        (tmp_path / "search" / "moments").mkdir(parents=True)
        early = await client.get("/api/search", params={"q": "help"})
        assert early.status_code == 503 and early.headers["retry-after"] == "10", early.text

        await asyncio.to_thread(write_moments, config, moments.all(), embedder)
        assert (await _ids(client, q=QUERY))[0] == moments.help.id
        similar = await client.get(f"/api/moments/{moments.jfk.id}/similar")
        assert similar.status_code == 200 and similar.json()["results"][0]["moment"]["id"] == moments.jfk_more.id


async def test_the_web_sees_what_a_writer_beside_it_commits(searchable: Searchable, embedder: TextEmbedder) -> None:
    moments, base = searchable.moments, searchable.moments.traffic.start_ms
    dog = make_moment("street", base + 200_000, base + 204_000, {"dog": 1}, loudness_dbfs=-8.0)
    said = "Fire! Everybody out of the building!"
    async with searchable.web.client() as client:
        # The web opens the index and the model at this first query, before the writer starts.
        before = await _ids(client, q="a dog barking")
        assert set(before) <= {moment.id for moment in moments.all()}
        # The index role starts beside the running web, as it does in production.
        indexer = await asyncio.to_thread(open_indexer, searchable.config.search, embedder)
        try:
            await asyncio.to_thread(indexer.index.upsert, [dog], embedder.embed([dog.description]))
            assert (await _ids(client, q="a dog barking"))[0] == dog.id
            assert (await _ids(client, q="a dog barking", ranking="vector"))[0] == dog.id
            assert (await _ids(client, q="dog", ranking="keyword")) == [dog.id]
            assert (await _ids(client, q="an animal", ranking="vector", stream="street"))[0] == dog.id
            similar = await client.get(f"/api/moments/{dog.id}/similar")
            assert similar.status_code == 200 and dog.id not in [r["moment"]["id"] for r in similar.json()["results"]]

            # A moment rebuilt under the same id replaces the old one, for words and for meaning.
            rebuilt = make_moment("lobby", moments.help.start_ms, moments.help.end_ms, {"person": 4}, said, -9.0)
            await asyncio.to_thread(indexer.index.upsert, [rebuilt], embedder.embed([rebuilt.description]))
            fire = (await client.get("/api/search", params={"q": "fire in the building"})).json()["results"]
            assert fire[0]["moment"]["id"] == moments.help.id and fire[0]["moment"]["transcript"] == said
            assert await _ids(client, q="police", ranking="keyword") == []
            assert moments.help.id not in await _ids(client, q=QUERY, has_alert="true")

            await asyncio.to_thread(indexer.index.delete, [moments.jfk_more.id])
            similar_jfk = (await client.get(f"/api/moments/{moments.jfk.id}/similar")).json()["results"]
            assert moments.jfk_more.id not in [result["moment"]["id"] for result in similar_jfk]
            gone = await client.get(f"/api/moments/{moments.jfk_more.id}/similar")
            assert gone.status_code == 404
        finally:
            await asyncio.to_thread(indexer.windows.close)
            await asyncio.to_thread(indexer.index.close)
        # Closed, the writer has saved its graph: the web loads it and still finds the new moment.
        assert (await _ids(client, q="a dog barking", ranking="vector"))[0] == dog.id
        assert moments.jfk_more.id not in await _ids(client, q="ask what you can do for your country", n=100)
