"""Weighted late fusion on hand-built windows: signals, g, score, for/cooldown, alert contents."""

from __future__ import annotations

import pytest

from config.schema import EventConfig, Predicate, Ramp, Term
from daemon.fuse.rules import (
    EventRule,
    JoinedWindow,
    Reading,
    RuleState,
    alert_id,
    signal_reading,
    signal_value,
    strongest,
    summaries,
    term_score,
)
from streams.models import Alert
from tests.helpers import DISTRESS, W, audio, joined, speech, video

# The demo's event (config/examples/demo.yaml): terms on every stream of the site, plus a loudness ramp.
SITE_WIDE = EventConfig.model_validate(
    {
        "name": "distress",
        "threshold": 0.8,
        "cooldown": 0,
        "terms": [
            {"signal": "video.person.count", "weight": 0.4, "when": {"op": ">=", "value": 1}},
            {"signal": "speech.keywords", "weight": 0.6, "match": ["help", "police"]},
            {"signal": "audio.loudness_dbfs", "weight": 0.1, "ramp": {"low": -40, "high": -20}},
        ],
    }
)


def test_signals_take_the_max_over_the_terms_streams() -> None:
    window = joined(0, video("cam", 0, 2), video("other", 0, 5), audio("mic", 0, -30), speech("mic", 0, "Help me!"))
    person = DISTRESS.terms[0]
    assert signal_value(person, window) == 2.0, "only the term's own stream counts"
    assert signal_value(Term(signal="video.person.count", weight=1, when=Predicate(op=">", value=0)), window) == 5.0
    assert signal_value(DISTRESS.terms[1], window) == 1.0
    assert signal_value(DISTRESS.terms[2], window) == -30.0
    assert (
        signal_value(
            Term(signal="video.zone.door.occupancy", weight=1, when=Predicate(op=">", value=0)),
            joined(0, video("cam", 0, 1, door_occupancy=2)),
        )
        == 2.0
    )
    assert signal_value(DISTRESS.terms[2], joined(0, video("cam", 0, 1))) is None, "no microphone: no value"


def test_a_zone_name_with_dots_is_read_whole() -> None:
    cam = video("cam", 0, 1, door_occupancy=3)
    assert cam.video is not None
    zones = {"gate.north": cam.video.zones["door"]}
    dotted = cam.model_copy(update={"video": cam.video.model_copy(update={"zones": zones})})
    term = Term(signal="video.zone.gate.north.occupancy", weight=1, when=Predicate(op=">", value=0))
    assert signal_value(term, joined(0, dotted)) == 3.0


@pytest.mark.parametrize(
    ("term", "value", "g"),
    [
        (Term(signal="audio.loudness_dbfs", weight=1, ramp=Ramp(low=-40, high=-20)), -30.0, 0.5),
        (Term(signal="audio.loudness_dbfs", weight=1, ramp=Ramp(low=-40, high=-20)), -10.0, 1.0),
        (Term(signal="audio.loudness_dbfs", weight=1, ramp=Ramp(low=-40, high=-20)), -50.0, 0.0),
        (Term(signal="audio.loudness_dbfs", weight=1, ramp=Ramp(low=-20, high=-40)), -25.0, 0.25),
        (Term(signal="video.person.count", weight=1, when=Predicate(op=">=", value=2)), 1.0, 0.0),
        (Term(signal="video.person.count", weight=1, when=Predicate(op=">=", value=2)), 2.0, 1.0),
        (Term(signal="video.person.count", weight=1, when=Predicate(op=">=", value=2)), None, 0.0),
        (Term(signal="speech.keywords", weight=1, match=["help"]), 1.0, 1.0),
    ],
)
def test_term_score(term: Term, value: float | None, g: float) -> None:
    assert term_score(term, value) == pytest.approx(g)


def test_fires_with_contributions_and_evidence() -> None:
    rule = EventRule(DISTRESS, W)
    window = joined(
        30_000,
        video("cam", 30_000, 2, snapshot="hq/cam/30000.jpg"),
        audio("mic", 30_000, -30),
        speech("mic", 30_000, "Help! Somebody call the police!"),
    )
    evaluation = rule.evaluate(window, RuleState())
    assert evaluation.fired and evaluation.score == pytest.approx(0.9)
    assert [c.contribution for c in evaluation.terms] == [0.4, 0.4, 0.1]
    alert = rule.alert(window, evaluation)
    assert alert.id == alert_id("distress", "hq", 30_000) and len(alert.id) == 24
    assert alert.evidence.snapshot == "hq/cam/30000.jpg" and len(alert.evidence.detections) == 2
    assert "police" in alert.evidence.transcript and alert.severity == "high"
    assert alert.streams == ["cam", "mic"]


def test_single_modality_is_not_enough() -> None:
    rule = EventRule(DISTRESS, W)
    seen_only = joined(0, video("cam", 0, 3), audio("mic", 0, -20), speech("mic", 0, ""))
    heard_only = joined(2000, video("cam", 2000, 0), audio("mic", 2000, -20), speech("mic", 2000, "help"))
    state = RuleState()
    assert not rule.evaluate(seen_only, state).fired
    assert not rule.evaluate(heard_only, state).fired


