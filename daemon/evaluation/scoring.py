"""`fusewatch eval`: precision, recall and F1 per event against labelled recordings.

The recordings go through the real pipeline (replay → `fw.media` → analyze → `fw.features`)
on the embedded broker; the window features are then fused with the configured events,
and with each event reduced to the terms of one modality, so fused and single-modality
detection can be compared on the same windows.

Matching is event-level: a label is an interval (seconds from the start of its recording).
An alert of the same event matches a label when its window overlaps the label widened by
`tolerance` seconds on each side; each label is matched at most once. Matched labels are
true positives, alerts that match no label are false positives, unmatched labels are false
negatives. A single-modality variant keeps the event's terms of that modality and scales
the threshold by their share of the weights (Σα of the kept terms / Σα of all terms).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from config.schema import EventConfig, FusewatchConfig
from daemon.fuse.memory import ListOutputs
from daemon.fuse.rules import JoinedWindow
from daemon.fuse.worker import FuseWorker, WindowJoiner
from streams.models import Alert, WindowFeatures

MODALITIES = ("video", "audio", "speech")


@dataclass(frozen=True)
class Label:
    """A labelled event: seconds from the start of its recording."""

    event: str
    start: float
    end: float


@dataclass(frozen=True)
class AlertSpan:
    """An alert as the evaluation sees it: its event and span in seconds of the recording."""

    event: str
    start: float
    end: float


@dataclass
class Score:
    """Counts and the usual metrics for one event (and one variant)."""

    event: str
    variant: str
    true_positives: int = 0
    false_positives: int = 0
    false_negatives: int = 0
    alerts: list[float] = field(default_factory=list)

    @property
    def precision(self) -> float:
        predicted = self.true_positives + self.false_positives
        return self.true_positives / predicted if predicted else (1.0 if not self.false_negatives else 0.0)

    @property
    def recall(self) -> float:
        actual = self.true_positives + self.false_negatives
        return self.true_positives / actual if actual else (1.0 if not self.false_positives else 0.0)

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def as_dict(self) -> dict[str, object]:
        return asdict(self) | {
            "precision": round(self.precision, 4),
            "recall": round(self.recall, 4),
            "f1": round(self.f1, 4),
        }


def load_labels(path: Path) -> list[Label]:
    """The `events` of a labels file (see deploy/media/make_streams.sh)."""
    document = json.loads(path.read_text())
    return [Label(e["event"], float(e["start"]), float(e["end"])) for e in document.get("events", [])]


def match(score: Score, labels: Sequence[Label], detections: Sequence[AlertSpan], tolerance: float) -> None:
    """Add one recording's matches to `score` (only labels/detections of `score.event`)."""
    mine = sorted((d for d in detections if d.event == score.event), key=lambda d: d.start)
    open_labels = [label for label in labels if label.event == score.event]
    for detection in mine:
        score.alerts.append(detection.start)
        hit = next(
            (
                label
                for label in open_labels
                if detection.start < label.end + tolerance and detection.end > label.start - tolerance
            ),
            None,
        )
        if hit is None:
            score.false_positives += 1
        else:
            open_labels.remove(hit)
            score.true_positives += 1
    score.false_negatives += len(open_labels)


def single_modality(event: EventConfig, modality: str) -> EventConfig | None:
    """The event with only the terms of one modality, threshold scaled by their weight share."""
    kept = [term for term in event.terms if term.parsed.modality == modality]
    if not kept:
        return None
    share = sum(t.weight for t in kept) / sum(t.weight for t in event.terms)
    return event.model_copy(update={"terms": kept, "threshold": round(event.threshold * share, 6)})


async def fuse_offline(config: FusewatchConfig, features: Sequence[WindowFeatures]) -> list[Alert]:
    """Fuse recorded window features with `config`'s events (no outputs, no stored state)."""
    outputs = ListOutputs()
    worker = FuseWorker(config, [outputs])
    for record in sorted(features, key=lambda f: (f.window_start, f.stream, f.modality)):
        await worker.handle(record)
    await worker.finish()
    return outputs.alerts


async def joined_windows(config: FusewatchConfig, features: Sequence[WindowFeatures]) -> list[JoinedWindow]:
    """The (site, window) joins that fusion sees for recorded features, in order."""
    joiner = WindowJoiner(config)
    closed = [
        w
        for record in sorted(features, key=lambda f: (f.window_start, f.stream, f.modality))
        for w in joiner.add(record)
    ]
    return closed + joiner.close_all()


def window_labels(windows: Sequence[JoinedWindow], labels: Sequence[Label], event: str, base_ms: int) -> list[bool]:
    """For training: does each window overlap a labelled interval of `event`?"""
    spans = [(base_ms + label.start * 1000, base_ms + label.end * 1000) for label in labels if label.event == event]
    return [any(w.window_start < end and w.window_end > start for start, end in spans) for w in windows]


@dataclass
class Recording:
    """One evaluated recording: its window features, labels and replay start (ms)."""

    name: str
    features: list[WindowFeatures]
    labels: list[Label]
    base_ms: int


async def evaluate(config: FusewatchConfig, recordings: Sequence[Recording], tolerance: float = 2.0) -> list[Score]:
    """Scores of every weighted event, fused and per single modality, over all recordings."""
    scores: list[Score] = []
    for event in config.events:
        variants: list[tuple[str, EventConfig]] = [("fused" if event.fusion == "weighted" else "learned", event)]
        if event.fusion == "weighted":
            variants += [(m, v) for m in MODALITIES if (v := single_modality(event, m)) is not None]
        for variant, rule in variants:
            score = Score(event.name, variant)
            variant_config = config.model_copy(update={"events": [rule]})
            for recording in recordings:
                alerts = await fuse_offline(variant_config, recording.features)
                detections = [
                    AlertSpan(
                        a.event, (a.window_start - recording.base_ms) / 1000, (a.window_end - recording.base_ms) / 1000
                    )
                    for a in alerts
                ]
                match(score, recording.labels, detections, tolerance)
            scores.append(score)
    return scores
