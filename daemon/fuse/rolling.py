"""Rolling summaries: per stream and period (1 min, 1 h…), what was seen, heard and alerted on.

A per-window `Summary` answers "what is happening now"; an operator coming on shift asks
"what happened in the last hour". `RollingSummarizer` folds every closed window of a site
(and the alerts it fired) into one open accumulator per (stream, period) and emits a
`PeriodSummary` when the first window at or after the period's end closes: windows close in
order per site, so nothing of the period can come later. Periods are aligned to multiples
of their length since the epoch, and a window belongs to the period its start falls in.

Folding, per stream:
- objects: per class the largest count of any window, the mean count weighted by window
  length over the windows where the stream had video (a class missing from one counts 0
  there), and the distinct new track ids;
- zones: entries summed, the largest occupancy, the longest stay (`dwell_s` is the longest
  current stay at a window's end, so the period keeps the maximum, never a sum);
- speech: one line per utterance with wallclock times (word times when the window has them,
  else its bounds); a piece starting within `MERGE_GAP_MS` of the previous line's end
  continues it, so an utterance cut by window boundaries reads as one line; keywords united;
- loudness: the energy mean of the windows' RMS levels (10·log10 of the mean power, not the
  mean of decibels, which would understate short loud sounds), the highest peak, and the
  runs of consecutive windows at or above `summaries.loud_dbfs`;
- alerts: those whose `streams` name the stream.

The open accumulators are part of the fuse stage's state: `take_dirty` gives them as JSON
fields of the site's rule hash (`__rolling__:<stream>`) for `FuseWorker.persist`, and
`restore` loads them, so a period spanning a restart or a rebalance is still whole. Each
(stream, period) remembers the last window it folded, even after emitting, so a window read
again after a restart is never counted twice (nor starts a bogus new period).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from config.schema import SummariesConfig
from daemon.fuse.rules import JoinedWindow
from streams.models import (
    Alert,
    AlertRef,
    AudioFeatures,
    LoudMoment,
    PeriodLoudness,
    PeriodObjects,
    PeriodSummary,
    PeriodZone,
    SaidLine,
    SpeechFeatures,
    VideoFeatures,
)

log = logging.getLogger(__name__)

ROLLING_PREFIX = "__rolling__:"
"""Rule-hash fields `__rolling__:<stream>` hold a stream's open accumulators (event names cannot start so)."""
MERGE_GAP_MS = 1000
"""Speech starting at most this long after the previous line's end continues that line."""
_FLOOR_DBFS = -120.0


class _State(BaseModel):
    """Persisted state: mutable, unknown keys rejected, so a stored value of another shape is refused on load."""

    model_config = ConfigDict(extra="forbid")


class _ObjectTally(_State):
    max_count: int = 0
    count_ms: float = 0.0
    tracks: set[int] = Field(default_factory=set)


class _ZoneTally(_State):
    entries: int = 0
    max_occupancy: float = 0.0
    dwell_s: float = 0.0


class _Accumulator(_State):
    """One stream's open period."""

    start: int
    end: int
    windows: int = 0
    video_windows: int = 0
    audio_windows: int = 0
    first_window: int = -1
    last_window: int = -1
    video_ms: int = 0
    audio_ms: int = 0
    objects: dict[str, _ObjectTally] = Field(default_factory=dict)
    zones: dict[str, _ZoneTally] = Field(default_factory=dict)
    speech: list[SaidLine] = Field(default_factory=list)
    keywords: set[str] = Field(default_factory=set)
    energy_ms: float = 0.0
    peak_dbfs: float | None = None
    loud: list[LoudMoment] = Field(default_factory=list)
    alerts: list[AlertRef] = Field(default_factory=list)
    shown_windows: int = 0
    """`windows` when last emitted as a partial period: ending the input twice emits it once."""


class _Track(_State):
    """One (stream, period): the last window folded (kept after emitting) and the open period."""

    folded_upto: int = -1
    open: _Accumulator | None = None


class _StreamState(_State):
    v: Literal[1] = 1
    periods: dict[int, _Track] = Field(default_factory=dict)


@dataclass
class RollingCounters:
    """What the summarizer did; `invalid_states` counts stored states it could not read (and dropped)."""

    emitted: int = 0
    partial: int = 0
    refolds_skipped: int = 0
    invalid_states: int = 0


