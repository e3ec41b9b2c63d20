"""Live ingest from a real RTSP server (gst-rtsp-server) that drops and comes back."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from config.schema import FusewatchConfig, Reconnect, SourceConfig
from daemon.runtime.services import free_port
from streams.kafka import assign_all, make_consumer
from streams.models import Packet, StreamInit
from streams.sources import IngestState, ingest_live
from streams.testing import ListSink
from tests.helpers import write_config

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
SERVER = ROOT / "tests" / "support" / "rtsp_server.py"


class RtspCamera:
    """The test RTSP server as a child process that can be killed and restarted on one port."""

    def __init__(self, media: Path) -> None:
        self.media = media
        self.port = free_port()
        self.proc: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}/cam"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["/usr/bin/python3", str(SERVER), str(self.port), "cam", str(self.media)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("READY"):
            error = self.proc.stderr.read() if self.proc.stderr else ""
            raise RuntimeError(f"RTSP test server did not start: {line!r} {error}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        self.proc = None


@pytest.fixture
def camera(media_dir: Path) -> Iterator[RtspCamera]:
    cam = RtspCamera(media_dir / "street.ts")
    cam.start()
    try:
        yield cam
    finally:
        cam.kill()


async def _until(predicate: Callable[[], bool], within: float) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {within}s")
        await asyncio.sleep(0.1)


async def test_ingest_reconnects_with_backoff_when_the_camera_drops(camera: RtspCamera) -> None:
    sink = ListSink()
    state = IngestState()
    stop = asyncio.Event()
    task = asyncio.create_task(
        ingest_live(camera.url, "gate", "hq", sink, Reconnect(initial=0.2, maximum=1.0), state=state, stop=stop)
    )
    try:
        await _until(lambda: len(sink.packets("video")) >= 50, 30)
        assert state.connects == 1
        camera.kill()
        await _until(lambda: state.failures >= 2, 30)  # refused while down, retried with backoff
        assert state.connects == 1
        camera.start()
        await _until(lambda: state.connects == 2 and len(sink.packets("video")) >= 100, 30)
    finally:
        stop.set()
        camera.kill()
        await asyncio.wait_for(task, 30)
    assert [m.seq for m in sink.messages] == list(range(len(sink.messages))), "seq continues across reconnects"
    reconnected = sink.messages[state.connect_seqs[1] :]
    assert isinstance(reconnected[0], StreamInit), "decoder set-up is sent first after a reconnect"
    assert any(isinstance(m, Packet) and m.keyframe for m in reconnected)
    init = sink.inits()[-1]
    assert {t.kind for t in init.tracks} == {"video", "audio"} and init.track("video").codec == "h264"  # type: ignore[union-attr]
    video = sink.packets("video")
    assert sum(p.keyframe for p in video) >= 2
    walls = [p.wall_ns for p in sink.packets("video")]
    assert walls[-1] > walls[0]


async def test_fusewatch_ingest_flushes_everything_it_read_on_sigterm(
    camera: RtspCamera, fw_config: FusewatchConfig, tmp_path: Path
) -> None:
    """The compose service's command: SIGTERM stops reading, publishes what it read, exits 0."""
    config = fw_config.model_copy(update={"sources": [SourceConfig(id="gate", url=camera.url)]})
    path = write_config(config, tmp_path / "site.yaml")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "daemon.cli",
        "ingest",
        "--source",
        "gate",
        "--config",
        str(path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    consumer = make_consumer(config.kafka, group=None)
    await consumer.start()
    try:
        await assign_all(consumer, config.kafka.topics.media)
        seen: list[int] = []

        async def read(seconds: float) -> None:
            batches = await consumer.getmany(timeout_ms=int(seconds * 1000))
            seen.extend(r.offset for batch in batches.values() for r in batch)

        while len(seen) < 100:
            assert proc.returncode is None, "ingest ended before it was stopped"
            await read(1.0)
        proc.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(proc.communicate(), 20)
        output = (out + err).decode()
        assert proc.returncode == 0, output
        match = re.search(r"ingest gate: (\d+) messages", output)
        assert match, output
        for _ in range(10):
            await read(0.5)
        assert len(seen) == int(match.group(1)), "every message it read is in the topic"
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await consumer.stop()
