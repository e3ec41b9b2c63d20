"""Which init a span of a stream would be decoded again from."""

from __future__ import annotations

from daemon.analyze.context import StreamContext
from streams.clock import NS_PER_MS
from streams.kafka import SourcePosition


def _init(offset: int) -> SourcePosition:
    return SourcePosition("fw.media", 0, offset)


def test_a_span_is_redone_from_the_newest_init_stamped_at_or_before_its_start() -> None:
    context = StreamContext("cam", "hq", origin_wall_ns=0)
    assert context.redo_from(1_000) is None, "no init seen yet"
    for offset, wall_ms in ((10, 1_050), (10, 1_050), (20, 3_050), (30, 5_050)):  # items come out per init
        context.note_init(_init(offset), wall_ms * NS_PER_MS)
    assert context.redo_from(3_050) == _init(20)
    assert context.redo_from(5_000) == _init(20), "the init stamped 50 ms after the span began is too late"
    assert context.redo_from(9_000) == _init(30)
    assert context.redo_from(1_000) == _init(10), "before every init seen: the oldest, where this reader began"
