"""Config loading: the shipped examples are valid; every kind of mistake names file:line and field."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from config import ConfigError, load_config, load_config_text
from config.schema import DarknetDetectorConfig, YoloDetectorConfig

EXAMPLES = Path(__file__).resolve().parents[3] / "config" / "examples"

BASE = """\
site: hq
sources:
  - id: cam1
    url: rtsp://cam1.local/stream
  - id: cam2
    url: rtsp://cam2.local/stream
"""

# (name, yaml, expected error line) — each message is checked in full.
CASES: list[tuple[str, str, str]] = [
    (
        "negative sample_fps",
        BASE + "    video:\n      sample_fps: -2\n",
        "site.yaml:8: sources[1].video.sample_fps: must be > 0, got -2",
    ),
    (
        "wrong type",
        BASE + "    video:\n      sample_fps: fast\n",
        "site.yaml:8: sources[1].video.sample_fps: expected float, got 'fast'",
    ),
    ("unknown key in section", BASE + "windows:\n  size: 2s\n  grase: 4s\n", "site.yaml:9: windows.grase: unknown key"),
    ("unknown top-level section", BASE + "eventz: []\n", "site.yaml:7: eventz: unknown key"),
    ("missing required field", BASE + "  - id: cam3\n", "site.yaml:7: sources[2].url: required field is missing"),
    (
        "bad duration",
        BASE + "windows:\n  size: two seconds\n",
        "site.yaml:8: windows.size: expected a duration such as '500ms', '2s', '5m', got 'two seconds'",
    ),
    ("zero window size", BASE + "windows:\n  size: 0s\n", "site.yaml:8: windows.size: must be > 0, got 0.0"),
    (
        "summary period twice",
        BASE + "summaries:\n  periods: [1m, 1h, 60s]\n",
        "site.yaml:8: summaries.periods[2]: duplicate period 60 s",
    ),
    (
        "summary period not whole seconds",
        BASE + "summaries:\n  periods: [1m, 500ms]\n",
        "site.yaml:8: summaries.periods[1]: a period is whole seconds, at least 1 s, got 0.5",
    ),
    (
        "bad URL scheme",
        BASE + "  - id: cam3\n    url: ftp://cam3.local/x\n",
        "site.yaml:8: sources[2].url: unsupported URL scheme 'ftp' "
        "(expected one of rtsp, rtsps, http, https, file, v4l2, alsa or a file path)",
    ),
    (
        "malformed URL",
        BASE + "  - id: cam3\n    url: rtsp//cam3.local/x\n",
        "site.yaml:8: sources[2].url: malformed URL 'rtsp//cam3.local/x': expected scheme://…",
    ),
    (
        "URL without host",
        BASE + "  - id: cam3\n    url: rtsp:///stream\n",
        "site.yaml:8: sources[2].url: URL 'rtsp:///stream' has no host",
    ),
    (
        "duplicate source id",
        BASE + "  - id: cam1\n    url: rtsp://cam9.local/x\n",
        "site.yaml:7: sources[2].id: duplicate source id 'cam1'",
    ),
    (
        "undefined env var",
        "site: hq\nredis:\n  password: ${FW_TEST_UNDEFINED_SECRET}\n",
        "site.yaml:3: redis.password: environment variable FW_TEST_UNDEFINED_SECRET is not set "
        "(use ${FW_TEST_UNDEFINED_SECRET:-default} for an optional value)",
    ),
    (
        "unknown detector type",
        "detectors:\n  objects:\n    type: yolov99\n",
        "site.yaml:3: detectors.objects.type: unknown type 'yolov99' (expected 'yolo', 'darknet')",
    ),
    (
        "detector without type",
        "detectors:\n  objects:\n    weights: x.pt\n",
        "site.yaml:2: detectors.objects: needs `type:` to choose the implementation",
    ),
    (
        "confidence out of range",
        "detectors:\n  objects: {type: yolo, weights: /w.pt, confidence: 1.5}\n",
        "site.yaml:2: detectors.objects.confidence: must be < 1, got 1.5",
    ),
    (
        "bad bootstrap address",
        "kafka:\n  bootstrap_servers: [broker-without-port]\n",
        "site.yaml:2: kafka.bootstrap_servers[0]: expected 'host:port', got 'broker-without-port'",
    ),
    (
        "bad redis url",
        "redis:\n  url: http://redis.local\n",
        "site.yaml:2: redis.url: expected redis://host:port/db, rediss://… or unix://path, got 'http://redis.local'",
    ),
    (
        "SASL without credentials",
        "kafka:\n  security_protocol: SASL_SSL\n",
        "site.yaml:2: kafka.security_protocol: security_protocol SASL_SSL needs sasl_mechanism, "
        "sasl_username and sasl_password",
    ),
    (
        "unreachable threshold",
        "events:\n  - name: e\n    threshold: 3\n    terms:\n"
        "      - {signal: video.person.count, weight: 1, when: {op: '>=', value: 1}}\n",
        "site.yaml:3: events[0].threshold: threshold 3.0 can never be reached: the weights sum to 1.0",
    ),
    (
        "unknown signal",
        "events:\n  - name: e\n    threshold: 1\n    terms:\n"
        "      - {signal: smell.smoke, weight: 1, when: {op: '>=', value: 1}}\n",
        "site.yaml:5: events[0].terms[0].signal: invalid value 'smell.smoke' (must match ",
    ),
    (
        "term with both when and ramp",
        "events:\n  - name: e\n    threshold: 1\n    terms:\n      - signal: audio.loudness_dbfs\n"
        "        weight: 1\n        when: {op: '>', value: -20}\n        ramp: {low: -40, high: -10}\n",
        "site.yaml:5: events[0].terms[0].signal: a term needs exactly one of `when:` or `ramp:`",
    ),
    (
        "term names unknown stream",
        BASE + "events:\n  - name: e\n    threshold: 1\n    terms:\n"
        "      - {signal: video.person.count, weight: 1, when: {op: '>=', value: 1}, streams: [cam7]}\n",
        "site.yaml:11: events[0].terms[0].streams[0]: unknown stream 'cam7' (sources are: cam1, cam2)",
    ),
    (
        "unknown whisper model",
        "detectors:\n  transcriber:\n    type: faster-whisper\n    model: small\n",
        "site.yaml:4: detectors.transcriber.model: must be 'auto', 'tiny.en' or 'base', got 'small'",
    ),
    (
        "invalid literal",
        "events:\n  - name: e\n    threshold: 1\n    severity: apocalyptic\n    terms:\n"
        "      - {signal: video.person.count, weight: 1, when: {op: '>=', value: 1}}\n",
        "site.yaml:4: events[0].severity: must be 'info', 'low', 'medium', 'high' or 'critical', got 'apocalyptic'",
    ),
    (
        "zone point outside image",
        "sources:\n  - id: c\n    url: rtsp://c.local/s\n    video:\n      zones:\n"
        "        - name: door\n          polygon: [[0, 0], [2, 0], [1, 1]]\n",
        "site.yaml:7: sources[0].video.zones[0].polygon: polygon points are normalised to 0..1, got (2.0, 0.0)",
    ),
    (
        "duplicate zone",
        "sources:\n  - id: c\n    url: rtsp://c.local/s\n    video:\n      zones:\n"
        "        - {name: door, polygon: [[0, 0], [1, 0], [1, 1]]}\n"
        "        - {name: door, polygon: [[0, 0], [1, 0], [1, 1]]}\n",
        "site.yaml:7: sources[0].video.zones[1].name: duplicate zone name 'door'",
    ),
    ("invalid YAML", "sources:\n  - id: c\n   url: [unclosed\n", "site.yaml:3: invalid YAML"),
    ("duplicate YAML key", "site: a\nsite: b\n", "site.yaml:2: invalid YAML"),
    ("document is a list", "- a\n- b\n", "site.yaml:1: expected a mapping of sections, got CommentedSeq"),
    (
        "bad identifier",
        "sources:\n  - id: 'cam one'\n    url: rtsp://c.local/s\n",
        "site.yaml:2: sources[0].id: invalid value 'cam one' (must match",
    ),
]


@pytest.mark.parametrize(("yaml_text", "expected"), [(y, e) for _, y, e in CASES], ids=[name for name, _, _ in CASES])
def test_malformed_config_names_file_line_and_field(yaml_text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config_text(yaml_text, name="site.yaml", env={})
    messages = [str(problem) for problem in caught.value.problems]
    assert any(message.startswith(expected) for message in messages), messages


def test_examples_are_valid() -> None:
    site = load_config(EXAMPLES / "site.yaml", env={})
    assert [s.id for s in site.sources] == ["dock-door", "yard", "office-mic"]
    assert isinstance(site.detectors.objects, YoloDetectorConfig)
    assert site.events[1].for_windows == 2
    assert site.events[1].cooldown == 300.0
    demo = load_config(EXAMPLES / "demo.yaml", env={})
    assert isinstance(demo.detectors.objects, DarknetDetectorConfig)
    assert demo.kafka.bootstrap_servers == ["127.0.0.1:19092"]


def test_env_substitution_and_secrets_stay_hidden() -> None:
    text = textwrap.dedent("""\
        kafka:
          bootstrap_servers: ${BROKERS}
          security_protocol: SASL_PLAINTEXT
          sasl_mechanism: PLAIN
          sasl_username: ${USER_NAME:-fw}
          sasl_password: ${KAFKA_PASSWORD}
        """)
    config = load_config_text(text, env={"BROKERS": "k1:9092,k2:9092", "KAFKA_PASSWORD": "s3cret"})
    assert config.kafka.bootstrap_servers == ["k1:9092", "k2:9092"]
    assert config.kafka.sasl_username == "fw"
    assert config.kafka.sasl_password is not None
    assert config.kafka.sasl_password.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(config) and "s3cret" not in config.model_dump_json()


def test_unset_optional_kafka_settings_count_as_not_given() -> None:
    """One site file for a SASL_SSL cluster and a PLAINTEXT one: `${VAR:-}` left unset is no setting."""
    text = textwrap.dedent("""\
        kafka:
          bootstrap_servers: k1:9092
          security_protocol: ${KAFKA_SECURITY_PROTOCOL:-SASL_SSL}
          sasl_mechanism: ${KAFKA_SASL_MECHANISM:-SCRAM-SHA-512}
          sasl_username: ${KAFKA_USER:-}
          sasl_password: ${KAFKA_PASSWORD:-}
          ssl_cafile: ${KAFKA_CA_FILE:-}
        """)
    plain = load_config_text(text, env={"KAFKA_SECURITY_PROTOCOL": "PLAINTEXT"})
    assert plain.kafka.security_protocol == "PLAINTEXT"
    assert (plain.kafka.sasl_username, plain.kafka.sasl_password, plain.kafka.ssl_cafile) == (None, None, None)
    with pytest.raises(ConfigError, match="needs sasl_mechanism, sasl_username and sasl_password"):
        load_config_text(text, name="site.yaml", env={"KAFKA_USER": "fw"})
    secured = load_config_text(text, env={"KAFKA_USER": "fw", "KAFKA_PASSWORD": "pw", "KAFKA_CA_FILE": "/ca.pem"})
    assert secured.kafka.sasl_password is not None and secured.kafka.ssl_cafile == "/ca.pem"


def test_a_dashboard_token_that_is_not_text_is_refused_without_echoing_it() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config_text("web:\n  token: 918273645\n", name="s.yaml", env={})
    assert "918273645" not in str(caught.value)
    assert "web.token" in str(caught.value) and "not shown" in str(caught.value)


def test_every_problem_is_reported_at_once() -> None:
    text = BASE + "    video:\n      sample_fps: 0\nwindows:\n  grace: soon\n"
    with pytest.raises(ConfigError) as caught:
        load_config_text(text, name="s.yaml", env={})
    assert [p.line for p in caught.value.problems] == [8, 10]


def test_config_is_frozen() -> None:
    config = load_config_text(BASE, env={})
    with pytest.raises(ValueError, match="frozen"):
        config.site = "other"  # type: ignore[misc]


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.yaml")
