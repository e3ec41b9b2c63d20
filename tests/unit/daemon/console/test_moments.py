"""The timeline's moments: span requests checked, one cut at a time, reuse by name, nearest snapshot."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiokafka.errors import KafkaConnectionError

from config.schema import ClipsConfig, ClipStoreConfig
from daemon.console.moments import (
    MAX_SPAN_MS,
    MomentError,
    SpanClips,
    SpanRequest,
    nearest_snapshot,
    parse_span,
    snapshot_sites,
    span_clip_name,
)
from streams.clip_store import DirectoryClipStore
from streams.media_span import BeyondRetention, MediaSpan, SpanError, SpanSource
from streams.models import Clip

NOW_MS = 1_800_000_000_000


class _Reader:
    """A span source that waits for `release`, then raises `error`."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.release = asyncio.Event()
        self.started = asyncio.Event()
        self.reads = 0

    async def read(self, stream: str, from_ms: int, to_ms: int, deadline: float) -> MediaSpan:
        self.reads += 1
        self.started.set()
        await self.release.wait()
        raise self.error


def _clips(tmp_path: Path, reader: SpanSource, opened: list[int] | None = None) -> SpanClips:
    @contextlib.asynccontextmanager
    async def open_reader() -> AsyncIterator[SpanSource]:
        if opened is not None:
            opened.append(1)
        yield reader

    store = DirectoryClipStore(ClipStoreConfig(path=str(tmp_path / "clips")))
    return SpanClips(ClipsConfig(), store, open_reader, wallclock=lambda: NOW_MS / 1000)


def _span(from_ms: int = NOW_MS - 60_000, to_ms: int = NOW_MS - 45_000) -> SpanRequest:
    return SpanRequest(stream="lobby", from_ms=from_ms, to_ms=to_ms)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "stream: Field required"),
        (b"[1]", "body"),
        (b'{"stream": "../x", "from_ms": 1, "to_ms": 2}', "stream: String should match pattern"),
        (b'{"stream": "lobby", "from_ms": "1", "to_ms": 2}', "from_ms: Input should be a valid integer"),
        (b'{"stream": "lobby", "from_ms": true, "to_ms": 2}', "from_ms: Input should be a valid integer"),
        (b'{"stream": "lobby", "from_ms": 1, "to_ms": 2, "x": 1}', "x: Extra inputs are not permitted"),
        (b'{"stream": "lobby", "from_ms": 5, "to_ms": 5}', "to_ms (5) must be after from_ms (5)"),
        (b'{"stream": "lobby", "from_ms": 0, "to_ms": 120001}', "a span is at most 120 s, got 120.001 s"),
        (f'{{"stream": "lobby", "from_ms": {NOW_MS + 1}, "to_ms": {NOW_MS + 9}}}'.encode(), "starts in the future"),
    ],
)
def test_a_span_request_is_refused_with_what_is_wrong(body: bytes, reason: str) -> None:
    with pytest.raises(MomentError) as refused:
        parse_span(body, NOW_MS)
    assert refused.value.status == 400
    assert reason in refused.value.message


def test_a_span_of_two_minutes_is_taken_and_named_by_its_bounds() -> None:
    span = parse_span(f'{{"stream": "lobby", "from_ms": 0, "to_ms": {MAX_SPAN_MS}}}'.encode(), NOW_MS)
    assert span_clip_name(span) == f"span-lobby-0-{MAX_SPAN_MS}"


