"""Weighted late fusion on hand-built windows: signals, g, score, for/cooldown, alert contents."""

from __future__ import annotations

import pytest

from config.schema import Predicate, Ramp, Term
from daemon.fuse.rules import EventRule, JoinedWindow, RuleState, alert_id, signal_value, summaries, term_score
from tests.helpers import DISTRESS, W, audio, joined, speech, video


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
