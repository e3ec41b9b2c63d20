"""Stems as the moment index's tokenizer makes them: what "why it matched" compares."""

from __future__ import annotations

from daemon.search.words import stems


def test_words_are_stemmed_as_the_keyword_index_stems_them() -> None:
    shouted, described, accents = stems(["Shouted", "Heard: loud speech, shouting.", "café"])
    assert shouted == {"shout"} and shouted <= described
    assert described == {"heard", "loud", "speech", "shout"}
    assert accents == {"cafe"}  # remove_diacritics, as the index tokenizes


def test_nothing_to_stem_gives_empty_sets_in_order() -> None:
    assert stems([]) == []
    assert stems(["", "...", "dogs"]) == [frozenset(), frozenset(), frozenset({"dog"})]