async def test_one_cut_at_a_time_a_second_request_is_told_to_retry(tmp_path: Path) -> None:
    reader = _Reader(SpanError("no packets of stream lobby between a and b"))
    clips = _clips(tmp_path, reader)
    first = asyncio.create_task(clips.cut(_span()))
    await asyncio.wait_for(reader.started.wait(), 5)
    with pytest.raises(MomentError) as busy:
        await clips.cut(_span(NOW_MS - 30_000, NOW_MS - 20_000))
    assert busy.value.status == 429 and busy.value.retry_after == 2
    assert reader.reads == 1, "the second request cut nothing"
    reader.release.set()
    with pytest.raises(MomentError) as failed:
        await first
    assert failed.value.status == 404 and "no packets of stream lobby" in failed.value.message
    assert not [p for p in (tmp_path / "clips").iterdir() if p.name.startswith(".staging")], "no staging file left"
    with pytest.raises(MomentError):  # free again: this one is cut (and fails the same way)
        await clips.cut(_span(NOW_MS - 30_000, NOW_MS - 20_000))
    assert reader.reads == 2


@pytest.mark.parametrize(
    ("error", "status", "words"),
    [
        (BeyondRetention("fw.media[0] no longer holds lobby (retention)"), 404, "retention"),
        (KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 1)]"), 503, "Kafka is not reachable"),
    ],
)
async def test_a_cut_that_fails_says_why_with_its_status(
    tmp_path: Path, error: Exception, status: int, words: str
) -> None:
    reader = _Reader(error)
    reader.release.set()
    with pytest.raises(MomentError) as failed:
        await _clips(tmp_path, reader).cut(_span())
    assert failed.value.status == status and words in failed.value.message


async def test_a_span_already_in_the_store_is_reused_without_reading_kafka(tmp_path: Path) -> None:
    opened: list[int] = []
    clips = _clips(tmp_path, _Reader(SpanError("unused")), opened)
    span = _span()
    name = span_clip_name(span)
    clip = Clip(
        id=name,
        site="test",
        stream="lobby",
        requested_from_ms=span.from_ms,
        requested_to_ms=span.to_ms,
        start_ms=span.from_ms - 800,
        end_ms=span.to_ms,
        starts_late=False,
        complete=True,
        packets=10,
        bytes=4,
        cut_ms=1.0,
        created_ms=NOW_MS,
    )
    staging = clips.store.staging_file()
    staging.write_bytes(b"mp4!")
    clips.store.put(clip, staging)
    cut = await clips.cut(span)
    assert cut.reused and cut.clip == clip
    assert opened == [], "no reader was opened"


def _shots(root: Path, site: str, stream: str, starts: list[int]) -> None:
    folder = root / site / stream
    folder.mkdir(parents=True, exist_ok=True)
    for start in starts:
        (folder / f"{start}.jpg").write_bytes(b"\xff\xd8")


def test_the_nearest_snapshot_within_the_bounds_is_found(tmp_path: Path) -> None:
    base = 1_800_000_000_000  # a multiple of the 2 s window
    _shots(tmp_path, "test", "lobby", [base + 4_000, base + 10_000])
    _shots(tmp_path, "test", "street", [base + 8_000])
    assert snapshot_sites(tmp_path, None) == ["test"] and snapshot_sites(tmp_path, "hq") == ["hq"]
    assert nearest_snapshot(tmp_path, None, "lobby", base + 8_000, base, base + 59_999, 2000) == (
        "test",
        base + 10_000,
    )
    assert nearest_snapshot(tmp_path, None, "lobby", base + 6_500, base, base + 59_999, 2000) == ("test", base + 4_000)
    assert nearest_snapshot(tmp_path, None, "lobby", base + 8_000, base, base + 9_999, 2000) == ("test", base + 4_000)
    assert nearest_snapshot(tmp_path, None, "lobby", base + 8_000, base + 5_000, base + 9_999, 2000) is None
    assert nearest_snapshot(tmp_path, None, "lobby", base - 50_000, base, base + 59_999, 2000) == (
        "test",
        base + 4_000,
    )
    assert nearest_snapshot(tmp_path, "other", "lobby", base + 8_000, base, base + 59_999, 2000) is None
    assert nearest_snapshot(tmp_path, None, "hall", base + 8_000, base, base + 59_999, 2000) is None
    assert snapshot_sites(tmp_path / "missing", None) == []
