"""Rolling period summaries on hand-built windows: boundaries, weighting, speech, loudness, alerts, state."""

from __future__ import annotations

import math

from config.schema import SummariesConfig
from daemon.fuse.rolling import ROLLING_PREFIX, RollingSummarizer
from daemon.fuse.rules import JoinedWindow
from streams.models import ClassStats, PeriodSummary, Word, ZoneStats
from tests.helpers import W, audio, joined, make_alert, speech, video

T0 = 1_699_999_200_000  # a multiple of 1 h (and so of 10 s and 1 min)
TEN_S = SummariesConfig(periods=[10.0], loud_dbfs=-20)


def _persons(stream: str, start: int, max_count: int, mean: float, tracks: list[int]) -> JoinedWindow:
    stats = ClassStats(max_count=max_count, mean_count=mean, max_confidence=0.8, new_tracks=tracks)
    return joined(start, video(stream, start, 0, classes={"person": stats}))


def _fold_all(summarizer: RollingSummarizer, windows: list[JoinedWindow]) -> list[PeriodSummary]:
    return [summary for window in windows for summary in summarizer.fold(window)]


def test_periods_are_aligned_to_the_clock_and_emitted_when_a_window_past_their_end_closes() -> None:
    summarizer = RollingSummarizer(TEN_S)
    first = T0 + 6000  # the stream starts in the middle of a period
    assert _fold_all(summarizer, [joined(start, audio("mic", start, -40)) for start in (first, first + W)]) == []
    (done,) = summarizer.fold(joined(T0 + 10_000, audio("mic", T0 + 10_000, -40)))
    assert (done.period_start, done.period_end, done.period_s) == (T0, T0 + 10_000, 10)
    assert (done.windows, done.first_window, done.last_window, done.complete) == (2, first, first + W, True)
    assert (done.stream, done.site, done.kind) == ("mic", "hq", "period")
    # A gap of two periods: the open one is emitted by the first window after it, empty periods are not.
    (later,) = summarizer.fold(joined(T0 + 34_000, audio("mic", T0 + 34_000, -40)))
    assert (later.period_start, later.windows) == (T0 + 10_000, 1)


def test_a_stream_that_stops_is_emitted_when_its_site_moves_on() -> None:
    summarizer = RollingSummarizer(TEN_S)
    summarizer.fold(joined(T0, video("cam", T0, 1), audio("mic", T0, -40)))
    emitted = summarizer.fold(joined(T0 + 10_000, audio("mic", T0 + 10_000, -40)))
    assert sorted(s.stream for s in emitted) == ["cam", "mic"]
    cam = next(s for s in emitted if s.stream == "cam")
    assert cam.loudness is None and cam.video_windows == 1 and cam.audio_windows == 0


def test_mean_count_is_weighted_over_the_windows_with_video_and_new_tracks_are_distinct() -> None:
    summarizer = RollingSummarizer(TEN_S)
    windows = [
        _persons("cam", T0, 3, 2.0, [1, 2]),
        joined(T0 + 2000, video("cam", T0 + 2000, 0)),  # video without a person: counts 0
        _persons("cam", T0 + 4000, 1, 1.0, [2, 3]),  # track 2 again (a re-read id) is one track
        joined(T0 + 6000, audio("cam", T0 + 6000, -40)),  # no video: not in the mean
        _persons("cam", T0 + 8000, 2, 1.5, [3, 4]),
    ]
    (done,) = _fold_all(summarizer, [*windows, joined(T0 + 10_000, audio("cam", T0 + 10_000, -40))])
    person = done.objects["person"]
    assert person.max_count == 3
    assert math.isclose(person.mean_count, (2.0 + 0 + 1.0 + 1.5) / 4)
    assert person.new_tracks == 4
    assert (done.windows, done.video_windows, done.audio_windows) == (5, 4, 1)


