"""Live ingest from a real RTSP server (gst-rtsp-server) that drops and comes back."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from config.schema import Reconnect
from daemon.services import free_port
from streams.models import Packet, StreamInit
from streams.sources import IngestState, ingest_live
from streams.testing import ListSink

pytestmark = pytest.mark.integration
SERVER = Path(__file__).resolve().parents[1] / "support" / "rtsp_server.py"


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
        self.proc = subprocess.Popen(["/usr/bin/python3", str(SERVER), str(self.port), "cam", str(self.media)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
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
    task = asyncio.create_task(ingest_live(camera.url, "gate", "hq", sink, Reconnect(initial=0.2, maximum=1.0),
                                           state=state, stop=stop))
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
    reconnected = sink.messages[state.connect_seqs[1]:]
    assert isinstance(reconnected[0], StreamInit), "decoder set-up is sent first after a reconnect"
    assert any(isinstance(m, Packet) and m.keyframe for m in reconnected)
    init = sink.inits()[-1]
    assert {t.kind for t in init.tracks} == {"video", "audio"} and init.track("video").codec == "h264"  # type: ignore[union-attr]
    video = sink.packets("video")
    assert sum(p.keyframe for p in video) >= 2
    walls = [p.wall_ns for p in sink.packets("video")]
    assert walls[-1] > walls[0]
