"""The `MomentIndex` contract, run against the store: small hand-made vectors, no model.

Written for any store (the LanceDB candidate passed it too before `bench/search_stores.py`
chose SQLite); the tests named `test_sqlite_*` are the SQLite store's own guarantees.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from daemon.search import store
from daemon.search.index import MomentFilter, MomentIndex, Vectors
from daemon.search.store import SqliteMomentIndex, fts_query, open_index
from streams.models import AlertRef, Moment

ROOT = Path(__file__).resolve().parents[4]
DIM = 8
T0 = 1_800_000_000_000
Opener = Callable[[Path], MomentIndex]
OPENERS: dict[str, Opener] = {"sqlite": open_index}


def moment(stream: str, n: int, description: str, site: str = "hq", alert: bool = False) -> Moment:
    start = T0 + n * 2000
    return Moment(
        id=f"{stream}@{start}",
        site=site,
        stream=stream,
        start_ms=start,
        end_ms=start + 2000,
        windows=1,
        alerts=[AlertRef(id=f"a{n}", event="help", score=0.9, window_start=start)] if alert else [],
        description=description,
    )


def unit(seed: int) -> Vectors:
    vector = np.random.default_rng(seed).normal(size=DIM).astype(np.float32)
    return vector / np.linalg.norm(vector)


CORPUS = [
    moment("lobby", 0, "two people walk in the lobby, quiet"),
    moment("lobby", 1, "a person shouts call the police, loud", alert=True),
    moment("lobby", 2, "police car parked by the door, speech: call me later"),
    moment("street", 0, "three cars drive past, loud traffic"),
    moment("street", 1, "a dog barks at a bicycle"),
    moment("yard", 0, "someone calls for help near the gate", site="depot", alert=True),
]
VECTORS = np.stack([unit(i) for i in range(len(CORPUS))])


@pytest.fixture(params=sorted(OPENERS))
def opener(request: pytest.FixtureRequest) -> Opener:
    return OPENERS[request.param]


@pytest.fixture
def index(opener: Opener, tmp_path: Path) -> Iterator[MomentIndex]:
    opened = opener(tmp_path / "index")
    opened.upsert(CORPUS, VECTORS)
    yield opened
    opened.close()


def ids(hits: list[object]) -> list[str]:
    return [hit.id for hit in hits]  # type: ignore[attr-defined]


def test_everything_is_kept_and_read_back(index: MomentIndex) -> None:
    assert index.count() == len(CORPUS)
    wanted = [CORPUS[3].id, "nope", CORPUS[0].id]
    assert index.get(wanted) == [CORPUS[3], CORPUS[0]]
    stored = index.vector(CORPUS[2].id)
    assert stored is not None
    np.testing.assert_allclose(stored, VECTORS[2])
    assert index.vector("nope") is None


def test_persists_across_reopen(opener: Opener, tmp_path: Path) -> None:
    first = opener(tmp_path / "index")
    first.upsert(CORPUS, VECTORS)
    first.close()
    again = opener(tmp_path / "index")
    try:
        assert again.count() == len(CORPUS)
        assert again.get([CORPUS[4].id]) == [CORPUS[4]]
        assert ids(again.keyword("dog", MomentFilter(), 5)) == [CORPUS[4].id]
        assert ids(again.nearest(VECTORS[5], MomentFilter(), 1)) == [CORPUS[5].id]
    finally:
        again.close()


def test_upsert_replaces_by_id(index: MomentIndex) -> None:
    changed = CORPUS[4].model_copy(update={"description": "a horse trots by"})
    index.upsert([changed], unit(99)[None, :])
    assert index.count() == len(CORPUS)
    assert index.get([changed.id]) == [changed]
    assert index.keyword("dog barks", MomentFilter(), 5) == []
    assert ids(index.keyword("horse", MomentFilter(), 5)) == [changed.id]
    assert ids(index.nearest(unit(99), MomentFilter(), 1)) == [changed.id]
    scores = {hit.id: hit.score for hit in index.nearest(VECTORS[4], MomentFilter(), len(CORPUS))}
    assert scores[changed.id] == pytest.approx(float(unit(99) @ VECTORS[4]), abs=1e-5)  # the old vector is gone


def test_a_moment_given_twice_in_one_call_keeps_the_last(index: MomentIndex) -> None:
    first = moment("dock", 0, "a forklift beeps")
    second = first.model_copy(update={"description": "a truck reverses"})
    index.upsert([first, second], np.stack([unit(50), unit(51)]))
    assert index.count() == len(CORPUS) + 1
    assert index.get([first.id]) == [second]
    assert ids(index.nearest(unit(51), MomentFilter(), 1)) == [first.id]


def test_keyword_ranks_the_exact_phrase_first(index: MomentIndex) -> None:
    hits = index.keyword("call the police", MomentFilter(), 10)
    assert ids(hits)[0] == CORPUS[1].id
    assert set(ids(hits)) >= {CORPUS[1].id, CORPUS[2].id}
    assert all(a.score >= b.score for a, b in itertools.pairwise(hits))


def test_keyword_stems_and_ignores_case(index: MomentIndex) -> None:
    assert ids(index.keyword("DOGS barking", MomentFilter(), 5)) == [CORPUS[4].id]


def test_nearest_finds_the_moment_itself_first(index: MomentIndex) -> None:
    for i, vector in enumerate(VECTORS):
        hits = index.nearest(vector, MomentFilter(), 3)
        assert ids(hits)[0] == CORPUS[i].id
        assert hits[0].score == pytest.approx(1.0, abs=1e-5)
        assert hits[0].score >= hits[1].score >= hits[2].score


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        (MomentFilter(site="depot"), {5}),
        (MomentFilter(streams=("street",)), {3, 4}),
        (MomentFilter(streams=("street", "yard")), {3, 4, 5}),
        (MomentFilter(since_ms=T0 + 6001), set()),  # ends at or after: the latest ends at T0 + 6000
        (MomentFilter(since_ms=T0 + 4000), {1, 2, 4}),
        (MomentFilter(until_ms=T0 + 2000), {0, 3, 5}),  # starts before
        (MomentFilter(has_alert=True), {1, 5}),
        (MomentFilter(has_alert=False), {0, 2, 3, 4}),
        (MomentFilter(site="hq", streams=("lobby",), since_ms=T0 + 2001, has_alert=False), {2}),
    ],
)
def test_filters_narrow_both_searches(index: MomentIndex, where: MomentFilter, expected: set[int]) -> None:
    wanted = {CORPUS[i].id for i in expected}
    for vector in VECTORS:
        assert set(ids(index.nearest(vector, where, 10))) == wanted
    every_word = " ".join({word for m in CORPUS for word in m.description.replace(",", " ").split()})
    assert set(ids(index.keyword(every_word, where, 10))) == wanted


def test_delete_before_forgets_what_ended_earlier(index: MomentIndex) -> None:
    assert index.delete_before(T0 + 2000 + 1) == 3  # the n = 0 moments end at T0 + 2000, the others later
    assert index.count() == 3
    assert {m.id for m in index.get([m.id for m in CORPUS])} == {CORPUS[1].id, CORPUS[2].id, CORPUS[4].id}
    assert set(ids(index.nearest(VECTORS[0], MomentFilter(), 10))) == {CORPUS[1].id, CORPUS[2].id, CORPUS[4].id}
    assert index.keyword("traffic", MomentFilter(), 5) == []
    assert index.vector(CORPUS[0].id) is None
    assert index.delete_before(T0) == 0


def test_nothing_found_is_an_empty_list(index: MomentIndex, opener: Opener, tmp_path: Path) -> None:
    assert index.keyword("", MomentFilter(), 5) == []
    assert index.keyword("  ?! ", MomentFilter(), 5) == []
    assert index.keyword("zeppelin", MomentFilter(), 5) == []
    assert index.keyword("dog", MomentFilter(site="nowhere"), 5) == []
    assert index.nearest(VECTORS[0], MomentFilter(site="nowhere"), 5) == []
    empty = opener(tmp_path / "empty")
    try:
        assert empty.count() == 0
        assert empty.keyword("dog", MomentFilter(), 5) == []
        assert empty.nearest(VECTORS[0], MomentFilter(), 5) == []
        assert empty.get(["x"]) == []
        assert empty.delete_before(T0) == 0
    finally:
        empty.close()


def test_queries_are_not_sql_or_fts_syntax(index: MomentIndex) -> None:
    for text in ['"', "dog OR", "NEAR(dog", "a' OR 1=1 --", "*", "dog)"]:
        assert isinstance(index.keyword(text, MomentFilter(site="x'y"), 5), list)
    assert fts_query('dog "barks" now') == '"dog barks now" OR "dog" OR "barks" OR "now"'


# The SQLite store's own guarantees.


def test_sqlite_filtered_graph_search_equals_exact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both ways of answering a filtered vector query (exact on the kept moments, over-fetching the
    graph) give the true nearest moments of the filter."""
    rng = np.random.default_rng(7)
    moments = [moment(f"s{i % 7}", i, f"moment {i}", alert=i % 5 == 0) for i in range(600)]
    vectors = rng.normal(size=(600, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = SqliteMomentIndex(tmp_path / "index")
    try:
        index.upsert(moments, vectors)
        where = MomentFilter(streams=("s3",), has_alert=True, until_ms=T0 + 500 * 2000)
        kept = [i for i, m in enumerate(moments) if m.stream == "s3" and m.alerts and m.start_ms < T0 + 500 * 2000]
        for seed in range(5):
            query = rng.normal(size=DIM).astype(np.float32)
            query /= np.linalg.norm(query)
            truth = [moments[i].id for i in sorted(kept, key=lambda i: -float(vectors[i] @ query))[:5]]
            monkeypatch.setattr(store, "EXACT_LIMIT", 10_000)
            assert ids(index.nearest(query, where, 5)) == truth, seed
            monkeypatch.setattr(store, "EXACT_LIMIT", 0)
            assert ids(index.nearest(query, where, 5)) == truth, seed
    finally:
        index.close()


def _killed_after_writing(tmp_path: Path) -> None:
    """Like a process killed after its last writes: the first three moments closed cleanly (graph saved),
    then the rest written and the n = 0 moments deleted, with no close (no graph saved for those)."""
    index = SqliteMomentIndex(tmp_path / "index")
    index.upsert(CORPUS[:3], VECTORS[:3])
    index.close()
    (tmp_path / "moments.json").write_text("[" + ",".join(m.model_dump_json() for m in CORPUS[3:]) + "]")
    np.save(tmp_path / "vectors.npy", VECTORS[3:])
    script = f"""
import os, sys
from pathlib import Path
import numpy as np
sys.path.insert(0, {str(ROOT)!r})
from pydantic import TypeAdapter
from daemon.search.store import SqliteMomentIndex
from streams.models import Moment
moments = TypeAdapter(list[Moment]).validate_json(Path({str(tmp_path / "moments.json")!r}).read_text())
index = SqliteMomentIndex(Path({str(tmp_path / "index")!r}))
index.upsert(moments, np.load({str(tmp_path / "vectors.npy")!r}))
index.delete_before({T0 + 2000 + 1})
os._exit(0)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize("graph_file", ["stale", "missing", "corrupt"])
def test_sqlite_graph_agrees_with_the_database_after_a_crash(
    tmp_path: Path, graph_file: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite is authoritative: a stale graph is caught up from the rows written after its generation
    (not rebuilt), a missing or unreadable one is rebuilt from the stored vectors."""
    _killed_after_writing(tmp_path)
    folder = tmp_path / "index"
    if graph_file == "stale":
        monkeypatch.setattr(SqliteMomentIndex, "rebuild", lambda self: pytest.fail("rebuilt instead of caught up"))
    elif graph_file == "missing":
        (folder / "vectors.usearch").unlink()
    elif graph_file == "corrupt":
        (folder / "vectors.usearch").write_bytes(b"\x00" * 100)
    again = SqliteMomentIndex(folder)
    try:
        assert again.count() == 3
        for i in (1, 2, 4):  # what is left: each found first, with its own vector
            hits = again.nearest(VECTORS[i], MomentFilter(), 6)
            assert [hit.id for hit in hits][:1] == [CORPUS[i].id]
            assert {hit.id for hit in hits} == {CORPUS[1].id, CORPUS[2].id, CORPUS[4].id}
    finally:
        again.close()
    state = json.loads((folder / "vectors.json").read_text())
    assert state["dimensions"] == DIM


def test_sqlite_saves_the_graph_while_writing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store, "SAVE_EVERY_S", 0.0)
    index = SqliteMomentIndex(tmp_path / "index")
    try:
        index.upsert(CORPUS[:2], VECTORS[:2])
        first = json.loads((tmp_path / "index" / "vectors.json").read_text())["generation"]
        index.upsert(CORPUS[2:], VECTORS[2:])
        assert json.loads((tmp_path / "index" / "vectors.json").read_text())["generation"] == first + 1
    finally:
        index.close()


def test_sqlite_directory_has_one_owner(tmp_path: Path) -> None:
    index = SqliteMomentIndex(tmp_path / "index")
    try:
        with pytest.raises(RuntimeError, match="another process"):
            SqliteMomentIndex(tmp_path / "index")
    finally:
        index.close()
    SqliteMomentIndex(tmp_path / "index").close()


def test_delete_forgets_those_moments_everywhere(index: MomentIndex) -> None:
    index.upsert(CORPUS, VECTORS)
    index.delete([CORPUS[1].id, "nobody@0"])
    assert index.count() == len(CORPUS) - 1 and index.get([CORPUS[1].id]) == []
    assert CORPUS[1].id not in ids(index.keyword("police", MomentFilter(), 10))
    assert CORPUS[1].id not in ids(index.nearest(VECTORS[1], MomentFilter(), 10))


def test_sqlite_a_reader_sees_every_committed_write_of_the_writer(tmp_path: Path) -> None:
    writer = SqliteMomentIndex(tmp_path)
    try:
        writer.upsert(CORPUS[:3], VECTORS[:3])
        writer.save()
        reader = SqliteMomentIndex(tmp_path, readonly=True)
        try:
            assert ids(reader.nearest(VECTORS[0], MomentFilter(), 1)) == [CORPUS[0].id]
            writer.upsert(CORPUS[3:], VECTORS[3:])  # after the reader opened, before any save
            assert ids(reader.nearest(VECTORS[4], MomentFilter(), 1)) == [CORPUS[4].id]
            assert ids(reader.keyword("dog", MomentFilter(), 5)) == [CORPUS[4].id]
            writer.upsert([CORPUS[0]], VECTORS[5:6])  # replaced: the new vector wins over the saved graph's
            assert ids(reader.nearest(VECTORS[5], MomentFilter(), 2))[0] in {CORPUS[0].id, CORPUS[5].id}
            assert CORPUS[0].id not in ids(reader.nearest(VECTORS[0], MomentFilter(), 1))
            writer.delete([CORPUS[1].id])
            assert CORPUS[1].id not in ids(reader.nearest(VECTORS[1], MomentFilter(), 6))
            writer.save()  # the reader loads the newer graph and still sees the same
            assert ids(reader.nearest(VECTORS[4], MomentFilter(), 1)) == [CORPUS[4].id]
            assert reader.count() == len(CORPUS) - 1
        finally:
            reader.close()
    finally:
        writer.close()
    with pytest.raises(FileNotFoundError, match="no moment index"):
        SqliteMomentIndex(tmp_path / "missing", readonly=True)


def test_at_finds_the_moment_covering_a_time(index: MomentIndex) -> None:
    assert index.at("lobby", T0 + 2000) == CORPUS[1]
    assert index.at("lobby", T0 + 3999) == CORPUS[1]
    assert index.at("street", T0 + 9000) is None and index.at("nowhere", T0) is None