class RollingSummarizer:
    """Per (site, stream, period) accumulators fed with closed windows; see the module doc."""

    def __init__(self, config: SummariesConfig) -> None:
        self._periods_s = [int(period) for period in config.periods]
        self._loud_dbfs = config.loud_dbfs
        self._sites: dict[str, dict[str, _StreamState]] = {}
        self._dirty: set[tuple[str, str]] = set()
        self.counters = RollingCounters()

    def fold(self, window: JoinedWindow, alerts: Sequence[Alert] = ()) -> list[PeriodSummary]:
        """Take a closed window and the alerts it fired; return the periods it completed."""
        if not self._periods_s:
            return []
        site = self._sites.setdefault(window.site, {})
        emitted = self._due(window.site, site, window.window_start)
        for stream in window.streams:
            state = site.setdefault(stream, _StreamState())
            refs = [
                AlertRef(id=alert.id, event=alert.event, score=alert.score, window_start=alert.window_start)
                for alert in alerts
                if stream in alert.streams
            ]
            for period_s in self._periods_s:
                track = state.periods.setdefault(period_s, _Track())
                if window.window_start <= track.folded_upto:
                    self.counters.refolds_skipped += 1
                    continue
                period_ms = period_s * 1000
                start = window.window_start // period_ms * period_ms
                if track.open is None:
                    track.open = _Accumulator(start=start, end=start + period_ms)
                self._add(track.open, window, stream, refs)
                track.folded_upto = window.window_start
            self._dirty.add((window.site, stream))
        return emitted

    def partial(self) -> list[PeriodSummary]:
        """Every open period that gained windows since it was last shown, marked incomplete (end of input).

        The accumulators stay open: a later window (this worker's, or the next one's after
        loading the stored state) completes the period, and that summary replaces this one.
        """
        out = []
        for site_name, site in self._sites.items():
            for stream, state in site.items():
                for period_s, track in state.periods.items():
                    acc = track.open
                    if acc is not None and acc.windows != acc.shown_windows:
                        acc.shown_windows = acc.windows
                        out.append(_summary(site_name, stream, period_s, acc, complete=False))
                        self._dirty.add((site_name, stream))
        self.counters.partial += len(out)
        return out

    def _due(self, site_name: str, site: dict[str, _StreamState], window_start: int) -> list[PeriodSummary]:
        out = []
        for stream, state in site.items():
            for period_s, track in state.periods.items():
                if track.open is not None and track.open.end <= window_start:
                    out.append(_summary(site_name, stream, period_s, track.open, complete=True))
                    track.open = None
                    self._dirty.add((site_name, stream))
        self.counters.emitted += len(out)
        return out

    def _add(self, acc: _Accumulator, window: JoinedWindow, stream: str, alerts: list[AlertRef]) -> None:
        acc.windows += 1
        if acc.first_window < 0:
            acc.first_window = window.window_start
        acc.last_window = window.window_start
        length = window.window_end - window.window_start
        for features in window.features:
            if features.stream != stream:
                continue
            if features.video is not None:
                _add_video(acc, features.video, length)
            if features.audio is not None:
                _add_audio(acc, features.audio, window, length, self._loud_dbfs)
            if features.speech is not None:
                _add_speech(acc, features.speech, window)
        known = {ref.id for ref in acc.alerts}
        acc.alerts += [ref for ref in alerts if ref.id not in known]

    # ------------------------------------------------------------------ state

    def take_dirty(self) -> dict[tuple[str, str], str]:
        """(site, rule-hash field) → JSON of each stream's state changed since the last call."""
        dirty, self._dirty = self._dirty, set()
        out = {}
        for site, stream in sorted(dirty):
            state = self._sites.get(site, {}).get(stream)
            if state is not None:
                out[(site, ROLLING_PREFIX + stream)] = state.model_dump_json()
        return out

    def restore(self, site: str, saved: Mapping[str, str]) -> None:
        """Load a site's stored states (the `__rolling__:` fields among `saved`); drop unreadable ones.

        Periods no longer configured are dropped; new ones start empty.
        """
        mine = self._sites.setdefault(site, {})
        for field, value in saved.items():
            if not field.startswith(ROLLING_PREFIX):
                continue
            stream = field.removeprefix(ROLLING_PREFIX)
            try:
                state = _StreamState.model_validate_json(value)
            except ValidationError as exc:
                self.counters.invalid_states += 1
                log.warning(
                    "fuse: site %r: stored period summaries of %r unreadable, started afresh: %s", site, stream, exc
                )
                continue
            state.periods = {p: track for p, track in state.periods.items() if p in self._periods_s}
            mine[stream] = state

    def forget(self, site: str) -> None:
        """Drop a site's state (its partitions were revoked; the stored state is the next owner's)."""
        self._sites.pop(site, None)
        self._dirty = {key for key in self._dirty if key[0] != site}


