"""Fuse outputs and rule state in memory: offline evaluation runs fusion without Redis or Kafka, and so do tests."""

from __future__ import annotations

from streams.models import Alert, PeriodSummary, Summary


class ListOutputs:
    """`Outputs` that keep the alerts and summaries they are given."""

    def __init__(self) -> None:
        self.alerts: list[Alert] = []
        self.summaries: list[Summary] = []
        self.period_summaries: list[PeriodSummary] = []

    async def publish_alert(self, alert: Alert) -> None:
        self.alerts.append(alert)

    async def publish_summary(self, summary: Summary) -> None:
        self.summaries.append(summary)

    async def publish_period_summary(self, summary: PeriodSummary) -> None:
        self.period_summaries.append(summary)


class MemoryRuleStore:
    """A `RuleStore` in a dict, as Redis keeps it."""

    def __init__(self) -> None:
        self.data: dict[str, dict[str, str]] = {}

    async def load_rule_states(self, site: str) -> dict[str, str]:
        return dict(self.data.get(site, {}))

    async def save_rule_state(self, site: str, event: str, state_json: str) -> None:
        self.data.setdefault(site, {})[event] = state_json
