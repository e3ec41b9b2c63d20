"""Weighted late fusion (docs/design.md §7): window signals → term scores → event score → alerts.

An event is a list of terms. Each term reads one signal of a joined (site, window) — for
example the largest person count any camera saw, or whether a microphone heard "help" —
maps it to g ∈ [0, 1] with a predicate or a linear ramp, and weighs it with α. The event's
score is Σ αᵢ gᵢ; it fires when the score reaches `threshold` for `for` consecutive
windows, then rests for `cooldown`. Every alert carries each term's contribution and the
stream that gave its value, so an operator sees why it fired and where; the alert names
only those streams and takes its evidence from them. Rules are evaluated in window order per site, and their
state (streak, cooldown) is a small serialisable object, so it can be kept across restarts.
"""

from __future__ import annotations

import hashlib
import operator
from collections.abc import Callable, Iterable, Sequence
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


@dataclass(frozen=True)
class Reading:
    """A signal's value in one window and the stream that gave it, so an alert can say where it came from."""

    value: float
    stream: str


def strongest(readings: Iterable[tuple[str, float]]) -> Reading | None:
    """The largest of (stream, value) readings; on a tie the first stream by name; None when there are none."""
    best: Reading | None = None
    for stream, value in sorted(readings, key=lambda reading: reading[0]):
        if best is None or value > best.value:
            best = Reading(value, stream)
    return best


def signal_reading(term: Term, window: JoinedWindow) -> Reading | None:
    """The term's signal in this window (max over the term's streams) and its stream; None when nobody measured it."""
    signal = term.parsed
    features = window.of(signal.modality, term.streams)
    if signal.modality == "video":
        return strongest(
            (f.stream, value)
            for f in features
            if f.video is not None and (value := _video_value(signal, f.video)) is not None
        )
    if signal.modality == "audio":
        return strongest((f.stream, float(getattr(f.audio, signal.measure))) for f in features if f.audio is not None)
    if signal.measure == "words":
        return strongest((f.stream, float(len(f.speech.words))) for f in features if f.speech is not None)
    spotter = KeywordSpotter(term.match)
    return strongest((f.stream, float(len(spotter.find(f.speech.text)))) for f in features if f.speech is not None)


def signal_value(term: Term, window: JoinedWindow) -> float | None:
    """The term's signal in this window (max over the term's streams); None when nobody measured it."""
    reading = signal_reading(term, window)
    return reading.value if reading is not None else None


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
            reading = signal_reading(term, window)
            value = reading.value if reading is not None else None
            g = term_score(term, value)
            contributions.append(
                TermContribution(
                    signal=term.signal,
                    weight=term.weight,
                    value=value,
                    g=round(g, 4),
                    contribution=round(term.weight * g, 4),
                    stream=reading.stream if reading is not None else None,
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
        """The alert for a fired evaluation, with the evidence an operator needs.

        Its `streams` are those that gave a contributing term (contribution > 0) its value, and
        the evidence comes from them: see `alert_evidence`.
        """
        contributing = [term for term in evaluation.terms if term.contribution > 0 and term.stream is not None]
        streams = sorted({term.stream for term in contributing if term.stream is not None}) or window.streams
        return Alert(
            id=alert_id(self.event.name, window.site, window.window_start),
            event=self.event.name,
            site=window.site,
            streams=streams,
            window_start=window.window_start,
            window_end=window.window_end,
            score=evaluation.score,
            threshold=self.event.threshold,
            terms=list(evaluation.terms),
            severity=self.event.severity,
            evidence=alert_evidence(window, contributing, streams),
        )


def alert_evidence(window: JoinedWindow, contributing: Sequence[TermContribution], streams: Sequence[str]) -> Evidence:
    """What the alert's own streams showed: no camera or microphone that gave no term its value.

    Snapshot and detections: the video of the stream that gave the most contributing video
    term its value; without a contributing video term, the video of `streams` with most
    detections (first by name on a tie). Transcript: the speech of the streams that gave a
    contributing speech term its value, else of every stream in `streams`.
    """
    videos = {f.stream: f.video for f in window.features if f.video is not None}
    video_terms = [term for term in contributing if _modality(term.signal) == "video" and term.stream in videos]
    best: VideoFeatures | None = None
    if video_terms:
        top = max(video_terms, key=lambda term: term.contribution)  # the first of equals, in term order
        best = videos[top.stream] if top.stream is not None else None
    else:
        shown = [videos[stream] for stream in sorted(streams) if stream in videos]
        best = max(shown, key=lambda video: len(video.detections), default=None)
    spoken = {term.stream for term in contributing if _modality(term.signal) == "speech" and term.stream is not None}
    said = spoken or set(streams)
    texts = sorted((f.stream, f.speech.text) for f in window.features if f.speech is not None and f.stream in said)
    transcript = " ".join(text for _, text in texts if text).strip()
    detections: list[Detection] = list(best.detections) if best else []
    return Evidence(transcript=transcript[:500], detections=detections, snapshot=best.snapshot if best else None)


def _modality(signal: str) -> str:
    """`video`, `audio` or `speech`: the first part of a term's signal (weighted and learned alike)."""
    return signal.split(".", 1)[0]


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
