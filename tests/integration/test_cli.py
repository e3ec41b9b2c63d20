"""The operator's commands against real services: services up/status/down, replay, decode."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from daemon.services import ServiceSet, free_port, port_open

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def _fusewatch(*args: str, env: dict[str, str], cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "daemon.cli", *args], capture_output=True, text=True,
                          env=os.environ | env, cwd=cwd, timeout=240, check=False)


def test_services_up_status_down(tmp_path: Path) -> None:
    kafka, redis = free_port(), free_port()
    env = {"FUSEWATCH_KAFKA": f"127.0.0.1:{kafka}", "FUSEWATCH_REDIS": f"redis://127.0.0.1:{redis}/0"}
    state = str(tmp_path / "state")
    try:
        up = _fusewatch("services", "up", "--state-dir", state, env=env)
        assert up.returncode == 0, up.stderr
        assert port_open(kafka) and port_open(redis)
        again = _fusewatch("services", "up", "--state-dir", state, env=env)
        assert again.returncode == 0 and "already up" in again.stderr
        status = _fusewatch("services", "status", "--state-dir", state, env=env)
        assert status.returncode == 0 and f"127.0.0.1:{kafka}" in status.stdout
    finally:
        down = _fusewatch("services", "down", "--state-dir", state, env=env)
    assert down.returncode == 0
    assert not port_open(kafka) and not port_open(redis)
    assert _fusewatch("services", "status", "--state-dir", state, env=env).returncode == 3


def test_replay_and_decode_commands(services: ServiceSet, media_dir: Path, tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    suffix = tmp_path.name[-12:].replace("_", "-")
    config.write_text(
        f"site: cli\nkafka:\n  bootstrap_servers: {services.kafka.address}\n"
        f"  topics: {{media: m.{suffix}, features: f.{suffix}, alerts: a.{suffix}, "
        f"summaries: s.{suffix}, dead_letter: d.{suffix}}}\n"
    )
    done = _fusewatch("replay", str(media_dir / "street.ts"), "--stream-id", "street", "--speed", "max",
                      "--config", str(config), env={})
    assert done.returncode == 0, done.stderr
    assert "replayed street: 1220 packets (750 video, 470 audio)" in " ".join(done.stderr.split())
    decoded = _fusewatch("decode", "--config", str(config), "--idle", "2", env={})
    assert decoded.returncode == 0, decoded.stderr
    row = next(line for line in decoded.stdout.splitlines() if "street" in line)
    assert "750" in row and "481280" in row and "yes" in row


def test_replay_without_a_broker_says_how_to_start_one(tmp_path: Path, media_dir: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(f"kafka:\n  bootstrap_servers: 127.0.0.1:{free_port()}\n")
    done = _fusewatch("replay", str(media_dir / "street.ts"), "--stream-id", "s", "--config", str(config), env={})
    assert done.returncode == 1
    assert "cannot reach Kafka" in done.stderr and "fusewatch services up" in done.stderr
