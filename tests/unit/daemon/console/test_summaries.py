"""`fusewatch summary` output: a readable block per period on a terminal, JSON lines elsewhere."""

from __future__ import annotations

import io
import json
from datetime import datetime

from daemon.console.summaries import SummaryPrinter, period_label
from streams.models import (
    AlertRef,
    LoudMoment,
    PeriodLoudness,
    PeriodObjects,
    PeriodSummary,
    PeriodZone,
    SaidLine,
)

T0 = 1_699_999_200_000


def _at(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000).strftime("%H:%M:%S")


def _summary(**changes: object) -> PeriodSummary:
    base = PeriodSummary(
        stream="lobby",
        site="demo",
        period_s=60,
        period_start=T0,
        period_end=T0 + 60_000,
        windows=30,
        video_windows=30,
        audio_windows=30,
        first_window=T0,
        last_window=T0 + 58_000,
        objects={
            "car": PeriodObjects(max_count=1, mean_count=0.2, new_tracks=1),
            "person": PeriodObjects(max_count=3, mean_count=1.4, new_tracks=5),
        },
        zones={"door": PeriodZone(entries=2, max_occupancy=1, dwell_s=4.0)},
        speech=[
            SaidLine(start_ms=T0 + 5_000, end_ms=T0 + 16_000, text="ask not what your country can do for you"),
            SaidLine(start_ms=T0 + 30_000, end_ms=T0 + 32_900, text="Help! Somebody call the [police]!"),
        ],
        keywords=["help", "police"],
        loudness=PeriodLoudness(
            mean_dbfs=-31.24,
            peak_dbfs=-2.0,
            loud_moments=[LoudMoment(start_ms=T0 + 4_000, end_ms=T0 + 16_000, loudness_dbfs=-15.0, peak_dbfs=-2.0)],
        ),
        alerts=[AlertRef(id="abc", event="distress", score=1.0, window_start=T0 + 30_000)],
    )
    return base.model_copy(update=changes)


def _shown(summary: PeriodSummary) -> list[str]:
    out = io.StringIO()
    SummaryPrinter(out, json_lines=False).print(summary)
    return [line.rstrip() for line in out.getvalue().splitlines() if line.strip()]


def test_a_period_reads_as_a_block_of_what_was_seen_said_heard_and_alerted() -> None:
    lines = _shown(_summary())
    start = datetime.fromtimestamp(T0 / 1000).strftime("%Y-%m-%d %H:%M:%S")
    assert lines[0] == f"lobby  {start} – {_at(T0 + 60_000)}  (1 m, 30 windows)"
    assert lines[1:] == [
        "  seen      person max 3 mean 1.40, 5 new tracks; car max 1 mean 0.20, 1 new track",
        "  zones     door 2 entries, at most 1 at once, longest stay 4.0 s",
        f'  said      {_at(T0 + 5_000)}–{_at(T0 + 16_000)}  "ask not what your country can do for you"',
        f'            {_at(T0 + 30_000)}–{_at(T0 + 32_900)}  "Help! Somebody call the [police]!"',
        "  keywords  help, police",
        f"  sound     mean -31.2 dBFS, peak -2.0 dBFS; loud {_at(T0 + 4_000)}–{_at(T0 + 16_000)} (-15.0 dBFS)",
        f"  alert     {_at(T0 + 30_000)}  distress  1.00",
    ]


def test_an_open_period_and_a_camera_that_saw_nothing_say_so_and_empty_parts_are_left_out() -> None:
    quiet = _summary(complete=False, windows=1, objects={}, zones={}, speech=[], keywords=[], loudness=None, alerts=[])
    lines = _shown(quiet)
    assert lines[0].endswith("(1 m, 1 window, so far)")
    assert lines[1:] == ["  seen      nothing detected"]
    assert _shown(quiet.model_copy(update={"video_windows": 0})) == lines[:1]


def test_off_a_terminal_each_period_is_one_json_line() -> None:
    out = io.StringIO()
    printer = SummaryPrinter(out)
    assert printer.json_lines, "a StringIO is not a terminal"
    printer.print(_summary())
    printer.print(_summary(period_start=T0 + 60_000, period_end=T0 + 120_000))
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(row["kind"], row["period_start"]) for row in rows] == [("period", T0), ("period", T0 + 60_000)]
    assert PeriodSummary.model_validate(rows[0]) == _summary()


def test_period_labels() -> None:
    assert [period_label(s) for s in (60, 300, 3600, 7200, 90, 5400)] == ["1 m", "5 m", "1 h", "2 h", "90 s", "90 m"]
