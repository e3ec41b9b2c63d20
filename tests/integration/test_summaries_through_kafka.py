"""Rolling summaries of the labelled recordings, replayed → analyze → fuse through the broker and Redis.

Each minute of each stream is checked against the recording's labels: who and what was
seen, what was said and when, the loud moments, and the alert. The replay's wall base is
aligned to the window size only, so minute boundaries fall anywhere in a recording: every
expectation is placed at `wall_start + label time`.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from config.schema import FusewatchConfig
from daemon.analyze.worker import run_analyze
from daemon.cli import commands
from daemon.fuse.worker import run_fuse
from streams.kafka import MediaPublisher
from streams.models import SUMMARY_RECORD, Alert, PeriodSummary, SaidLine, Summary
from streams.sources import ReplayOptions, replay
from tests.helpers import demo_on, normalise, read_topic, redis_alerts

pytestmark = pytest.mark.integration

MINUTE_MS = 60_000
SLACK_MS = 2000  # a window: what a label's edge may be off by


def _minute_of(wall_ms: int) -> int:
    return wall_ms // MINUTE_MS * MINUTE_MS


def _overlaps(start: int, end: int, spans: list[tuple[int, int]], slack: int = SLACK_MS) -> bool:
    return any(start < span_end + slack and end > span_start - slack for span_start, span_end in spans)


def _spans(labels: dict[str, Any], key: str, wall_ms: int) -> list[tuple[int, int]]:
    return [(wall_ms + round(s["start"] * 1000), wall_ms + round(s["end"] * 1000)) for s in labels[key]]


def _said(minutes: list[PeriodSummary], start: int, end: int) -> str:
    lines: list[SaidLine] = [line for m in minutes for line in m.speech]
    return normalise(" ".join(line.text for line in lines if line.start_ms < end and line.end_ms > start))


async def _run_pipeline(config: FusewatchConfig, media_dir: Path) -> dict[str, int]:
    """Replay both recordings at full speed, analyze and fuse them; the wall start (ms) of each."""
    walls = {}
    async with MediaPublisher(config.kafka) as publisher:
        for stream in ("lobby", "street"):
            result = await replay(
                str(media_dir / f"{stream}.ts"), stream, config.site, publisher, ReplayOptions(speed=None)
            )
            walls[stream] = result.wall_start_ns // 1_000_000
        await publisher.flush()
    await asyncio.wait_for(run_analyze(config, idle_timeout=5.0), 300)
    await asyncio.wait_for(run_fuse(config, idle_timeout=3.0), 120)
    return walls


async def _from_redis(config: FusewatchConfig, stream: str, capsys: pytest.CaptureFixture[str]) -> list[PeriodSummary]:
    """What `fusewatch summary --stream S --since 1h --period 1m --json` prints."""
    capsys.readouterr()
    assert await commands.summary(config, stream, "1h", "1m", json_lines=True) == 0
    return [PeriodSummary.model_validate_json(line) for line in capsys.readouterr().out.splitlines()]


async def test_minute_summaries_of_the_labelled_recordings_match_their_labels(
    fw_config: FusewatchConfig, media_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = demo_on(fw_config, tmp_path)
    walls = await _run_pipeline(config, media_dir)
    labels = {s: json.loads((media_dir / f"{s}.labels.json").read_text()) for s in walls}
    windows, minutes = await _read_summaries(config, walls, labels)
    for stream in walls:
        assert await _from_redis(config, stream, capsys) == minutes[stream], "Redis keeps the same"
    _check_seen(minutes, labels)
    _check_said(minutes, labels, walls["lobby"])
    _check_heard(minutes, labels, walls, windows, config.summaries.loud_dbfs)
    (alert,) = [Alert.model_validate(a) for a in await redis_alerts(config)]
    distress_start, distress_end = _spans(labels["lobby"], "events", walls["lobby"])[0]
    assert _overlaps(alert.window_start, alert.window_end, [(distress_start, distress_end)])
    holding = [m for m in minutes["lobby"] if [a.id for a in m.alerts] == [alert.id]]
    assert [m.period_start for m in holding] == [_minute_of(alert.window_start)], "in the minute of its window"
    assert sum(len(m.alerts) for stream in walls for m in minutes[stream]) == len(alert.streams), "only there"


async def _read_summaries(
    config: FusewatchConfig, walls: dict[str, int], labels: dict[str, Any]
) -> tuple[list[Summary], dict[str, list[PeriodSummary]]]:
    """fw.summaries: window and period summaries side by side, told apart by `kind`; the minutes per stream."""
    records = await read_topic(config.kafka, config.kafka.topics.summaries)
    parsed = [(record.key.decode(), SUMMARY_RECORD.validate_json(record.value)) for record in records]
    assert all(key == summary.stream for key, summary in parsed), "keyed by stream"
    windows = [s for _, s in parsed if isinstance(s, Summary)]
    latest: dict[tuple[str, int, int], PeriodSummary] = {}
    for _, period in parsed:  # the last one of a period wins (an incomplete one may precede it)
        if isinstance(period, PeriodSummary):
            latest[(period.stream, period.period_s, period.period_start)] = period
    minutes: dict[str, list[PeriodSummary]] = {
        stream: [p for key, p in sorted(latest.items()) if key[:2] == (stream, 60)] for stream in walls
    }
    site_last = max(w.window_start for w in windows)
    for stream, wall_ms in walls.items():
        mine = minutes[stream]
        duration_ms = round(labels[stream]["duration_s"] * 1000)
        spanned = list(range(_minute_of(wall_ms), wall_ms + duration_ms, MINUTE_MS))
        assert [m.period_start for m in mine] == spanned, f"{stream}: one summary per minute the recording spans"
        hourly = [p for key, p in latest.items() if key[:2] == (stream, 3600)]
        per_window = sum(1 for w in windows if w.stream == stream)
        assert sum(m.windows for m in mine) == sum(h.windows for h in hourly) == per_window, stream
        assert [m.complete for m in mine] == [m.period_end <= site_last for m in mine], "complete: a window after it"
    assert not minutes["lobby"][-1].complete, "the longest recording's last minute ended with the input"
    return windows, minutes


def _check_seen(minutes: dict[str, list[PeriodSummary]], labels: dict[str, Any]) -> None:
    """People in every minute of the lobby; in the street, what its labels name."""
    for minute in minutes["lobby"]:
        assert minute.objects["person"].max_count >= 1 and minute.objects["person"].new_tracks >= 1
    street_classes = {o["class"] for o in labels["street"]["objects"]}
    for minute in minutes["street"]:
        assert street_classes & set(minute.objects), minute.objects
    seen = {
        label: max(m.objects[label].mean_count for m in minutes["street"] if label in m.objects)
        for m in minutes["street"]
        for label in m.objects
    }
    assert max(seen, key=lambda label: seen[label]) in street_classes, f"seen most, yet not labelled: {seen}"


def _check_said(minutes: dict[str, list[PeriodSummary]], labels: dict[str, Any], lobby_wall: int) -> None:
    """Each labelled utterance, at its time, in the minutes it falls in; nothing said elsewhere."""
    speech_spans = _spans(labels["lobby"], "speech", lobby_wall)
    for minute in minutes["lobby"]:
        for line in minute.speech:
            assert minute.period_start - SLACK_MS <= line.start_ms < minute.period_end, "a line lies in its minute"
            assert _overlaps(line.start_ms, line.end_ms, speech_spans), f"said outside the labels: {line}"
    jfk_said = _said(minutes["lobby"], *speech_spans[0]).split()
    assert {"fellow", "americans", "ask", "country"} <= set(jfk_said), jfk_said
    help_minute = next(m for m in minutes["lobby"] if m.period_start <= lobby_wall + 30_000 < m.period_end)
    assert "help" in _said([help_minute], *speech_spans[1]).split()
    assert {"help", "police"} <= set(help_minute.keywords)
    assert not labels["street"]["speech"] and not any(m.speech for m in minutes["street"]), "the street says nothing"


def _check_heard(
    minutes: dict[str, list[PeriodSummary]],
    labels: dict[str, Any],
    walls: dict[str, int],
    windows: list[Summary],
    loud_dbfs: float,
) -> None:
    """Loud moments: the windows at or above `loud_dbfs`, only where the labels put speech or sounds."""
    for stream, wall_ms in walls.items():
        heard = _spans(labels[stream], "speech", wall_ms) + _spans(labels[stream], "sounds", wall_ms)
        for minute in minutes[stream]:
            assert minute.loudness is not None and minute.loudness.peak_dbfs >= minute.loudness.mean_dbfs
            for moment in minute.loudness.loud_moments:
                assert _overlaps(moment.start_ms, moment.end_ms, heard), f"{stream}: loud {moment}"
        step = windows[0].window_end - windows[0].window_start
        in_moments = {
            start
            for minute in minutes[stream]
            for moment in (minute.loudness.loud_moments if minute.loudness else [])
            for start in range(moment.start_ms, moment.end_ms, step)
        }
        loud_windows = {
            w.window_start
            for w in windows
            if w.stream == stream and w.loudness_dbfs is not None and w.loudness_dbfs >= loud_dbfs
        }
        assert in_moments == loud_windows, stream