def _add_video(acc: _Accumulator, video: VideoFeatures, length: int) -> None:
    acc.video_windows += 1
    acc.video_ms += length
    for label, stats in video.classes.items():
        tally = acc.objects.setdefault(label, _ObjectTally())
        tally.max_count = max(tally.max_count, stats.max_count)
        tally.count_ms += stats.mean_count * length
        tally.tracks.update(stats.new_tracks)
    for name, zone in video.zones.items():
        zones = acc.zones.setdefault(name, _ZoneTally())
        zones.entries += zone.entered
        zones.max_occupancy = max(zones.max_occupancy, zone.occupancy)
        zones.dwell_s = max(zones.dwell_s, zone.dwell_s)


def _add_audio(acc: _Accumulator, audio: AudioFeatures, window: JoinedWindow, length: int, loud_dbfs: float) -> None:
    acc.audio_windows += 1
    acc.audio_ms += length
    acc.energy_ms += 10 ** (audio.loudness_dbfs / 10) * length
    acc.peak_dbfs = audio.peak_dbfs if acc.peak_dbfs is None else max(acc.peak_dbfs, audio.peak_dbfs)
    if audio.loudness_dbfs < loud_dbfs:
        return
    last = acc.loud[-1] if acc.loud else None
    if last is not None and last.end_ms == window.window_start:
        acc.loud[-1] = LoudMoment(
            start_ms=last.start_ms,
            end_ms=window.window_end,
            loudness_dbfs=max(last.loudness_dbfs, audio.loudness_dbfs),
            peak_dbfs=max(last.peak_dbfs, audio.peak_dbfs),
        )
    else:
        acc.loud.append(
            LoudMoment(
                start_ms=window.window_start,
                end_ms=window.window_end,
                loudness_dbfs=audio.loudness_dbfs,
                peak_dbfs=audio.peak_dbfs,
            )
        )


def _add_speech(acc: _Accumulator, speech: SpeechFeatures, window: JoinedWindow) -> None:
    acc.keywords.update(speech.keywords)
    text = speech.text.strip()
    if not text:
        return
    start = min((word.start_ms for word in speech.words), default=window.window_start)
    end = max((word.end_ms for word in speech.words), default=window.window_end)
    last = acc.speech[-1] if acc.speech else None
    if last is not None and start - last.end_ms <= MERGE_GAP_MS:
        acc.speech[-1] = SaidLine(start_ms=last.start_ms, end_ms=max(last.end_ms, end), text=f"{last.text} {text}")
    else:
        acc.speech.append(SaidLine(start_ms=start, end_ms=end, text=text))


def _dbfs(power: float) -> float:
    return round(max(10 * math.log10(power), _FLOOR_DBFS), 2) if power > 0 else _FLOOR_DBFS


def _summary(site: str, stream: str, period_s: int, acc: _Accumulator, complete: bool) -> PeriodSummary:
    loudness = None
    if acc.audio_ms and acc.peak_dbfs is not None:
        loudness = PeriodLoudness(
            mean_dbfs=_dbfs(acc.energy_ms / acc.audio_ms), peak_dbfs=acc.peak_dbfs, loud_moments=list(acc.loud)
        )
    return PeriodSummary(
        stream=stream,
        site=site,
        period_s=period_s,
        period_start=acc.start,
        period_end=acc.end,
        complete=complete,
        windows=acc.windows,
        video_windows=acc.video_windows,
        audio_windows=acc.audio_windows,
        first_window=acc.first_window,
        last_window=acc.last_window,
        objects={
            label: PeriodObjects(
                max_count=tally.max_count,
                mean_count=round(tally.count_ms / acc.video_ms, 4) if acc.video_ms else 0.0,
                new_tracks=len(tally.tracks),
            )
            for label, tally in sorted(acc.objects.items())
        },
        zones={
            name: PeriodZone(entries=zone.entries, max_occupancy=zone.max_occupancy, dwell_s=zone.dwell_s)
            for name, zone in sorted(acc.zones.items())
        },
        speech=list(acc.speech),
        keywords=sorted(acc.keywords),
        loudness=loudness,
        alerts=list(acc.alerts),
    )
