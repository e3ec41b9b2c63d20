"""`fusewatch demo`, the README's first command, end to end in a fresh working directory.

It starts the embedded broker and Redis, replays the sample recordings in a loop at real
speed through every role, prints the lobby's distress alert as it fires, serves the alert's
clip on the dashboard once the clips role has cut it, and a Ctrl-C
(SIGINT) stops everything: exit code 0 and no process left behind.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.helpers import free_port

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def _the_alert_page_offers_its_clip(web: int, alert_id: str) -> None:
    """The clips role cuts the alert's clip once its post-roll is on the topic; the dashboard serves it."""
    auth = {"Authorization": "Bearer demo-token"}
    clips: list[dict[str, object]] = []
    deadline = time.monotonic() + 60
    while not clips and time.monotonic() < deadline:
        time.sleep(1.0)
        clips = httpx.get(f"http://127.0.0.1:{web}/api/alerts/{alert_id}", headers=auth).json()["clips"]
    assert [c["stream"] for c in clips if c["stream"] == "lobby"], f"no clip of the lobby within 60 s: {clips}"
    lobby = next(c for c in clips if c["stream"] == "lobby")
    assert lobby["video_codec"] == "h264" and lobby["audio_codec"] == "aac"
    head = httpx.get(f"http://127.0.0.1:{web}{lobby['url']}", headers=auth | {"Range": "bytes=0-15"})
    assert head.status_code == 206 and head.content[4:8] == b"ftyp"


def test_demo_prints_the_alert_live_serves_the_dashboard_and_ctrl_c_leaves_no_process(
    media_dir: Path, tmp_path: Path
) -> None:
    kafka, redis, web = free_port(), free_port(), free_port()
    env = os.environ | {
        "FUSEWATCH_KAFKA": f"127.0.0.1:{kafka}",
        "FUSEWATCH_REDIS": f"redis://127.0.0.1:{redis}/0",
        "FUSEWATCH_WEB_PORT": str(web),
        "FUSEWATCH_WEB_TOKEN": "demo-token",
    }
    stderr_log = tmp_path / "demo.err"
    with stderr_log.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "daemon.cli", "demo", "--media-dir", str(media_dir)],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
    family: set[int] = set()
    try:
        assert proc.stdout is not None
        selector = selectors.DefaultSelector()
        selector.register(proc.stdout, selectors.EVENT_READ)
        alert = None
        deadline = time.monotonic() + 240
        while alert is None and time.monotonic() < deadline:
            assert proc.poll() is None, stderr_log.read_text()[-3000:]
            family |= {child.pid for child in psutil.Process(proc.pid).children(recursive=True)}
            if selector.select(timeout=1.0):
                line = proc.stdout.readline()
                if line.startswith(b"{"):
                    alert = json.loads(line)
        assert alert is not None, f"no alert printed in 240 s:\n{stderr_log.read_text()[-3000:]}"
        assert alert["event"] == "distress" and "lobby" in alert["streams"]
        assert "help" in alert["evidence"]["transcript"].lower()
        assert len(family) >= 2, "the embedded broker and Redis run as child processes"

        printed = stderr_log.read_text()
        assert f"http://127.0.0.1:{web}/login?token=demo-token" in printed
        listed = httpx.get(f"http://127.0.0.1:{web}/api/alerts", headers={"Authorization": "Bearer demo-token"})
        assert alert["id"] in {a["id"] for a in listed.json()["alerts"]}
        _the_alert_page_offers_its_clip(web, alert["id"])

        proc.send_signal(signal.SIGINT)
        assert proc.wait(90) == 0, stderr_log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    time.sleep(0.5)
    alive = [pid for pid in family if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"left behind: {[psutil.Process(p).cmdline() for p in alive]}"
    for port in (kafka, redis, web):
        assert all(conn.laddr.port != port for conn in psutil.net_connections("tcp") if conn.status == "LISTEN")
    assert "demo stopped" in stderr_log.read_text()
