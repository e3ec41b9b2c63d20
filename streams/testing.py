"""Test fakes that ship with the library: a sink that keeps messages and a manual clock.

They follow the same protocols as the real parts (`MessageSink`, `Clock`), so tests and
users' own rule tests can run the pipeline pieces without Kafka and without sleeping.
"""

from __future__ import annotations

import asyncio
from typing import Any

from streams.models import Alert, MediaMessage, Packet, StreamInit, Summary, WindowFeatures


class ListSink:
    """A `MessageSink` that keeps every published message in order."""

    def __init__(self) -> None:
        self.messages: list[MediaMessage] = []

    async def publish(self, message: MediaMessage) -> Any:
        self.messages.append(message)
        return None

    def packets(self, kind: str | None = None) -> list[Packet]:
        return [m for m in self.messages if isinstance(m, Packet) and kind in (None, m.kind)]

    def inits(self) -> list[StreamInit]:
        return [m for m in self.messages if isinstance(m, StreamInit)]


class ManualClock:
    """A `Clock` that only moves when told; `sleep` advances it instead of waiting."""

    def __init__(self, wall_ns: int = 1_700_000_000 * 1_000_000_000, monotonic: float = 1000.0) -> None:
        self._wall_ns = wall_ns
        self._monotonic = monotonic
        self.slept: list[float] = []

    def wall_ns(self) -> int:
        return self._wall_ns

    def monotonic(self) -> float:
        return self._monotonic

    def advance(self, seconds: float) -> None:
        self._monotonic += seconds
        self._wall_ns += round(seconds * 1_000_000_000)

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.advance(max(seconds, 0.0))
        await asyncio.sleep(0)


class ListFeatureSink:
    """A feature sink (see `daemon.analyze.FeatureSink`) that keeps every window it is given."""

    def __init__(self) -> None:
        self.features: list[WindowFeatures] = []
        self.flushes = 0

    async def emit(self, features: WindowFeatures) -> None:
        self.features.append(features)

    async def flush(self) -> None:
        self.flushes += 1

    def of(self, modality: str, stream: str | None = None) -> list[WindowFeatures]:
        return [f for f in self.features if f.modality == modality and stream in (None, f.stream)]


class ListOutputs:
    """Alert and summary outputs (see `daemon.fuse.Outputs`) that keep what they are given."""

    def __init__(self) -> None:
        self.alerts: list[Alert] = []
        self.summaries: list[Summary] = []

    async def publish_alert(self, alert: Alert) -> None:
        self.alerts.append(alert)

    async def publish_summary(self, summary: Summary) -> None:
        self.summaries.append(summary)


class MemoryRuleStore:
    """A rule-state store (see `daemon.fuse.RuleStore`) in a dict, as Redis keeps it."""

    def __init__(self) -> None:
        self.data: dict[str, dict[str, str]] = {}

    async def load_rule_states(self, site: str) -> dict[str, str]:
        return dict(self.data.get(site, {}))

    async def save_rule_state(self, site: str, event: str, state_json: str) -> None:
        self.data.setdefault(site, {})[event] = state_json
