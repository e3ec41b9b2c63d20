"""The ingest role and `fusewatch ingest` run one function: a file source loops when asked and lands on windows."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from config.schema import FusewatchConfig, SourceConfig, WindowsConfig
from daemon.runtime.app import ingest_source
from streams.models import StreamInit
from streams.sources import SourceError
from streams.testing import ListSink


def _config(path: Path, loop: bool) -> FusewatchConfig:
    return FusewatchConfig(
        sources=[SourceConfig(id="lobby", url=str(path), loop=loop)], windows=WindowsConfig(size=3.0, grace=30.0)
    )


async def test_a_looping_file_runs_until_stopped_on_the_configured_window_grid(media_dir: Path) -> None:
    config = _config(media_dir / "lobby.ts", loop=True)
    sink, stop = ListSink(), asyncio.Event()
    running = asyncio.create_task(ingest_source(config, config.sources[0], sink, stop))
    while not any(not isinstance(m, StreamInit) for m in sink.messages):
        assert not running.done(), running
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)
    stop.set()
    state = await asyncio.wait_for(running, 5)
    assert state.connects == 1 and sink.messages
    first = sink.messages[0]
    assert isinstance(first, StreamInit) and first.wall_ns % 3_000_000_000 == 0, "aligned to windows.size, not 2 s"


async def test_a_missing_file_is_a_source_error_naming_it(tmp_path: Path) -> None:
    config = _config(tmp_path / "gone.ts", loop=False)
    with pytest.raises(SourceError, match=r"no such media file: .*gone\.ts"):
        await ingest_source(config, config.sources[0], ListSink(), asyncio.Event())
