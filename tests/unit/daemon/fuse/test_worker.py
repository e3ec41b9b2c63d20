"""The window join and the fuse worker on hand-built features, with a manual processing clock."""

from __future__ import annotations

import pytest

from config.schema import (
    AudioInput,
    DetectorsConfig,
    EventConfig,
    FasterWhisperConfig,
    FusewatchConfig,
    SourceConfig,
    SummariesConfig,
    VideoInput,
    WindowsConfig,
)
from daemon.fuse.memory import ListOutputs, MemoryRuleStore
from daemon.fuse.worker import FuseWorker, OutOfRange, WindowJoiner
from streams.kafka import SourcePosition
from streams.models import WindowFeatures
from streams.testing import ManualClock
from tests.helpers import DISTRESS, audio, speech, video


def _config(events: list[EventConfig] | None = None) -> FusewatchConfig:
    return FusewatchConfig(
        site="hq",
        sources=[
            SourceConfig(id="cam", url="rtsp://cam.local/s", audio=AudioInput(enabled=False)),
            SourceConfig(id="mic", url="alsa://hw:0", video=VideoInput(enabled=False)),
        ],
        detectors=DetectorsConfig(transcriber=FasterWhisperConfig(type="faster-whisper")),
        windows=WindowsConfig(size=2.0, grace=5.0),
        events=events or [],
    )


def test_a_window_closes_when_every_input_delivered_it() -> None:
    joiner = WindowJoiner(_config(), ManualClock().monotonic)
    assert joiner.add(video("cam", 0, 1)) == []
    assert joiner.add(audio("mic", 0, -30)) == []
    closed = joiner.add(speech("mic", 0, "hi"))
    assert [w.window_start for w in closed] == [0]
    assert {(f.stream, f.modality) for f in closed[0].features} == {
        ("cam", "video"),
        ("mic", "audio"),
        ("mic", "speech"),
    }


def test_windows_close_in_order_and_wait_for_a_lagging_modality() -> None:
    joiner = WindowJoiner(_config(), ManualClock().monotonic)
    for start in (0, 2000, 4000):
        assert joiner.add(video("cam", start, 1)) == []
        assert joiner.add(audio("mic", start, -30)) == []
    assert joiner.tick() == [], "speech (transcribed after the utterance ends) lags: everything waits"
    assert [w.window_start for w in joiner.add(speech("mic", 0, "help"))] == [0]
    assert [w.window_start for w in joiner.add(speech("mic", 2000, ""))] == [2000]


def test_an_idle_input_is_not_waited_for_and_late_records_are_counted() -> None:
    clock = ManualClock()
    joiner = WindowJoiner(_config(), clock.monotonic)
    joiner.add(video("cam", 0, 1))
    joiner.add(audio("mic", 0, -30))
    assert joiner.tick() == []
    clock.advance(6.0)  # the speech input has been silent longer than the grace
    assert [w.window_start for w in joiner.tick()] == [0]
    joiner.add(speech("mic", 0, "too late"))
    assert joiner.counters.late == 1


def test_duplicates_are_ignored_and_commit_points_at_the_oldest_open_window() -> None:
    joiner = WindowJoiner(_config(), ManualClock().monotonic)
    joiner.add(video("cam", 0, 1), SourcePosition("f", 0, 10))
    joiner.add(video("cam", 0, 1), SourcePosition("f", 0, 11))
    joiner.add(video("cam", 2000, 1), SourcePosition("f", 0, 12))
    assert joiner.counters.duplicates == 1
    assert joiner.oldest_open() == {("f", 0): 10}


