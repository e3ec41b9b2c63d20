"""Window records → moments: runs of similar consecutive windows, described in words.

A minute of the same scene should be one search hit, not thirty. Windows of a stream merge
into one moment while they are consecutive and look alike (the same classes of object in
view, how it sounded, loud or not), within aligned blocks of `search.moment_max`: a moment
never crosses a block boundary, so the moments of a block depend on that block's records
alone, and a record read again rebuilds its block to the same moments (`Moment.id` is
`<stream>@<first window start>`).

How a window sounded is judged against its block's quiet floor (the 10th percentile of the
block's window levels), not a fixed level alone: a camera's microphone hears its own noise
floor, and a dog or an alarm 40 dB above it is a sound to an operator even when it is far
from full scale. A window is heard when it is at least `search.sound_above_db` over that
floor and `search.sound_dbfs` absolute, or `search.loud_dbfs` (loud) whatever the floor:
then it is a voice (the VAD heard speech) or a sound. A window something was transcribed
from is speech, whatever its level.

The description is the moment in the shared text space of the search: what was seen
(classes with counts, zone entries), heard and said (the transcript), and the alerts fired.
It is what the sentence model embeds and what keyword search reads, so it uses plain words
an operator would type, and names only what is there ("speech" is not in a silent moment's
description, or a query for speech would match it).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from config.schema import SearchConfig
from streams.models import (
    Alert,
    AlertRef,
    AudioFeatures,
    Heard,
    Moment,
    SpeechFeatures,
    VideoFeatures,
    WindowFeatures,
)

_PLURALS = {"person": "people", "bus": "buses", "knife": "knives", "mouse": "mice", "sheep": "sheep"}
_NUMBERS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
_VOICE_RATIO = 0.5  # a window the VAD calls speech at least this much of is a voice, not a sound
_HEARD = {
    ("speech", False): "speech",
    ("speech", True): "loud speech, shouting",
    ("voice", False): "a voice",
    ("voice", True): "a loud voice, shouting",
    ("sound", False): "a sound or noise",
    ("sound", True): "a loud sound or noise",
    ("quiet", False): "quiet",
}


@dataclass(frozen=True, slots=True)
class _Hearing:
    """What makes a window of one block heard, and loud."""

    floor_dbfs: float
    loud_dbfs: float

    @classmethod
    def of_block(cls, levels: list[float], config: SearchConfig) -> _Hearing:
        quiet = sorted(levels)[len(levels) // 10] if levels else 0.0
        return cls(max(config.sound_dbfs, quiet + config.sound_above_db), config.loud_dbfs)


@dataclass
class _Window:
    start: int
    end: int
    video: VideoFeatures | None = None
    audio: AudioFeatures | None = None
    speech: SpeechFeatures | None = None
    alerts: list[Alert] = field(default_factory=list)

    def heard(self, hearing: _Hearing) -> Heard | None:
        if self.speech and self.speech.text.strip():
            return "speech"
        if self.audio is None:
            return None
        level = self.audio.loudness_dbfs
        if level < hearing.floor_dbfs and level < hearing.loud_dbfs:
            return "quiet"
        return "voice" if self.audio.speech_ratio >= _VOICE_RATIO else "sound"

    def signature(self, hearing: _Hearing) -> tuple[frozenset[str], Heard | None, bool]:
        seen = frozenset(
            label for label, stats in (self.video.classes if self.video else {}).items() if stats.max_count
        )
        loud = bool(self.audio and self.audio.loudness_dbfs >= hearing.loud_dbfs)
        return seen, self.heard(hearing), loud


def block_of(window_start: int, block_ms: int) -> tuple[int, int]:
    """The aligned block a window start falls in: [start, end)."""
    start = window_start // block_ms * block_ms
    return start, start + block_ms


def build_moments(
    site: str,
    stream: str,
    parts: Sequence[WindowFeatures],
    alerts: Sequence[Alert],
    config: SearchConfig,
) -> list[Moment]:
    """The moments of one stream's block, from its window records and alerts."""
    windows: dict[int, _Window] = {}
    for part in parts:
        window = windows.setdefault(part.window_start, _Window(part.window_start, part.window_end))
        if part.video is not None:
            window.video = part.video
        elif part.audio is not None:
            window.audio = part.audio
        elif part.speech is not None:
            window.speech = part.speech
    for alert in alerts:
        if alert.window_start in windows:
            windows[alert.window_start].alerts.append(alert)
    hearing = _Hearing.of_block([w.audio.loudness_dbfs for w in windows.values() if w.audio], config)
    runs = _runs(sorted(windows.values(), key=_start), hearing)
    return [_moment(site, stream, run, hearing) for run in runs]