def test_for_needs_consecutive_windows_and_cooldown_rests() -> None:
    event = DISTRESS.model_copy(update={"for_windows": 2, "cooldown": 6.0})
    rule = EventRule(event, W)
    state = RuleState()

    def hot(start: int) -> JoinedWindow:
        return joined(start, video("cam", start, 1), speech("mic", start, "help"), audio("mic", start, -20))

    fired = [rule.evaluate(hot(start), state).fired for start in range(0, 20_000, W)]
    # windows 0,2: streak 2 → fire at 2000; rest until 4000 + 6000; streak rebuilds → fire at 10000 …
    assert fired == [False, True, False, False, False, True, False, False, False, True]
    gap = RuleState()
    assert not rule.evaluate(hot(0), gap).fired
    assert not rule.evaluate(hot(4000), gap).fired, "a missing window breaks the streak"


def test_summaries_per_stream() -> None:
    window = joined(0, video("cam", 0, 2), audio("mic", 0, -33), speech("mic", 0, "hello there"))
    by_stream = {s.stream: s for s in summaries(window)}
    assert by_stream["cam"].objects == {"person": 2} and by_stream["cam"].loudness_dbfs is None
    assert by_stream["mic"].transcript == "hello there" and by_stream["mic"].loudness_dbfs == -33


def _fire(event: EventConfig, window: JoinedWindow) -> Alert:
    rule = EventRule(event, W)
    evaluation = rule.evaluate(window, RuleState())
    assert evaluation.fired
    return rule.alert(window, evaluation)


def test_each_term_names_the_stream_that_gave_its_value_and_the_alert_only_those() -> None:
    # The street sees a person too, and its microphone is loud but says nothing to the event:
    # the lobby gave both the person count (2 > 1) and the call for help.
    window = joined(
        0,
        video("street", 0, 1, snapshot="hq/street/0.jpg"),
        speech("street", 0, "nice weather"),
        audio("street", 0, -50),
        video("lobby", 0, 2, snapshot="hq/lobby/0.jpg"),
        speech("lobby", 0, "Help!"),
    )
    alert = _fire(SITE_WIDE, window)
    assert [(t.signal, t.value, t.stream) for t in alert.terms] == [
        ("video.person.count", 2.0, "lobby"),
        ("speech.keywords", 1.0, "lobby"),
        ("audio.loudness_dbfs", -50.0, "street"),
    ]
    assert alert.terms[2].contribution == 0, "the street's loudness gave no score"
    assert alert.streams == ["lobby"]
    assert alert.evidence.snapshot == "hq/lobby/0.jpg" and len(alert.evidence.detections) == 2
    assert alert.evidence.transcript == "Help!"


def test_streams_that_gave_different_terms_are_all_named() -> None:
    window = joined(
        0,
        video("lobby", 0, 1, snapshot="hq/lobby/0.jpg"),
        speech("lobby", 0, "help, police"),
        video("street", 0, 3, snapshot="hq/street/0.jpg"),
        speech("street", 0, "hello"),
    )
    alert = _fire(SITE_WIDE, window)
    assert [t.stream for t in alert.terms[:2]] == ["street", "lobby"]
    assert alert.streams == ["lobby", "street"]
    assert alert.evidence.snapshot == "hq/street/0.jpg", "the video that gave the video term its value"
    assert len(alert.evidence.detections) == 3
    assert alert.evidence.transcript == "help, police", "only the speech that gave the speech term"


def test_a_tie_goes_to_the_first_stream_by_name_whatever_the_arrival_order() -> None:
    window = joined(
        0,
        speech("street", 0, "help"),
        video("street", 0, 2, snapshot="hq/street/0.jpg"),
        video("lobby", 0, 2, snapshot="hq/lobby/0.jpg"),
        speech("lobby", 0, "Help me"),
    )
    person, keywords, _ = SITE_WIDE.terms
    assert signal_reading(person, window) == Reading(2.0, "lobby")
    assert signal_reading(keywords, window) == Reading(1.0, "lobby")
    assert strongest([("b", 1.0), ("a", 1.0), ("c", 0.5)]) == Reading(1.0, "a")
    assert strongest([("b", 2.0), ("a", 1.0)]) == Reading(2.0, "b")
    assert strongest([]) is None
    alert = _fire(SITE_WIDE, window)
    assert alert.streams == ["lobby"] and alert.evidence.snapshot == "hq/lobby/0.jpg"
    assert alert.evidence.transcript == "Help me"


def test_without_a_video_term_the_snapshot_comes_from_a_contributing_stream() -> None:
    heard = EventConfig.model_validate(
        {"name": "call", "threshold": 0.5, "terms": [{"signal": "speech.keywords", "weight": 1, "match": ["help"]}]}
    )
    window = joined(
        0,
        video("street", 0, 3, snapshot="hq/street/0.jpg"),
        video("lobby", 0, 1, snapshot="hq/lobby/0.jpg"),
        speech("lobby", 0, "help"),
        speech("street", 0, "hello"),
    )
    alert = _fire(heard, window)
    assert alert.streams == ["lobby"]
    assert alert.evidence.snapshot == "hq/lobby/0.jpg", "not the street's, though it saw more"
    assert alert.evidence.transcript == "help"


def test_without_a_speech_term_the_transcript_is_the_contributing_streams_speech() -> None:
    seen = EventConfig.model_validate(
        {
            "name": "crowd",
            "threshold": 0.5,
            "terms": [{"signal": "video.person.count", "weight": 1, "when": {"op": ">=", "value": 2}}],
        }
    )
    window = joined(0, video("lobby", 0, 2), speech("lobby", 0, "quiet please"), speech("street", 0, "hello"))
    alert = _fire(seen, window)
    assert alert.streams == ["lobby"] and alert.evidence.transcript == "quiet please"
