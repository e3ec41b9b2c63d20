"""`fusewatch alerts` lines: the terms that made an alert fire, each with the stream that gave it."""

from __future__ import annotations

from daemon.console.feed import alert_line, top_terms
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
