"""Weighted late fusion (docs/design.md §7): window signals → term scores → event score → alerts.

An event is a list of terms. Each term reads one signal of a joined (site, window) — for
example the largest person count any camera saw, or whether a microphone heard "help" —
maps it to g ∈ [0, 1] with a predicate or a linear ramp, and weighs it with α. The event's
score is Σ αᵢ gᵢ; it fires when the score reaches `threshold` for `for` consecutive
windows, then rests for `cooldown`. Every alert carries each term's contribution, so an
operator sees why it fired. Rules are evaluated in window order per site, and their
state (streak, cooldown) is a small serialisable object, so it can be kept across restarts.
"""

from __future__ import annotations

import hashlib
import operator
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

from config.schema import EventConfig, Signal, Term
from detectors.keywords import KeywordSpotter
from streams.models import (
    Alert,
    AudioFeatures,
    Detection,
    Evidence,
    SpeechFeatures,
    Summary,
    TermContribution,
    VideoFeatures,
    WindowFeatures,
)

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}


@dataclass(frozen=True)
class JoinedWindow:
    """Everything every stream of one site produced for one window."""

    site: str
    window_start: int
    window_end: int
    features: tuple[WindowFeatures, ...]

    def of(self, modality: str, streams: Sequence[str] = ()) -> list[WindowFeatures]:
        return [f for f in self.features if f.modality == modality and (not streams or f.stream in streams)]

    def videos(self, streams: Sequence[str] = ()) -> list[VideoFeatures]:
        """The video of every stream (of `streams`, when given) in this window."""
        return [f.video for f in self.features if f.video is not None and (not streams or f.stream in streams)]

    def audios(self, streams: Sequence[str] = ()) -> list[AudioFeatures]:
        return [f.audio for f in self.features if f.audio is not None and (not streams or f.stream in streams)]

    def speeches(self, streams: Sequence[str] = ()) -> list[SpeechFeatures]:
        return [f.speech for f in self.features if f.speech is not None and (not streams or f.stream in streams)]

    @property
    def streams(self) -> list[str]:
        return sorted({f.stream for f in self.features})


def alert_id(event: str, site: str, window_start: int) -> str:
    """Deterministic: the same (event, site, window) is the same alert, however often it is processed."""
    return hashlib.sha256(f"{event}\x1f{site}\x1f{window_start}".encode()).hexdigest()[:24]


def signal_value(term: Term, window: JoinedWindow) -> float | None:
    """The term's signal in this window (max over the term's streams); None when nobody measured it."""
    signal = term.parsed
    if signal.modality == "video":
        values = [value for video in window.videos(term.streams) if (value := _video_value(signal, video)) is not None]
        return max(values) if values else None
    if signal.modality == "audio":
        audio_values = [getattr(audio, signal.measure) for audio in window.audios(term.streams)]
        return max(audio_values) if audio_values else None
    speech = window.speeches(term.streams)
    if not speech:
        return None
    if signal.measure == "words":
        return float(max(len(s.words) for s in speech))
    spotter = KeywordSpotter(term.match)
    return float(max(len(spotter.find(s.text)) for s in speech))


def _video_value(signal: Signal, video: VideoFeatures) -> float | None:
    """A zone's measure (None where the zone is not reported), or a class's (0 when the class was not seen)."""
    if signal.zone is not None:
        zone = video.zones.get(signal.zone)
        if zone is None:
            return None
        return {"entered": float(zone.entered), "occupancy": zone.occupancy, "dwell": zone.dwell_s}[signal.measure]
    stats = video.classes.get(signal.label or "")
    if stats is None:
        return 0.0
    return {
        "count": float(stats.max_count),
        "max_count": float(stats.max_count),
        "mean_count": stats.mean_count,
        "confidence": stats.max_confidence,
        "new_tracks": float(len(stats.new_tracks)),
    }[signal.measure]


def term_score(term: Term, value: float | None) -> float:
    """g ∈ [0, 1]: 1 when a text term matched, the predicate holds, or along the ramp."""
    if value is None:
        return 0.0
    if term.parsed.is_text:
        return 1.0 if value > 0 else 0.0
    if term.when is not None:
        return 1.0 if _OPS[term.when.op](value, term.when.value) else 0.0
    assert term.ramp is not None
    low, high = term.ramp.low, term.ramp.high
    return min(max((value - low) / (high - low), 0.0), 1.0)