def _start(window: _Window) -> int:
    return window.start


def _runs(windows: list[_Window], hearing: _Hearing) -> Iterable[list[_Window]]:
    run: list[_Window] = []
    for window in windows:
        if run and (window.start != run[-1].end or window.signature(hearing) != run[-1].signature(hearing)):
            yield run
            run = []
        run.append(window)
    if run:
        yield run


def _moment(site: str, stream: str, run: list[_Window], hearing: _Hearing) -> Moment:
    objects: dict[str, int] = {}
    zones: dict[str, int] = {}
    for video in (w.video for w in run if w.video):
        for label, stats in video.classes.items():
            if stats.max_count:
                objects[label] = max(objects.get(label, 0), stats.max_count)
        for name, zone in video.zones.items():
            zones[name] = zones.get(name, 0) + zone.entered
    speech = [w.speech for w in run if w.speech and w.speech.text.strip()]
    audio = [w.audio for w in run if w.audio]
    _, heard, loud = run[0].signature(hearing)  # the run's windows all sound alike, all loud or none
    best = max((w.video for w in run if w.video and w.video.snapshot), key=lambda v: len(v.detections), default=None)
    refs = {
        a.id: AlertRef(id=a.id, event=a.event, score=a.score, window_start=a.window_start)
        for w in run
        for a in w.alerts
    }
    loudness = _energy_mean([a.loudness_dbfs for a in audio]) if audio else None
    peak = max(a.peak_dbfs for a in audio) if audio else None
    transcript = " ".join(s.text.strip() for s in speech)
    keywords = sorted({k for s in speech for k in s.keywords})
    moment = Moment(
        id=f"{stream}@{run[0].start}",
        site=site,
        stream=stream,
        start_ms=run[0].start,
        end_ms=run[-1].end,
        windows=len(run),
        objects=dict(sorted(objects.items())),
        zones={name: count for name, count in sorted(zones.items()) if count},
        transcript=transcript,
        words=[word for s in speech for word in s.words],
        keywords=keywords,
        loudness_dbfs=None if loudness is None else round(loudness, 1),
        peak_dbfs=None if peak is None else round(peak, 1),
        speech_ratio=round(sum(a.speech_ratio for a in audio) / len(audio), 3) if audio else None,
        heard=heard,
        alerts=sorted(refs.values(), key=lambda ref: (ref.window_start, ref.id)),
        snapshot=best.snapshot if best else None,
        description="",
    )
    return moment.model_copy(update={"description": describe(moment, loud)})


def _energy_mean(levels_dbfs: list[float]) -> float:
    power = sum(10 ** (level / 10) for level in levels_dbfs) / len(levels_dbfs)
    return 10 * math.log10(power) if power > 0 else -120.0


def describe(moment: Moment, loud: bool) -> str:
    """The moment in words: what the sentence model embeds and keyword search reads; `loud`: its windows are."""
    seen = ", ".join(_count(count, label) for label, count in moment.objects.items())
    lines = [f"{moment.stream} camera at {moment.site}.", f"Seen: {seen}." if seen else "Nobody and nothing seen."]
    lines += [f"In zone {zone}: {_count(entries, 'entry')}." for zone, entries in moment.zones.items()]
    if moment.heard is not None:
        lines.append(f"Heard: {_HEARD[moment.heard, loud and moment.heard != 'quiet']}.")
    if moment.transcript:
        lines.append(f'Said: "{moment.transcript}"')
    if moment.keywords:
        lines.append(f"Keywords: {', '.join(moment.keywords)}.")
    lines += [f"Alert: {ref.event}." for ref in moment.alerts]
    return " ".join(lines)


def _count(count: int, label: str) -> str:
    number = _NUMBERS[count] if count < len(_NUMBERS) else str(count)
    if count == 1:
        return f"{number} {label}"
    plural = _PLURALS.get(label, label[:-1] + "ies" if label.endswith("y") else label + "s")
    return f"{number} {plural}"
