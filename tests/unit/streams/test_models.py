"""The JSON wire models: fields added to v1 keep records written before them valid."""

from __future__ import annotations

from streams.models import Alert, TermContribution
from tests.helpers import make_alert


def test_an_alert_written_before_per_term_streams_still_reads() -> None:
    record = make_alert().model_dump(mode="json")
    for term in record["terms"]:
        del term["stream"]
    old = Alert.model_validate(record)
    assert [t.stream for t in old.terms] == [None, None]
    assert Alert.model_validate_json(make_alert().model_dump_json()).terms[0].stream == "lobby"


def test_the_published_alert_schema_documents_the_term_stream() -> None:
    stream = TermContribution.model_json_schema()["properties"]["stream"]  # in `fusewatch schema alert`
    assert stream["default"] is None and "gave `value`" in stream["description"]
    assert "stream" not in TermContribution.model_json_schema().get("required", [])
