"""Hostile site files: every one is a located ConfigError within the time budget, never a traceback or a hang."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

import pytest

from config import ConfigError, load_config, load_config_text
from config.loader import MAX_ALIASES, MAX_CONFIG_BYTES, MAX_DEPTH, MAX_VALUES

BUDGET_S = 5.0

ZONED = """\
site: hq
sources:
  - id: cam1
    url: rtsp://cam1.local/s
    video:
      zones:
        - {name: gate, polygon: [[0, 0], [1, 0], [1, 1]]}
  - id: cam2
    site: annex
    url: rtsp://cam2.local/s
    video:
      zones:
        - {name: dock, polygon: [[0, 0], [1, 0], [1, 1]]}
events:
  - name: e
    threshold: 1
"""


@contextmanager
def deadline(seconds: float = BUDGET_S) -> Iterator[None]:
    """Fail the test when its body runs longer than `seconds` (a hang is interrupted, not waited out)."""

    def expire(signum: int, frame: FrameType | None) -> None:
        raise TimeoutError(f"took longer than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def problems_of(text: str) -> list[str]:
    with deadline(), pytest.raises(ConfigError) as caught:
        load_config_text(text, name="site.yaml", env={})
    return [str(problem) for problem in caught.value.problems]


def file_problems(path: Path) -> list[str]:
    with deadline(), pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    return [str(problem) for problem in caught.value.problems]


def billion_laughs() -> str:
    lines = ["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for previous, anchor in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{anchor}: &{anchor} [" + ", ".join([f"*{previous}"] * 9) + "]")
    return "\n".join(lines) + "\n"


# (name, yaml, the start of the one expected problem)
CASES: list[tuple[str, str, str]] = [
    (
        "5,000-digit integer",
        "kafka:\n  media_partitions: " + "9" * 5000 + "\n",
        "site.yaml:2: kafka.media_partitions: integer literal too long: 5000 characters (at most ",
    ),
    (
        "5,000-digit hexadecimal integer",
        "kafka:\n  media_partitions: 0x" + "f" * 5000 + "\n",
        "site.yaml:2: kafka.media_partitions: integer literal too long: 5002 characters",
    ),
    (
        "integer too large for a float duration",
        "windows:\n  size: " + "9" * 400 + "\n",
        "site.yaml:2: windows.size: duration must be finite, got 9999",
    ),
    ("infinite duration", "windows:\n  grace: .inf\n", "site.yaml:2: windows.grace: duration must be finite, got inf"),
    (
        "NaN duration",
        "kafka:\n  session_timeout: .nan\n",
        "site.yaml:2: kafka.session_timeout: duration must be finite, got nan",
    ),
    (
        "5,000-digit port",
        "kafka:\n  bootstrap_servers: ['broker:" + "9" * 5000 + "']\n",
        "site.yaml:2: kafka.bootstrap_servers[0]: expected 'host:port', got 'broker:9999",
    ),
    (
        "control character",
        "site: hq\nredis:\n  url: redis://r\x00:6379\n",
        "site.yaml:3: invalid YAML: character #x0000 is not allowed",
    ),
    (
        "5,000-deep flow sequences",
        "site: hq\nx: " + "[" * 5000 + "]" * 5000 + "\n",
        f"site.yaml:2: nested deeper than {MAX_DEPTH} levels",
    ),
    (
        "5,000-deep flow mappings",
        "site: hq\nx: " + "{a: " * 5000 + "1" + "}" * 5000 + "\n",
        f"site.yaml:2: nested deeper than {MAX_DEPTH} levels",
    ),
    (
        "1,000-deep block mappings",
        "site: hq\n" + "".join(" " * depth + "a:\n" for depth in range(1000)) + " " * 1000 + "b: 1\n",
        f"site.yaml:{MAX_DEPTH + 1}: nested deeper than {MAX_DEPTH} levels",
    ),
    ("billion laughs", billion_laughs(), f"site.yaml:5: aliases expand the document to more than {MAX_VALUES} values"),
    (
        "too many aliases",
        "a: &a 1\nb: [" + ", ".join(["*a"] * (MAX_ALIASES + 1)) + "]\n",
        f"site.yaml:2: more than {MAX_ALIASES} aliases",
    ),
    ("alias inside its own anchor", "kafka: &k\n  topics: *k\n", "site.yaml:2: alias *k is inside its own anchor"),
    (
        "term on an undefined zone",
        ZONED + "    terms:\n      - {signal: video.zone.nogate.entered, weight: 1, when: {op: '>=', value: 1}}\n",
        "site.yaml:18: events[0].terms[0].signal: unknown zone 'nogate' (zones of this term's sources: dock, gate)",
    ),
    (
        "zone of another site",
        ZONED + "    sites: [hq]\n    terms:\n"
        "      - {signal: video.zone.dock.occupancy, weight: 1, when: {op: '>', value: 0}}\n",
        "site.yaml:19: events[0].terms[0].signal: unknown zone 'dock' (zones of this term's sources: gate)",
    ),
    (
        "zone of a stream the term does not read",
        ZONED + "    terms:\n"
        "      - {signal: video.zone.gate.dwell, weight: 1, when: {op: '>', value: 5}, streams: [cam2]}\n",
        "site.yaml:18: events[0].terms[0].signal: unknown zone 'gate' (zones of this term's sources: dock)",
    ),
    (
        "zone term when no source has zones",
        "sources:\n  - {id: c, url: rtsp://c.local/s}\nevents:\n  - name: e\n    threshold: 1\n    terms:\n"
        "      - {signal: video.zone.gate.entered, weight: 1, when: {op: '>=', value: 1}}\n",
        "site.yaml:7: events[0].terms[0].signal: unknown zone 'gate' (no source of this term defines a zone)",
    ),
]


@pytest.mark.parametrize(("yaml_text", "expected"), [(y, e) for _, y, e in CASES], ids=[n for n, _, _ in CASES])
def test_hostile_text_is_a_located_problem(yaml_text: str, expected: str) -> None:
    problems = problems_of(yaml_text)
    assert any(problem.startswith(expected) for problem in problems), problems


def test_merged_keys_are_validated_at_the_merged_line() -> None:
    text = "sources:\n  - &cam {id: c, url: rtsp://c.local/s, video: {sample_fps: -1}}\n  - {<<: *cam, id: d}\n"
    assert problems_of(text) == [
        "site.yaml:2: sources[0].video.sample_fps: must be > 0, got -1",
        "site.yaml:2: sources[1].video.sample_fps: must be > 0, got -1",
    ]


def test_non_utf8_file_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_bytes(b"site: hq\n# caf\xe9\nsources: []\n")
    assert file_problems(path) == ["site.yaml:2: not UTF-8 text: byte 0xe9 cannot be decoded (save the file as UTF-8)"]


def ten_megabytes_of_comments() -> str:
    return "site: hq\n" + ("# " + "x" * 77 + "\n") * (10 * 1024 * 1024 // 80)


def test_file_over_the_size_limit_is_refused_at_the_line_it_crosses_the_limit(tmp_path: Path) -> None:
    text = ten_megabytes_of_comments()
    line = text.count("\n", 0, MAX_CONFIG_BYTES) + 1
    expected = f"site.yaml:{line}: larger than 1 MiB ({MAX_CONFIG_BYTES} bytes), the most a config file may hold"
    path = tmp_path / "site.yaml"
    path.write_text(text, encoding="utf-8")
    assert file_problems(path) == [expected]
    assert problems_of(text) == [expected]


@pytest.mark.parametrize("line", ["#\n", "# " + "x" * 77 + "\n"], ids=["short", "long"])
def test_comments_up_to_the_size_limit_load_in_time(line: str) -> None:
    filler = line * ((MAX_CONFIG_BYTES - 100) // len(line))
    for text in ("site: hq\n" + filler, filler + "site: hq\n", "site: hq  # trailing\n" + filler):
        with deadline():
            assert load_config_text(text, env={}).site == "hq"


def test_unclosed_env_patterns_substitute_in_linear_time() -> None:
    text = "site: " + "${A:-" * (MAX_CONFIG_BYTES // 10 // 5) + "\n"
    assert problems_of(text)[0].startswith("site.yaml:1: site: invalid value '${A:-")
    assert load_config_text("redis:\n  username: ${A:-h$q}\n", env={}).redis.username == "h$q"


def test_long_duration_text_is_refused_in_time_and_shown_short() -> None:
    problems = problems_of('windows:\n  size: "1' + " " * 50_000 + 'x"\n')
    shown = "'1" + " " * 55 + "..."
    assert problems == [f"site.yaml:2: windows.size: expected a duration such as '500ms', '2s', '5m', got {shown}"]


def test_many_values_are_refused_in_time() -> None:
    text = "x: [" + "1," * ((MAX_CONFIG_BYTES - 100) // 2) + "]\n"
    assert problems_of(text) == [f"site.yaml:1: more than {MAX_VALUES} values (keys, items and scalars)"]


def test_nesting_and_aliases_up_to_the_limits_load() -> None:
    assert problems_of("x: " + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1) + "\n") == ["site.yaml:1: x: unknown key"]
    assert problems_of("x: " + "[" * MAX_DEPTH + "]" * MAX_DEPTH + "\n") == [
        f"site.yaml:1: nested deeper than {MAX_DEPTH} levels"
    ]
    text = "sources:\n  - &cam {id: c, url: rtsp://c.local/s}\n" + "".join(
        f"  - {{<<: *cam, id: c{index}}}\n" for index in range(MAX_ALIASES)
    )
    with deadline():
        assert len(load_config_text(text, env={}).sources) == MAX_ALIASES + 1


def test_zone_terms_on_defined_zones_are_accepted() -> None:
    text = ZONED + (
        "    terms:\n"
        "      - {signal: video.zone.gate.entered, weight: 1, when: {op: '>=', value: 1}, streams: [cam1]}\n"
        "      - {signal: video.zone.dock.occupancy, weight: 1, when: {op: '>', value: 0}}\n"
        "      - {signal: video.zone.count, weight: 1, when: {op: '>', value: 0}}\n"
    )
    config = load_config_text(text, env={})
    assert [term.signal for term in config.events[0].terms] == [
        "video.zone.gate.entered",
        "video.zone.dock.occupancy",
        "video.zone.count",
    ]
