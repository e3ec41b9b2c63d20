"""Learned feature-level fusion (docs/design.md §7): a logistic model on concatenated window features.

Each joined (site, window) becomes one vector: per detected class its count and new tracks,
per zone its occupancy and entries, loudness and voice activity, the number of words and
one indicator per configured keyword. The vector is standardised with the training mean
and deviation, and `fusewatch fusion train` fits a class-balanced logistic regression
(scikit-learn) on windows of labelled recordings. The model is stored as JSON (feature
names, mean, scale, coefficients): readable, diffable, and nothing is unpickled.

An event with `fusion: learned` fires when the model's probability reaches `threshold`
(for `for` windows, then `cooldown`, exactly like weighted events). Each feature's term in
the alert is its log-odds contribution, with g = its logistic share (0.5 is neutral), and
names the stream that gave the feature's value, as weighted terms do.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from config.schema import EventConfig, FusewatchConfig
from daemon.fuse.rules import EventRule, JoinedWindow, strongest
from detectors.keywords import KeywordSpotter
from streams.models import TermContribution

SILENT_DBFS = -120.0


@dataclass(frozen=True)
class FeatureSpec:
    """Which numbers make up a window's vector, derived from the config."""

    classes: tuple[str, ...]
    zones: tuple[str, ...]
    keywords: tuple[str, ...]

    @classmethod
    def from_config(cls, config: FusewatchConfig) -> FeatureSpec:
        zones = sorted({zone.name for source in config.sources for zone in source.video.zones})
        transcriber = config.detectors.transcriber
        return cls(
            tuple(config.detectors.objects.classes), tuple(zones), tuple(transcriber.keywords) if transcriber else ()
        )

    @property
    def names(self) -> list[str]:
        names = [f"video.{c}.{stat}" for c in self.classes for stat in ("count", "new_tracks")]
        names += [f"video.zone.{z}.{stat}" for z in self.zones for stat in ("occupancy", "entered")]
        names += ["audio.loudness_dbfs", "audio.peak_dbfs", "audio.speech_ratio", "speech.words"]
        return names + [f"speech.keyword.{k}" for k in self.keywords]

    def vector(self, window: JoinedWindow) -> npt.NDArray[np.float64]:
        """The window's raw (unstandardised) features, in `names` order; max over streams."""
        return np.asarray([value for value, _ in self.readings(window)], dtype=np.float64)

    def readings(self, window: JoinedWindow) -> list[tuple[float, str | None]]:
        """Each feature's raw value, in `names` order, with the stream that gave it (the max over
        streams, the first by name on a tie, as for weighted terms); no stream where none measured
        it (the value is then the feature's default) or, for a keyword, where only the streams'
        texts joined contain it."""
        out: list[tuple[float, str | None]] = []
        videos = sorted(((f.stream, f.video) for f in window.features if f.video is not None), key=_stream)
        for label in self.classes:
            out.append(_max(((s, v.classes[label].max_count if label in v.classes else 0) for s, v in videos), 0))
            out.append(_max(((s, len(v.classes[label].new_tracks) if label in v.classes else 0) for s, v in videos), 0))
        for zone in self.zones:
            found = [(s, v.zones[zone]) for s, v in videos if zone in v.zones]
            out.append(_max(((s, z.occupancy) for s, z in found), 0.0))
            out.append(_max(((s, z.entered) for s, z in found), 0))
        audio = sorted(((f.stream, f.audio) for f in window.features if f.audio is not None), key=_stream)
        out.append(_max(((s, a.loudness_dbfs) for s, a in audio), SILENT_DBFS))
        out.append(_max(((s, a.peak_dbfs) for s, a in audio), SILENT_DBFS))
        out.append(_max(((s, a.speech_ratio) for s, a in audio), 0.0))
        speech = [(f.stream, f.speech) for f in window.features if f.speech is not None]
        out.append(_max(((s, len(sp.words)) for s, sp in sorted(speech, key=_stream)), 0))
        text = " ".join(sp.text for _, sp in speech)
        spotter = KeywordSpotter(self.keywords) if self.keywords else None
        heard = set(spotter.find(text)) if spotter else set()
        by_stream = sorted(((s, set(spotter.find(sp.text))) for s, sp in speech), key=_stream) if spotter else []
        for keyword in self.keywords:
            if keyword in heard:
                out.append((1.0, next((s for s, found in by_stream if keyword in found), None)))
            else:
                out.append((0.0, by_stream[0][0] if by_stream else None))
        return out


