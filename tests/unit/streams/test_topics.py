"""Topic settings fusewatch needs, and what a broker's answers to creating topics mean."""

from __future__ import annotations

from types import SimpleNamespace

from config.schema import KafkaConfig
from streams.kafka import creation_refusals, settings_at_odds, topic_settings


def test_a_refused_topic_is_named_with_its_reason_and_one_that_exists_is_not() -> None:
    v3 = SimpleNamespace(
        topic_errors=[
            ("fw.media", 38, "Replication factor: 3 larger than available brokers: 1."),
            ("fw.alerts", 36, "Topic 'fw.alerts' already exists."),
            ("fw.clips", 0, None),
            ("fw.features", 40, None),
        ]
    )
    assert creation_refusals(v3) == [
        "fw.media: Replication factor: 3 larger than available brokers: 1.",
        "fw.features: InvalidConfigurationError",
    ]
    v0 = SimpleNamespace(topic_errors=[("fw.media", 0), ("fw.clips", 36)])  # no messages before v1
    assert creation_refusals(v0) == []


def test_settings_at_odds_name_what_would_refuse_records_and_nothing_else() -> None:
    wanted = topic_settings(KafkaConfig())["fw.media"]
    assert settings_at_odds(wanted, dict(wanted)) == []
    bigger = {"max.message.bytes": "16777216", "compression.type": "lz4", "message.timestamp.type": "CreateTime"}
    assert settings_at_odds(wanted, bigger) == []  # a larger limit and another codec are fine
    found = {"max.message.bytes": "1048588", "message.timestamp.type": "LogAppendTime"}
    assert settings_at_odds(wanted, found) == [
        "max.message.bytes=1048588 (fusewatch needs 8388608)",
        "message.timestamp.type=LogAppendTime (fusewatch needs CreateTime)",
    ]
    assert settings_at_odds(wanted, {"max.message.bytes": "unlimited"}) == [
        "max.message.bytes=unlimited (fusewatch needs 8388608)"
    ]
    assert settings_at_odds(wanted, {}) == []  # a broker that says nothing is not contradicted