def test_zone_entries_add_up_and_the_longest_stay_is_kept() -> None:
    summarizer = RollingSummarizer(TEN_S)
    stays = [ZoneStats(entered=1, occupancy=1, dwell_s=1.5), ZoneStats(entered=2, occupancy=2, dwell_s=0.5)]
    windows = [joined(T0 + i * W, video("cam", T0 + i * W, 1, zones={"door": z})) for i, z in enumerate(stays)]
    (done,) = _fold_all(summarizer, [*windows, joined(T0 + 10_000, video("cam", T0 + 10_000, 0))])
    door = done.zones["door"]
    assert (door.entries, door.max_occupancy, door.dwell_s) == (3, 2, 1.5)


def test_loudness_is_an_energy_mean_with_the_loud_runs_and_the_highest_peak() -> None:
    summarizer = RollingSummarizer(TEN_S)
    levels = [-30.0, -15.0, -10.0, -30.0, -18.0]
    windows = [joined(T0 + i * W, audio("mic", T0 + i * W, dbfs, peak=dbfs + 5)) for i, dbfs in enumerate(levels)]
    (done,) = _fold_all(summarizer, [*windows, joined(T0 + 10_000, audio("mic", T0 + 10_000, -40))])
    assert done.loudness is not None
    energy = 10 * math.log10(sum(10 ** (x / 10) for x in levels) / len(levels))
    assert math.isclose(done.loudness.mean_dbfs, round(energy, 2))
    assert done.loudness.mean_dbfs > sum(levels) / len(levels), "loud windows weigh more than in a mean of dB"
    assert done.loudness.peak_dbfs == -5.0
    spans = [(m.start_ms - T0, m.end_ms - T0, m.loudness_dbfs, m.peak_dbfs) for m in done.loudness.loud_moments]
    assert spans == [(2000, 6000, -10.0, -5.0), (8000, 10_000, -18.0, -13.0)]


def _words(start: int, *texts: str) -> list[Word]:
    return [
        Word(text=t, start_ms=start + 300 * i, end_ms=start + 300 * i + 250, probability=0.9)
        for i, t in enumerate(texts)
    ]


def test_speech_pieces_of_one_utterance_read_as_one_line_with_word_times() -> None:
    summarizer = RollingSummarizer(TEN_S)
    windows = [
        joined(T0, speech("mic", T0, "help", words=_words(T0 + 1500, "help"), keywords=["help"])),
        joined(
            T0 + 2000, speech("mic", T0 + 2000, "call the police", words=_words(T0 + 2100, "call", "the", "police"))
        ),
        joined(T0 + 4000, speech("mic", T0 + 4000, "")),
        joined(T0 + 6000, speech("mic", T0 + 6000, "fire", keywords=["fire"])),  # no word times: the window
    ]
    (done,) = _fold_all(summarizer, [*windows, joined(T0 + 10_000, speech("mic", T0 + 10_000, ""))])
    lines = [(line.start_ms - T0, line.end_ms - T0, line.text) for line in done.speech]
    assert lines == [(1500, 2950, "help call the police"), (6000, 8000, "fire")]
    assert done.keywords == ["fire", "help"]


def test_alerts_are_attached_to_the_streams_they_name_once() -> None:
    summarizer = RollingSummarizer(TEN_S)
    alert = make_alert("distress", "hq", T0 + 2000, streams=["cam"])
    window = joined(T0 + 2000, video("cam", T0 + 2000, 1), audio("mic", T0 + 2000, -30))
    summarizer.fold(window, [alert])
    summarizer.fold(joined(T0 + 4000, video("cam", T0 + 4000, 1)), [alert])  # the same alert again
    emitted = {s.stream: s for s in summarizer.fold(joined(T0 + 10_000, video("cam", T0 + 10_000, 0)))}
    assert [(a.id, a.event, a.score, a.window_start) for a in emitted["cam"].alerts] == [
        (alert.id, "distress", 1.0, T0 + 2000)
    ]
    assert emitted["mic"].alerts == []


def test_every_configured_period_is_kept_apart() -> None:
    summarizer = RollingSummarizer(SummariesConfig(periods=[10.0, 60.0]))
    emitted = _fold_all(summarizer, [joined(T0 + i * W, audio("mic", T0 + i * W, -40)) for i in range(31)])
    assert [(s.period_s, s.period_start - T0, s.windows) for s in emitted] == [
        (10, 0, 5),
        (10, 10_000, 5),
        (10, 20_000, 5),
        (10, 30_000, 5),
        (10, 40_000, 5),
        (10, 50_000, 5),
        (60, 0, 30),
    ]
    assert RollingSummarizer(SummariesConfig(periods=[])).fold(joined(T0, audio("mic", T0, -40))) == []