async def test_fuse_worker_publishes_alerts_and_summaries_and_resumes_rule_state() -> None:
    config = _config([DISTRESS.model_copy(update={"cooldown": 10.0})])
    out, store = ListOutputs(), MemoryRuleStore()
    worker = FuseWorker(config, [out], store, ManualClock().monotonic)
    for start in (0, 2000):
        await worker.handle(video("cam", start, 1))
        await worker.handle(audio("mic", start, -25))
        await worker.handle(speech("mic", start, "help!"))
    assert [a.window_start for a in out.alerts] == [0], "then the cooldown rests"
    assert len(out.summaries) == 4
    assert store.data == {}, "nothing is stored before the outputs are acknowledged"
    await worker.persist()
    # A new worker (after a crash) picks the rule state up from the store: still resting.
    again = FuseWorker(config, [out], store, ManualClock().monotonic)
    for modality_features in (video("cam", 2000, 1), audio("mic", 2000, -25), speech("mic", 2000, "help")):
        await again.handle(modality_features)
    assert again.joiner.counters.late == 3, "window 2000 was already closed by the first worker"
    for modality_features in (video("cam", 4000, 1), audio("mic", 4000, -25), speech("mic", 4000, "help")):
        await again.handle(modality_features)
    assert [a.window_start for a in out.alerts] == [0], "window 4000 is inside the cooldown"


async def test_a_released_site_starts_again_from_the_stored_state_as_its_next_owner_would() -> None:
    config = _config([DISTRESS.model_copy(update={"cooldown": 10.0})])
    out, store = ListOutputs(), MemoryRuleStore()
    worker = FuseWorker(config, [out], store, ManualClock().monotonic)
    read = [
        video("cam", 0, 1),
        audio("mic", 0, -25),
        speech("mic", 0, "help!"),
        video("cam", 2000, 1),
        audio("mic", 2000, -25),
    ]
    for offset, features in enumerate(read):
        await worker.handle(features, SourcePosition("f", 0, offset))
    assert [a.window_start for a in out.alerts] == [0] and len(out.summaries) == 2
    assert worker.joiner.oldest_open() == {("f", 0): 3}, "the commit stops at window 2000"
    await worker.persist()  # what the revocation's commit does first

    assert worker.release({("f", 1)}) == []
    assert worker.release({("f", 0)}) == ["hq"]
    assert worker.joiner.oldest_open() == {}
    # The partition comes back (or goes to another worker): read again from the committed offset.
    for offset, features in enumerate(
        [video("cam", 2000, 1), audio("mic", 2000, -25), speech("mic", 2000, "help")], start=3
    ):
        await worker.handle(features, SourcePosition("f", 0, offset))
    assert worker.joiner.counters.duplicates == 0, "window 2000 is joined afresh, not on top of the old one"
    assert worker.joiner.counters.late == 0
    assert len(out.summaries) == 4, "window 2000 closed once, window 0 not again"
    assert [a.window_start for a in out.alerts] == [0], "the stored cooldown was loaded again: window 2000 rests"


YEAR_MS = 365 * 24 * 3600 * 1000


async def test_a_future_dated_record_is_refused_and_never_silences_the_site() -> None:
    config = _config([DISTRESS.model_copy(update={"cooldown": 0.0})])
    out, store = ListOutputs(), MemoryRuleStore()
    now_ms = 1_700_000_000_000
    worker = FuseWorker(config, [out], store, ManualClock().monotonic, wallclock=lambda: now_ms / 1000)
    with pytest.raises(OutOfRange, match="ahead of the site's newest window and the wallclock"):
        await worker.handle(video("cam", now_ms + YEAR_MS, 1))
    with pytest.raises(OutOfRange, match="ms long"):
        await worker.handle(video("cam", now_ms, 1).model_copy(update={"window_end": now_ms + YEAR_MS}))
    for start in (now_ms, now_ms + 2000):
        for features in (video("cam", start, 1), audio("mic", start, -25), speech("mic", start, "help!")):
            await worker.handle(features)
    assert [a.window_start for a in out.alerts] == [now_ms, now_ms + 2000], "later windows still alert"
    assert worker.joiner.counters.late == 0


