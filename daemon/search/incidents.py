"""Near-duplicate alerts as one incident: same event and site, similar moments, close in time.

A rule that fires every cooldown while the same thing goes on (someone keeps shouting, a
recording loops) fills the list with rows that say the same. Alerts are grouped, newest
first, into the incident of a newer alert when they share its event and site, their
moments are at least `similarity` alike (the cosine of their embeddings, `daemon.search`),
and they fired within `gap_ms` of the incident's oldest alert so far. An alert whose moment
is not indexed (yet) stands alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from daemon.search.index import Vectors
from streams.models import Alert


@dataclass
class Incident:
    """Alerts taken for one incident: `alerts[0]` is the newest, the one an operator sees."""

    alerts: list[Alert] = field(default_factory=list)
    vectors: list[Vectors] = field(default_factory=list)

    @property
    def id(self) -> str:
        return self.alerts[0].id


def group_alerts(
    alerts: Sequence[Alert], vectors: Sequence[Vectors | None], similarity: float, gap_ms: int
) -> list[Incident]:
    """Incidents of `alerts` (any order), newest first; `vectors[i]` embeds the moment of `alerts[i]`."""
    order = sorted(range(len(alerts)), key=lambda i: (-alerts[i].window_start, alerts[i].id))
    incidents: list[Incident] = []
    for i in order:
        alert, vector = alerts[i], vectors[i]
        home = None
        if vector is not None:
            home = next(
                (incident for incident in incidents if _joins(incident, alert, vector, similarity, gap_ms)), None
            )
        if home is None:
            home = Incident()
            incidents.append(home)
        home.alerts.append(alert)
        if vector is not None:
            home.vectors.append(vector)
    return incidents


def _joins(incident: Incident, alert: Alert, vector: Vectors, similarity: float, gap_ms: int) -> bool:
    newest = incident.alerts[0]
    if (newest.event, newest.site) != (alert.event, alert.site) or not incident.vectors:
        return False
    if incident.alerts[-1].window_start - alert.window_start > gap_ms:
        return False
    return float(np.dot(incident.vectors[0], vector)) >= similarity