def test_a_window_folded_twice_counts_once() -> None:
    summarizer = RollingSummarizer(TEN_S)
    windows = [_persons("cam", T0 + i * W, 1, 1.0, [i]) for i in range(3)]
    _fold_all(summarizer, windows)
    _fold_all(summarizer, windows[1:])  # read again after a restart
    (done,) = summarizer.fold(joined(T0 + 10_000, video("cam", T0 + 10_000, 0)))
    assert done.windows == 3 and done.objects["person"].new_tracks == 3
    assert summarizer.counters.refolds_skipped == 2
    # A window of an already emitted period never opens it again.
    assert _fold_all(summarizer, [windows[2], joined(T0 + 12_000, video("cam", T0 + 12_000, 0))]) == []


def _scene(start: int) -> JoinedWindow:
    i = (start - T0) // W
    return joined(
        start,
        video("cam", start, 0, classes={"person": ClassStats(max_count=i, mean_count=i / 2, max_confidence=0.5)}),
        audio("mic", start, -25.0 + i * 2),
        speech("mic", start, f"word{i}"),
    )


def test_state_round_trips_and_a_restored_summarizer_finishes_the_period_the_same() -> None:
    windows = [_scene(T0 + i * W) for i in range(6)]
    straight = RollingSummarizer(TEN_S)
    expected = _fold_all(straight, windows)

    first = RollingSummarizer(TEN_S)
    _fold_all(first, windows[:3])
    stored = {field: value for (site, field), value in first.take_dirty().items() if site == "hq"}
    assert set(stored) == {ROLLING_PREFIX + "cam", ROLLING_PREFIX + "mic"}
    assert first.take_dirty() == {}, "only what changed since"
    second = RollingSummarizer(TEN_S)
    second.restore("hq", {"distress": "{}", **stored})
    resumed = _fold_all(second, windows[2:])  # window 2 is read again: already folded
    assert resumed == expected and len(expected) == 2


def test_unreadable_or_unconfigured_stored_state_is_dropped_not_raised() -> None:
    first = RollingSummarizer(SummariesConfig(periods=[10.0, 60.0]))
    first.fold(_scene(T0))
    stored = {field: value for (_, field), value in first.take_dirty().items()}
    later = RollingSummarizer(TEN_S)  # the 60 s period was removed from the config
    later.restore("hq", {**stored, ROLLING_PREFIX + "ghost": "not json", ROLLING_PREFIX + "odd": '{"x": 1}'})
    assert later.counters.invalid_states == 2
    emitted = later.fold(_scene(T0 + 10_000))
    assert {(s.stream, s.period_s, s.windows) for s in emitted} == {("cam", 10, 1), ("mic", 10, 1)}


def test_end_of_input_shows_open_periods_as_incomplete_once_and_keeps_them_open() -> None:
    summarizer = RollingSummarizer(TEN_S)
    _fold_all(summarizer, [_scene(T0), _scene(T0 + W)])
    partial = summarizer.partial()
    assert {(s.stream, s.windows, s.complete) for s in partial} == {("cam", 2, False), ("mic", 2, False)}
    assert summarizer.partial() == [], "nothing new since"
    (cam, mic) = sorted(_fold_all(summarizer, [_scene(T0 + 2 * W), _scene(T0 + 10_000)]), key=lambda s: s.stream)
    assert (cam.windows, cam.complete, mic.windows, mic.complete) == (3, True, 3, True)
    assert summarizer.counters.partial == 2 and summarizer.counters.emitted == 2


def test_forgetting_a_site_drops_its_state_and_pending_writes() -> None:
    summarizer = RollingSummarizer(TEN_S)
    summarizer.fold(_scene(T0))
    summarizer.forget("hq")
    assert summarizer.take_dirty() == {} and summarizer.partial() == []
