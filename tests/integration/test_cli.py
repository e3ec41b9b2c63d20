"""The operator's commands against real services: services up/status/down, replay, decode."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from config.schema import FusewatchConfig
from daemon.cli import commands
from daemon.cli.errors import UserError
from daemon.runtime.services import ServiceSet, free_port, port_open

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def _fusewatch(*args: str, env: dict[str, str], cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "daemon.cli", *args],
        capture_output=True,
        text=True,
        env=os.environ | env,
        cwd=cwd,
        timeout=240,
        check=False,
    )


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
    done = _fusewatch(
        "replay",
        str(media_dir / "street.ts"),
        "--stream-id",
        "street",
        "--speed",
        "max",
        "--config",
        str(config),
        env={},
    )
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


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda path: path.write_bytes(b""), "{path} is empty (0 bytes), not a media file"),
        (
            lambda path: path.write_text("these are not the packets you are looking for\n" * 20),
            "cannot open {path}: Invalid data found when processing input",
        ),
        (lambda path: path.mkdir(), "{path} is a directory, not a media file"),
    ],
    ids=["zero-byte", "text", "directory"],
)
def test_replay_of_something_that_is_not_a_recording_is_one_line_and_no_traceback(
    services: ServiceSet, tmp_path: Path, make: Callable[[Path], object], says: str
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(f"site: cli\nkafka:\n  bootstrap_servers: {services.kafka.address}\n")
    target = tmp_path / "cam.ts"
    make(target)
    done = _fusewatch(
        "replay", str(target), "--stream-id", "cam", "--speed", "max", "--config", str(config), env={"COLUMNS": "1000"}
    )  # no wrapping: the message is one line
    assert done.returncode == 1
    assert done.stderr.strip() == "error: " + says.format(path=target), done.stderr


async def test_a_recording_that_goes_away_during_the_replay_is_one_error_not_an_exception_group(
    fw_config: FusewatchConfig, media_dir: Path, tmp_path: Path
) -> None:
    recording = tmp_path / "street.ts"
    shutil.copy(media_dir / "street.ts", recording)
    # At 10x the first of two loops lasts 3 s; the file is gone long before the second opens it.
    replaying = asyncio.create_task(commands.replay(fw_config, str(recording), "street", None, 10.0, 2))
    await asyncio.sleep(1.0)
    assert not replaying.done()
    recording.unlink()
    with pytest.raises(UserError, match=f"^cannot open {re.escape(str(recording))}: No such file or directory$"):
        await asyncio.wait_for(replaying, 30)
