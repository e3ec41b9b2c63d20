"""Learned feature-level fusion: vectors, training, JSON model, and the learned rule firing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from config import ConfigError, load_config_text
from config.schema import EventConfig
from daemon.fuse.learned import FeatureSpec, LearnedModel, LearnedRule, train
from daemon.fuse.rules import RuleState
from tests.helpers import audio, joined, speech, video

SPEC = FeatureSpec(classes=("person", "car"), zones=("door",), keywords=("help", "police"))


def _windows() -> tuple[list, list[bool]]:
    windows, labels = [], []
    for n in range(60):
        start = n * 2000
        persons = n % 3
        # "help" with somebody in view is the event; "help" heard in an empty hall is not.
        said = "help me" if n % 6 in (0, 1) else ("nice weather" if n % 5 == 0 else "")
        windows.append(
            joined(
                start,
                video("cam", start, persons, door_occupancy=persons),
                audio("mic", start, -30 - n % 7),
                speech("mic", start, said),
            )
        )
        labels.append(said == "help me" and persons > 0)
    return windows, labels


def test_feature_vector_has_a_named_slot_for_everything() -> None:
    window = joined(0, video("cam", 0, 2, door_occupancy=1), audio("mic", 0, -25), speech("mic", 0, "Help!"))
    vector = dict(zip(SPEC.names, SPEC.vector(window), strict=True))
    assert vector["video.person.count"] == 2 and vector["video.car.count"] == 0
    assert vector["video.zone.door.occupancy"] == 1 and vector["audio.loudness_dbfs"] == -25
    assert vector["speech.keyword.help"] == 1 and vector["speech.keyword.police"] == 0
    empty = dict(zip(SPEC.names, SPEC.vector(joined(0)), strict=True))
    assert empty["audio.loudness_dbfs"] == -120 and empty["speech.words"] == 0


def test_each_feature_names_the_stream_that_gave_its_value() -> None:
    window = joined(
        0,
        speech("street", 0, "help"),
        video("street", 0, 1, door_occupancy=3),
        video("lobby", 0, 2, door_occupancy=1),
        speech("lobby", 0, "nothing here"),
    )
    readings = dict(zip(SPEC.names, SPEC.readings(window), strict=True))
    assert readings["video.person.count"] == (2.0, "lobby")
    assert readings["video.zone.door.occupancy"] == (3.0, "street")
    assert readings["video.car.count"] == (0.0, "lobby"), "nobody saw a car: a tie at 0, first by name"
    assert readings["speech.keyword.help"] == (1.0, "street")
    assert readings["speech.keyword.police"] == (0.0, "lobby")
    assert readings["audio.loudness_dbfs"] == (-120.0, None), "no microphone measured it"
    assert [value for value, _ in readings.values()] == SPEC.vector(window).tolist()


def test_trained_model_separates_and_survives_a_json_round_trip(tmp_path: Path) -> None:
    windows, labels = _windows()
    model = train(SPEC, windows, labels)
    probabilities = [model.probability(SPEC.vector(w)) for w in windows]
    assert min(p for p, y in zip(probabilities, labels, strict=True) if y) > 0.5
    assert max(p for p, y in zip(probabilities, labels, strict=True) if not y) < 0.5
    path = tmp_path / "distress.json"
    model.save(path)
    again = LearnedModel.load(path)
    assert again == model
    coef = dict(zip(model.names, model.coef, strict=True))
    assert coef["speech.keyword.help"] > 0 and coef["video.person.count"] > 0
    with pytest.raises(ValueError, match="with and without"):
        train(SPEC, windows[:2], [False, False])


def test_learned_rule_fires_with_per_feature_contributions(tmp_path: Path) -> None:
    windows, labels = _windows()
    path = tmp_path / "m.json"
    train(SPEC, windows, labels).save(path)
    event = EventConfig.model_validate(
        {"name": "distress", "fusion": "learned", "model": str(path), "threshold": 0.5, "cooldown": 0}
    )
    rule = LearnedRule(event, 2000)
    state = RuleState()
    fired = [rule.evaluate(w, state).fired for w in windows]
    assert fired == labels
    evaluation = rule.evaluate(windows[1], RuleState())
    alert = rule.alert(windows[1], evaluation)
    assert alert.score > 0.5 and {t.signal for t in alert.terms} == set(SPEC.names)
    streams = {t.signal: t.stream for t in alert.terms}
    assert streams["video.person.count"] == "cam" and streams["speech.keyword.help"] == "mic"
    assert alert.streams == sorted({t.stream for t in alert.terms if t.contribution > 0 and t.stream is not None})
    assert sum(t.contribution for t in alert.terms) == pytest.approx(
        float(np.log(alert.score / (1 - alert.score))) - rule.model.intercept, abs=0.01
    )


def test_learned_events_need_a_model_and_a_probability_threshold() -> None:
    with pytest.raises(ConfigError, match="needs `model:`"):
        load_config_text("events:\n  - {name: e, fusion: learned, threshold: 0.5}\n", env={})
    with pytest.raises(ConfigError, match=r"probability \(0..1\]"):
        load_config_text("events:\n  - {name: e, fusion: learned, model: m.json, threshold: 3}\n", env={})
