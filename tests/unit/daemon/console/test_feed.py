"""`fusewatch alerts` lines (the terms that made an alert fire, each with its stream) and `fusewatch status` roles."""

from __future__ import annotations

from rich.console import Console

from daemon.console.feed import ago, alert_line, status_tables, top_terms
from tests.helpers import make_alert


def test_an_alert_line_names_its_streams_and_each_terms_stream() -> None:
    alert = make_alert(transcript="help")
    assert top_terms(alert) == "speech.keywords@lobby +0.60, video.person.count@lobby +0.40"
    line = alert_line(alert)
    assert "[dim]lobby[/]" in line and "speech.keywords@lobby +0.60" in line


def test_a_term_without_a_stream_is_shown_as_before() -> None:
    alert = make_alert()
    old = alert.model_copy(update={"terms": [t.model_copy(update={"stream": None}) for t in alert.terms]})
    assert top_terms(old) == "speech.keywords +0.60, video.person.count +0.40"
    assert top_terms(old, count=1) == "speech.keywords +0.60"


def _roles_table(roles: list[dict[str, object]], now: int) -> str:
    console = Console(record=True, width=200)
    for table in status_tables({"streams": [], "roles": roles, "now_ms": now}):
        console.print(table)
    return console.export_text()


def test_status_shows_live_roles_as_they_are_and_a_departed_role_once_by_when_it_left() -> None:
    now = 1_700_000_000_000
    base = {"restarts": 0, "last_error": "", "consumer": "", "updated_ms": now, "departed_ms": None}
    roles = [
        base | {"role": "analyze", "process": "h:2", "state": "running", "live": True, "gone_ms": None, "stale": False},
        base
        | {"role": "fuse", "process": "h:1", "state": "stopped", "live": False, "gone_ms": now - 180_000}
        | {"departed_ms": now - 180_000, "stale": False},
        base
        | {"role": "web", "process": "h:1", "state": "running", "live": False, "gone_ms": now - 20_000, "stale": True},
    ]
    text = _roles_table(roles, now)
    assert "running" in text and "departed 3 min ago" in text and "stopped reporting 20 s ago" in text
    assert "stopped " not in text.replace("stopped reporting", ""), "a departed role's state is not repeated"


def test_ago_is_for_people() -> None:
    assert [ago(ms) for ms in (-5, 999, 59_999, 60_000, 7_199_999, 7_200_000, 3 * 86_400_000)] == [
        "0 s",
        "0 s",
        "59 s",
        "1 min",
        "1 h",
        "2 h",
        "3 d",
    ]