def _stream(pair: tuple[str, object]) -> str:
    return pair[0]


def _max(readings: Iterable[tuple[str, float]], default: float) -> tuple[float, str | None]:
    """The largest reading as (value, stream), the first stream by name on a tie; (default, None) without any."""
    best = strongest(readings)
    return (float(best.value), best.stream) if best is not None else (float(default), None)


@dataclass(frozen=True)
class LearnedModel:
    """A fitted logistic model over standardised window features."""

    names: tuple[str, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[float, ...]
    intercept: float
    spec: FeatureSpec

    def contributions(self, raw: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        standardised = (raw - np.asarray(self.mean)) / np.asarray(self.scale)
        contributions: npt.NDArray[np.float64] = np.asarray(self.coef, dtype=np.float64) * standardised
        return contributions

    def probability(self, raw: npt.NDArray[np.float64]) -> float:
        logit = float(self.contributions(raw).sum()) + self.intercept
        return 1.0 / (1.0 + math.exp(-max(min(logit, 50.0), -50.0)))

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            json.dumps(
                {
                    "kind": "fusewatch-logistic-v1",
                    "names": self.names,
                    "mean": self.mean,
                    "scale": self.scale,
                    "coef": self.coef,
                    "intercept": self.intercept,
                    "spec": {"classes": self.spec.classes, "zones": self.spec.zones, "keywords": self.spec.keywords},
                },
                indent=2,
            )
        )

    @classmethod
    def load(cls, path: Path) -> LearnedModel:
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot read fusion model {path}: {exc}") from exc
        if raw.get("kind") != "fusewatch-logistic-v1":
            raise ValueError(f"{path} is not a fusewatch fusion model")
        spec = FeatureSpec(tuple(raw["spec"]["classes"]), tuple(raw["spec"]["zones"]), tuple(raw["spec"]["keywords"]))
        model = cls(
            tuple(raw["names"]),
            tuple(raw["mean"]),
            tuple(raw["scale"]),
            tuple(raw["coef"]),
            float(raw["intercept"]),
            spec,
        )
        if list(model.names) != spec.names:
            raise ValueError(f"{path}: feature names do not match its feature spec")
        return model


def train(spec: FeatureSpec, windows: Sequence[JoinedWindow], labels: Sequence[bool], c: float = 1.0) -> LearnedModel:
    """Fit a class-balanced, L2-regularised logistic regression on labelled windows."""
    from sklearn.linear_model import LogisticRegression

    if len(set(labels)) < 2:
        raise ValueError("training needs windows with and without the event")
    features = np.stack([spec.vector(window) for window in windows])
    mean = features.mean(axis=0)
    scale = features.std(axis=0)
    scale[scale == 0] = 1.0
    fitted = LogisticRegression(C=c, class_weight="balanced", max_iter=1000)
    fitted.fit((features - mean) / scale, np.asarray(labels, dtype=int))
    return LearnedModel(
        tuple(spec.names),
        tuple(mean.tolist()),
        tuple(scale.tolist()),
        tuple(fitted.coef_[0].tolist()),
        float(fitted.intercept_[0]),
        spec,
    )


class LearnedRule(EventRule):
    """An event scored by a learned model instead of weighted terms; same firing logic."""

    def __init__(self, event: EventConfig, window_ms: int, model: LearnedModel | None = None) -> None:
        if event.fusion != "learned" or event.model is None:
            raise ValueError(f"event {event.name} is not a learned event")
        self.event = event
        self._window_ms = window_ms
        self.model = model or LearnedModel.load(Path(event.model))

    def score(self, window: JoinedWindow) -> tuple[float, tuple[TermContribution, ...]]:
        readings = self.model.spec.readings(window)
        raw = np.asarray([value for value, _ in readings], dtype=np.float64)
        parts = self.model.contributions(raw)
        terms = tuple(
            TermContribution(
                signal=name,
                weight=round(coef, 4),
                value=value,
                g=round(1.0 / (1.0 + math.exp(-max(min(part, 50.0), -50.0))), 4),
                contribution=round(float(part), 4),
                stream=stream,
            )
            for name, coef, (value, stream), part in zip(
                self.model.names, self.model.coef, readings, parts, strict=True
            )
        )
        return round(self.model.probability(raw), 4), terms
