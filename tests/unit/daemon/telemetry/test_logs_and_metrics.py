"""JSON log lines carry the extra fields; mirrored counters only grow, across worker restarts."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from daemon.telemetry.logs import JsonFormatter, configure_logging
from daemon.telemetry.metrics import Metrics


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    """The root logger, restored after the test (configure_logging replaces its handlers)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield root
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def test_json_lines_have_time_level_message_extra_fields_and_the_exception(root_logger: logging.Logger) -> None:
    stream = io.StringIO()
    configure_logging(logging.INFO, stream=stream, json_lines=True)
    log = logging.getLogger("fusewatch.test")
    try:
        raise RuntimeError("decoder lost")
    except RuntimeError:
        log.error("role %s failed", "analyze", exc_info=True, extra={"role": "analyze", "restarts": 2})
    log.debug("not shown at INFO")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert entry["level"] == "error" and entry["msg"] == "role analyze failed" and entry["logger"] == "fusewatch.test"
    assert entry["role"] == "analyze" and entry["restarts"] == 2
    assert "RuntimeError: decoder lost" in entry["exc"]
    assert entry["ts"].endswith("Z") and "T" in entry["ts"]


def test_a_formatter_turns_unserialisable_extras_into_text() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello", (), None)
    record.path = object()
    assert json.loads(JsonFormatter().format(record))["path"].startswith("<object object")


def test_counter_mirror_adds_growth_only_and_keeps_totals_across_restarts() -> None:
    metrics = Metrics()
    first = metrics.mirror()
    first.sync(metrics.frames_decoded, 10, "lobby")
    first.sync(metrics.frames_decoded, 25, "lobby")
    first.sync(metrics.frames_decoded, 25, "lobby")
    second = metrics.mirror()  # the worker restarted: its own count starts again at 0
    second.sync(metrics.frames_decoded, 5, "lobby")
    second.sync(metrics.dead_letters, 3, "analyze")
    registry = metrics.registry
    assert registry.get_sample_value("fusewatch_frames_decoded_total", {"stream": "lobby"}) == 30
    assert registry.get_sample_value("fusewatch_dead_letters_total", {"stage": "analyze"}) == 3
    text = metrics.exposition().decode()
    for name in (
        "fusewatch_frames_decoded_total",
        "fusewatch_inference_seconds",
        "fusewatch_alert_latency_seconds",
        "fusewatch_consumer_lag",
        "fusewatch_frames_dropped_total",
        "fusewatch_dead_letters_total",
        "fusewatch_redis_buffer_depth",
        "fusewatch_redis_buffer_dropped_total",
        "fusewatch_offset_resets_total",
    ):
        assert f"# TYPE {name.removesuffix('_total')}" in text
