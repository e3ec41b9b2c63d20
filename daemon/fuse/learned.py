"""Learned feature-level fusion (docs/design.md §7): a logistic model on concatenated window features.

Each joined (site, window) becomes one vector: per detected class its count and new tracks,
per zone its occupancy and entries, loudness and voice activity, the number of words and
one indicator per configured keyword. The vector is standardised with the training mean
and deviation, and `fusewatch fusion train` fits a class-balanced logistic regression
(scikit-learn) on windows of labelled recordings. The model is stored as JSON (feature
names, mean, scale, coefficients): readable, diffable, and nothing is unpickled.

An event with `fusion: learned` fires when the model's probability reaches `threshold`
(for `for` windows, then `cooldown`, exactly like weighted events). Each feature's term in
the alert is its log-odds contribution, with g = its logistic share (0.5 is neutral).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from config.schema import EventConfig, FusewatchConfig
from daemon.fuse.rules import EventRule, JoinedWindow
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
        values: list[float] = []
        videos = window.videos()
        for label in self.classes:
            stats = [v.classes[label] for v in videos if label in v.classes]
            values.append(max((s.max_count for s in stats), default=0))
            values.append(max((len(s.new_tracks) for s in stats), default=0))
        for zone in self.zones:
            found = [v.zones[zone] for v in videos if zone in v.zones]
            values.append(max((z.occupancy for z in found), default=0.0))
            values.append(max((z.entered for z in found), default=0))
        audio = window.audios()
        values.append(max((a.loudness_dbfs for a in audio), default=SILENT_DBFS))
        values.append(max((a.peak_dbfs for a in audio), default=SILENT_DBFS))
        values.append(max((a.speech_ratio for a in audio), default=0.0))
        speech = window.speeches()
        values.append(max((len(s.words) for s in speech), default=0))
        text = " ".join(s.text for s in speech)
        heard = set(KeywordSpotter(self.keywords).find(text)) if self.keywords else set()
        values += [1.0 if keyword in heard else 0.0 for keyword in self.keywords]
        return np.asarray(values, dtype=np.float64)


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
        raw = self.model.spec.vector(window)
        parts = self.model.contributions(raw)
        terms = tuple(
            TermContribution(
                signal=name,
                weight=round(coef, 4),
                value=float(value),
                g=round(1.0 / (1.0 + math.exp(-max(min(part, 50.0), -50.0))), 4),
                contribution=round(float(part), 4),
            )
            for name, coef, value, part in zip(self.model.names, self.model.coef, raw, parts, strict=True)
        )
        return round(self.model.probability(raw), 4), terms

    def _contributing(self, window: JoinedWindow) -> set[str]:
        return set(window.streams)
