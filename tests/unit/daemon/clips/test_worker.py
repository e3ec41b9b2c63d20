"""The clips worker on real packets held in memory: one clip per alert and stream, never cut twice."""

from __future__ import annotations

import asyncio
from pathlib import Path

import av
import pytest

from config.schema import ClipsConfig, ClipStoreConfig
from daemon.clips.worker import ClipsWorker, Stopped
from streams.clip_store import DirectoryClipStore
from streams.models import Clip, MediaMessage
from streams.sources import Demuxer, open_spec
from streams.testing import MemorySpanSource
from tests.helpers import make_alert

BASE_MS = 1_700_000_000_000


@pytest.fixture(scope="module")
def lobby(media_dir: Path) -> list[MediaMessage]:
    with Demuxer(open_spec(str(media_dir / "lobby.ts")), "lobby", "test", live=False) as demuxer:
        return [m for _, m in demuxer.messages(lambda t: BASE_MS * 1_000_000 + round(t * 1e9))]


def worker(tmp_path: Path, source: MemorySpanSource, published: list[Clip], **config: float) -> ClipsWorker:
    store = DirectoryClipStore(ClipStoreConfig(path=str(tmp_path / "clips")))
    settings = ClipsConfig(wait=0.0, **config)  # type: ignore[arg-type]

    async def publish(clip: Clip) -> None:
        published.append(clip)

    return ClipsWorker(settings, source, store, publish, wallclock=lambda: BASE_MS / 1000 + 3600)


async def test_an_alert_gets_its_clip_once_however_often_it_is_read(lobby: list[MediaMessage], tmp_path: Path) -> None:
    alert = make_alert(window_start=BASE_MS + 30_000)
    source, published = MemorySpanSource(lobby), list[Clip]()
    first = worker(tmp_path, source, published)
    assert await first.handle(alert) == []
    clip = published[0]
    assert (first.counters.written, clip.id, clip.alert_id) == (1, f"{alert.id}-lobby", alert.id)
    assert first.counters.bytes_written == clip.bytes > 100_000
    assert clip.start_ms <= BASE_MS + 25_000 and clip.end_ms >= BASE_MS + 36_000 and clip.complete
    path = first.store.local_path(clip.id)
    assert path is not None
    with av.open(str(path)) as container:
        assert {s.type for s in container.streams} == {"video", "audio"}
    written = path.stat().st_mtime_ns

    again = worker(tmp_path, source, published)  # a restarted worker reads the alert again
    assert await again.handle(alert) == []
    assert (again.counters.written, again.counters.existing, source.reads) == (0, 1, 1)
    assert published[1] == clip and path.stat().st_mtime_ns == written


async def test_a_clip_that_cannot_be_cut_is_counted_and_says_why(lobby: list[MediaMessage], tmp_path: Path) -> None:
    published: list[Clip] = []
    clips = worker(tmp_path, MemorySpanSource(lobby), published)
    gone = await clips.handle(make_alert(window_start=BASE_MS - 3_600_000))
    assert gone == ["clip of lobby: no longer holds lobby at " + str(BASE_MS - 3_600_000 + 2000 + 5000)]
    later = await clips.handle(make_alert(window_start=BASE_MS + 600_000))
    assert len(later) == 1 and "no packets of stream lobby between" in later[0]
    assert (clips.counters.beyond_retention, clips.counters.failed, published) == (1, 1, [])
    assert not list((tmp_path / "clips").glob("*.mp4"))  # no staging file left behind


async def test_it_waits_for_the_post_roll_and_a_stop_cuts_the_wait_short(
    lobby: list[MediaMessage], tmp_path: Path
) -> None:
    store = DirectoryClipStore(ClipStoreConfig(path=str(tmp_path / "clips")))
    stop = asyncio.Event()
    now = (BASE_MS + 30_000) / 1000  # the alert's window just began: its post-roll is 7 s ahead

    async def publish(clip: Clip) -> None:
        raise AssertionError("nothing is published")

    clips = ClipsWorker(ClipsConfig(wait=60.0), MemorySpanSource(lobby), store, publish, stop, wallclock=lambda: now)
    waiting = asyncio.create_task(clips.handle(make_alert(window_start=BASE_MS + 30_000)))
    await asyncio.sleep(0.3)
    assert not waiting.done()
    stop.set()
    with pytest.raises(Stopped):
        await asyncio.wait_for(waiting, 2)