async def test_a_replay_running_ahead_of_the_wallclock_in_window_steps_is_taken() -> None:
    config = _config()
    now_ms = 1_700_000_000_000
    worker = FuseWorker(config, [ListOutputs()], None, ManualClock().monotonic, wallclock=lambda: now_ms / 1000)
    for start in range(now_ms, now_ms + 3_600_000, 2000):  # an hour of recording, replayed at full speed
        await worker.handle(audio("mic", start, -30))
    assert worker.joiner.counters.records == 1800


async def test_a_stored_mark_far_ahead_of_the_wallclock_is_ignored() -> None:
    config = _config([DISTRESS.model_copy(update={"cooldown": 0.0})])
    out, store = ListOutputs(), MemoryRuleStore()
    now_ms = 1_700_000_000_000
    await store.save_rule_state("hq", FuseWorker.CLOSED_KEY, str(now_ms + YEAR_MS))  # left by an older version
    worker = FuseWorker(config, [out], store, ManualClock().monotonic, wallclock=lambda: now_ms / 1000)
    for features in (video("cam", now_ms, 1), audio("mic", now_ms, -25), speech("mic", now_ms, "help!")):
        await worker.handle(features)
    assert [a.window_start for a in out.alerts] == [now_ms]
    assert worker.joiner.counters.marks_ignored == 1


HOUR_MS = 1_699_999_200_000  # a multiple of 1 h: 10 s periods start on it


def _site_windows(starts: range) -> list[list[WindowFeatures]]:
    """Per window: the camera's people, the microphone's level and what it heard (a call for help at +4 s)."""
    return [
        [
            video("cam", start, 1 + (start // 2000) % 3),
            audio("mic", start, -35 + (start // 2000) % 4 * 5),
            speech("mic", start, "help!" if start == HOUR_MS + 4000 else ""),
        ]
        for start in starts
    ]


async def _feed(worker: FuseWorker, windows: list[list[WindowFeatures]]) -> None:
    for window in windows:
        for features in window:
            await worker.handle(features)


async def test_a_period_spanning_a_restart_is_summarised_as_in_one_run() -> None:
    config = _config([DISTRESS]).model_copy(update={"summaries": SummariesConfig(periods=[10.0])})
    windows = _site_windows(range(HOUR_MS, HOUR_MS + 12_000, 2000))
    straight = ListOutputs()
    await _feed(FuseWorker(config, [straight], MemoryRuleStore(), ManualClock().monotonic), windows)
    assert [(p.stream, p.windows, len(p.alerts)) for p in straight.period_summaries] == [("cam", 5, 1), ("mic", 5, 1)]

    out, store = ListOutputs(), MemoryRuleStore()
    first = FuseWorker(config, [out], store, ManualClock().monotonic)
    await _feed(first, windows[:3])
    await first.persist()
    # The closed mark stored last is older than the stored periods (a crash between the two writes):
    # windows +2 s and +4 s are closed again by the next worker, but not folded again.
    await store.save_rule_state("hq", FuseWorker.CLOSED_KEY, str(HOUR_MS))
    again = FuseWorker(config, [out], store, ManualClock().monotonic)
    await _feed(again, windows)  # read again from an older commit
    assert again.joiner.counters.late == 3 and again.rolling.counters.refolds_skipped == 4
    assert out.period_summaries == straight.period_summaries


async def test_periods_open_at_the_end_of_input_are_published_incomplete() -> None:
    config = _config().model_copy(update={"summaries": SummariesConfig(periods=[10.0])})
    out = ListOutputs()
    worker = FuseWorker(config, [out], None, ManualClock().monotonic)
    await _feed(worker, _site_windows(range(HOUR_MS, HOUR_MS + 4000, 2000)))
    assert out.period_summaries == []
    await worker.finish()
    assert [(p.stream, p.windows, p.complete) for p in out.period_summaries] == [
        ("cam", 2, False),
        ("mic", 2, False),
    ]
    assert worker.counters.period_summaries == 2