@dataclass
class RuleState:
    """What an event remembers per site between windows; small and JSON-serialisable."""

    streak: int = 0
    last_window: int | None = None
    quiet_until: int = 0

    def to_dict(self) -> dict[str, int | None]:
        return asdict(self)


@dataclass(frozen=True)
class Evaluation:
    """The score of one event in one window, with each term's contribution."""

    event: str
    score: float
    terms: tuple[TermContribution, ...]
    fired: bool


class EventRule:
    """One configured event, evaluated window after window for each site."""

    def __init__(self, event: EventConfig, window_ms: int) -> None:
        if event.fusion != "weighted":
            raise ValueError(f"event {event.name}: fusion {event.fusion!r} is evaluated by a fusion model")
        self.event = event
        self._window_ms = window_ms

    def applies_to(self, site: str) -> bool:
        return not self.event.sites or site in self.event.sites

    def score(self, window: JoinedWindow) -> tuple[float, tuple[TermContribution, ...]]:
        contributions = []
        for term in self.event.terms:
            value = signal_value(term, window)
            g = term_score(term, value)
            contributions.append(
                TermContribution(
                    signal=term.signal,
                    weight=term.weight,
                    value=value,
                    g=round(g, 4),
                    contribution=round(term.weight * g, 4),
                )
            )
        return round(sum(c.contribution for c in contributions), 4), tuple(contributions)

    def evaluate(self, window: JoinedWindow, state: RuleState) -> Evaluation:
        """Score the window and advance `state`; `fired` when an alert is due."""
        score, contributions = self.score(window)
        contiguous = state.last_window is not None and window.window_start == state.last_window + self._window_ms
        state.streak = (state.streak + 1 if contiguous else 1) if score >= self.event.threshold else 0
        state.last_window = window.window_start
        fired = state.streak >= self.event.for_windows and window.window_start >= state.quiet_until
        if fired:
            state.quiet_until = window.window_end + round(self.event.cooldown * 1000)
            state.streak = 0
        return Evaluation(self.event.name, score, contributions, fired)

    def alert(self, window: JoinedWindow, evaluation: Evaluation) -> Alert:
        """The alert for a fired evaluation, with the evidence an operator needs."""
        used = {stream for term in self.event.terms for stream in term.streams}
        best = max(window.videos(sorted(used)), key=lambda video: len(video.detections), default=None)
        detections: list[Detection] = list(best.detections) if best else []
        transcript = " ".join(speech.text for speech in window.speeches() if speech.text).strip()
        contributing = sorted(self._contributing(window))
        return Alert(
            id=alert_id(self.event.name, window.site, window.window_start),
            event=self.event.name,
            site=window.site,
            streams=contributing or window.streams,
            window_start=window.window_start,
            window_end=window.window_end,
            score=evaluation.score,
            threshold=self.event.threshold,
            terms=list(evaluation.terms),
            severity=self.event.severity,
            evidence=Evidence(
                transcript=transcript[:500],
                detections=detections,
                snapshot=best.snapshot if best else None,
            ),
        )

    def _contributing(self, window: JoinedWindow) -> set[str]:
        """Streams that on their own give some term a g > 0."""
        found: set[str] = set()
        for term in self.event.terms:
            modality = term.parsed.modality
            for features in window.of(modality, term.streams):
                alone = JoinedWindow(window.site, window.window_start, window.window_end, (features,))
                if term_score(term, signal_value(term, alone)) > 0:
                    found.add(features.stream)
        return found


def summaries(window: JoinedWindow) -> list[Summary]:
    """What each stream of the site saw and heard in this window."""
    out = []
    for stream in window.streams:
        mine = [f for f in window.features if f.stream == stream]
        objects = {label: stats.max_count for f in mine if f.video for label, stats in f.video.classes.items()}
        audio = next((f.audio for f in mine if f.audio), None)
        text = " ".join(f.speech.text for f in mine if f.speech and f.speech.text)
        out.append(
            Summary(
                stream=stream,
                site=window.site,
                window_start=window.window_start,
                window_end=window.window_end,
                objects=objects,
                loudness_dbfs=audio.loudness_dbfs if audio else None,
                speech_ratio=audio.speech_ratio if audio else None,
                transcript=text,
            )
        )
    return out
