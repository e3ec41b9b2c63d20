"""A term's signal is parsed once, into the parts rules, learned fusion and evaluation read."""

from __future__ import annotations

import pytest

from config.schema import Signal, Term, parse_signal


@pytest.mark.parametrize(
    ("text", "signal"),
    [
        ("video.person.count", Signal("video", "count", label="person")),
        ("video.traffic light.max_count", Signal("video", "max_count", label="traffic light")),
        ("video.zone.door.entered", Signal("video", "entered", zone="door")),
        ("video.zone.gate.2.dwell", Signal("video", "dwell", zone="gate.2")),
        ("video.zone.count", Signal("video", "count", label="zone")),
        ("audio.loudness_dbfs", Signal("audio", "loudness_dbfs")),
        ("speech.words", Signal("speech", "words")),
        ("speech.keywords", Signal("speech", "keywords")),
    ],
)
def test_each_signal_form_parses_and_prints_back(text: str, signal: Signal) -> None:
    assert parse_signal(text) == signal
    assert str(signal) == text


def test_only_keyword_and_text_signals_are_text() -> None:
    assert parse_signal("speech.keywords").is_text and parse_signal("speech.text_matches").is_text
    assert not parse_signal("speech.words").is_text and not parse_signal("video.person.count").is_text


def test_a_term_carries_its_parsed_signal_and_keeps_the_text() -> None:
    term = Term(signal="video.zone.gate.2.occupancy", weight=1.0, when={"op": ">=", "value": 1})
    assert term.parsed == Signal("video", "occupancy", zone="gate.2")
    assert term.model_dump()["signal"] == "video.zone.gate.2.occupancy"
    with pytest.raises(ValueError, match="signal"):
        Term(signal="video.person", weight=1.0, when={"op": ">=", "value": 1})
