"""A feature sink in memory: for analysing without Kafka (benchmarks, tests)."""

from __future__ import annotations

from streams.models import WindowFeatures


class ListFeatureSink:
    """A `FeatureSink` that keeps every window it is given."""

    def __init__(self) -> None:
        self.features: list[WindowFeatures] = []
        self.flushes = 0

    async def emit(self, features: WindowFeatures) -> None:
        self.features.append(features)

    async def flush(self) -> None:
        self.flushes += 1

    def of(self, modality: str, stream: str | None = None) -> list[WindowFeatures]:
        return [f for f in self.features if f.modality == modality and stream in (None, f.stream)]
