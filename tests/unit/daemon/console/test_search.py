"""The search API's request checks: `/api/search` and `/api/moments/<id>/similar` parameters.

Proves that `parse_search` and `parse_filter` turn a good query string into the request and
metadata filter the searcher runs, with the documented defaults, and that each wrong
parameter (missing or too long `q`, unknown ranking, `n` out of bounds, a stream or site
that is not a name, a non-integer time, `has_alert` other than true/false) is refused with
a `BadSearch` whose message names the parameter, so the API's 400 says what to fix.
"""

from __future__ import annotations

import pytest
from starlette.datastructures import QueryParams

from daemon.console.search import MAX_RESULTS, BadSearch, SearchRequest, parse_filter, parse_search, parse_similar
from daemon.search.index import MomentFilter


def _bad(query: str) -> str:
    with pytest.raises(BadSearch) as refused:
        parse_search(QueryParams(query))
    return str(refused.value)


def test_a_bare_query_gets_the_defaults() -> None:
    assert parse_search(QueryParams("q=someone+shouted+for+help")) == SearchRequest(
        query="someone shouted for help", where=MomentFilter(), limit=10, ranking="hybrid"
    )


def test_the_query_is_stripped_and_required() -> None:
    assert parse_search(QueryParams("q=%20%20help%20")).query == "help"
    for query in ("", "q=", "q=%20%20%09", "stream=lobby"):
        assert _bad(query).startswith("q is required"), query


def test_a_query_longer_than_500_characters_is_refused() -> None:
    assert parse_search(QueryParams({"q": "a" * 500})).query == "a" * 500
    assert _bad(f"q={'a' * 501}") == "q is longer than 500 characters"
    # The length counts what is searched: spaces around it are stripped first.
    assert parse_search(QueryParams({"q": " " * 20 + "b" * 500 + " " * 20})).query == "b" * 500


@pytest.mark.parametrize("ranking", ["keyword", "vector", "hybrid"])
def test_each_ranking_is_accepted(ranking: str) -> None:
    assert parse_search(QueryParams({"q": "help", "ranking": ranking})).ranking == ranking


def test_an_empty_ranking_is_the_default_as_an_empty_n_is() -> None:
    assert parse_search(QueryParams("q=help&ranking=&n=")).ranking == "hybrid"


@pytest.mark.parametrize("ranking", ["bm25", "Hybrid", " keyword", "x" * 100])
def test_an_unknown_ranking_is_refused_with_the_choices(ranking: str) -> None:
    message = _bad(f"q=help&ranking={ranking}")
    assert message.startswith("ranking must be one of keyword, vector, hybrid, got "), message
    assert repr(ranking[:40]) in message and len(message) < 120


def test_n_is_bounded() -> None:
    assert parse_search(QueryParams("q=help&n=1")).limit == 1
    assert parse_search(QueryParams(f"q=help&n={MAX_RESULTS}")).limit == MAX_RESULTS
    assert parse_search(QueryParams("q=help&n=")).limit == 10
    assert _bad("q=help&n=0") == f"n must be between 1 and {MAX_RESULTS}, got 0"
    assert _bad(f"q=help&n={MAX_RESULTS + 1}") == f"n must be between 1 and {MAX_RESULTS}, got {MAX_RESULTS + 1}"
    assert _bad("q=help&n=-3") == f"n must be between 1 and {MAX_RESULTS}, got -3"
    assert _bad("q=help&n=ten") == "n must be an integer, got 'ten'"
    assert _bad("q=help&n=2.5") == "n must be an integer, got '2.5'"


def test_stream_repeats_and_site_narrow_the_filter() -> None:
    where = parse_filter(QueryParams("stream=lobby&site=hq&stream=street&stream=gate.2"))
    assert where == MomentFilter(site="hq", streams=("lobby", "street", "gate.2"))
    assert parse_search(QueryParams("q=help&stream=lobby")).where.streams == ("lobby",)
    assert parse_filter(QueryParams("site=")).site is None


def test_an_empty_stream_parameter_narrows_nothing_as_an_empty_site_does() -> None:
    # A form whose stream list is left at "all" sends `stream=`: no narrowing, not a 400.
    assert parse_filter(QueryParams("stream=&site=")) == MomentFilter()
    assert parse_filter(QueryParams("stream=&stream=lobby")).streams == ("lobby",)


@pytest.mark.parametrize(
    "query",
    [
        "stream=../etc",
        "stream=lobby&stream=a/b",
        "site=hq%20east",
        "stream=-lobby",
        "site=" + "s" * 64,
        "stream=caf%C3%A9",
    ],
)
def test_a_stream_or_site_that_is_not_a_name_is_refused(query: str) -> None:
    with pytest.raises(BadSearch, match=r"^not a stream or site name: '") as refused:
        parse_filter(QueryParams(query))
    assert len(str(refused.value)) < 80, "the echoed name is cut short"


def test_since_and_until_are_integers() -> None:
    where = parse_filter(QueryParams("since_ms=1700000000000&until_ms=1700000060000"))
    assert (where.since_ms, where.until_ms) == (1_700_000_000_000, 1_700_000_060_000)
    assert parse_filter(QueryParams("since_ms=&until_ms=")) == MomentFilter()
    for name in ("since_ms", "until_ms"):
        for raw, message in (
            ("yesterday", f"{name} must be an integer, got 'yesterday'"),
            ("1.5e12", f"{name} must be an integer, got '1.5e12'"),
            ("-1", f"{name} must be between 0 and {1 << 62}, got -1"),
            (str(1 << 63), f"{name} must be between 0 and {1 << 62}, got {1 << 63}"),
        ):
            with pytest.raises(BadSearch) as refused:
                parse_filter(QueryParams({name: raw}))
            assert str(refused.value) == message


def test_has_alert_is_true_false_or_absent() -> None:
    assert parse_filter(QueryParams("has_alert=true")).has_alert is True
    assert parse_filter(QueryParams("has_alert=false")).has_alert is False
    assert parse_filter(QueryParams("has_alert=")).has_alert is None
    assert parse_filter(QueryParams("")).has_alert is None
    for other in ("yes", "1", "True", "FALSE", "on"):
        with pytest.raises(BadSearch, match=r"^has_alert must be true or false$"):
            parse_filter(QueryParams({"has_alert": other}))


def test_a_search_carries_its_filter() -> None:
    asked = parse_search(QueryParams("q=help&ranking=keyword&n=3&stream=lobby&site=hq&since_ms=5&has_alert=true"))
    assert asked == SearchRequest(
        query="help",
        where=MomentFilter(site="hq", streams=("lobby",), since_ms=5, has_alert=True),
        limit=3,
        ranking="keyword",
    )
    assert _bad("q=help&has_alert=maybe") == "has_alert must be true or false"


def test_similar_moments_take_the_filter_and_the_same_bounded_n() -> None:
    assert parse_similar(QueryParams("")) == (MomentFilter(), 10)
    assert parse_similar(QueryParams("n=5&stream=lobby")) == (MomentFilter(streams=("lobby",)), 5)
    for raw, message in (
        ("0", f"n must be between 1 and {MAX_RESULTS}, got 0"),
        ("500", f"n must be between 1 and {MAX_RESULTS}, got 500"),
        ("many", "n must be an integer, got 'many'"),
    ):
        with pytest.raises(BadSearch) as refused:
            parse_similar(QueryParams({"n": raw}))
        assert str(refused.value) == message
    with pytest.raises(BadSearch, match="not a stream or site name"):
        parse_similar(QueryParams("stream=../x"))
