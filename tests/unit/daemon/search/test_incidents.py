"""Near-duplicate alerts grouped into incidents: event, site, similar moment, close in time."""

from __future__ import annotations

import numpy as np

from daemon.search.incidents import group_alerts
from tests.helpers import make_alert

T0 = 1_700_000_000_000
SAME = np.array([1.0, 0.0, 0.0], dtype=np.float32)
ALIKE = np.array([0.95, np.sqrt(1 - 0.95**2), 0.0], dtype=np.float32)
OTHER = np.array([0.0, 1.0, 0.0], dtype=np.float32)


def test_alike_alerts_of_one_event_and_site_are_one_incident_headed_by_the_newest() -> None:
    alerts = [make_alert(window_start=T0 + n * 60_000) for n in range(3)]
    incidents = group_alerts(alerts, [SAME, ALIKE, SAME], similarity=0.9, gap_ms=600_000)
    assert [[a.window_start for a in i.alerts] for i in incidents] == [[T0 + 120_000, T0 + 60_000, T0]]
    assert incidents[0].id == alerts[2].id


def test_different_content_event_site_or_a_long_gap_start_another_incident() -> None:
    base = make_alert(window_start=T0 + 900_000)
    others = [
        make_alert(window_start=T0 + 840_000),  # different content
        make_alert("intrusion", window_start=T0 + 780_000),  # different event
        make_alert(site="depot", window_start=T0 + 720_000),  # different site
        make_alert(window_start=T0),  # 15 min before: beyond the gap
    ]
    vectors = [SAME, OTHER, SAME, SAME, SAME]
    incidents = group_alerts([base, *others], vectors, similarity=0.9, gap_ms=600_000)
    assert len(incidents) == 5


def test_an_alert_without_an_indexed_moment_stands_alone() -> None:
    alerts = [make_alert(window_start=T0), make_alert(window_start=T0 + 2000)]
    incidents = group_alerts(alerts, [None, SAME], similarity=0.9, gap_ms=600_000)
    assert [len(i.alerts) for i in incidents] == [1, 1]


def test_the_gap_is_counted_from_the_oldest_alert_so_far() -> None:
    alerts = [make_alert(window_start=T0 + n * 400_000) for n in range(3)]  # a chain, 400 s apart
    incidents = group_alerts(alerts, [SAME] * 3, similarity=0.9, gap_ms=600_000)
    assert [len(i.alerts) for i in incidents] == [3]
