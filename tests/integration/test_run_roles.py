"""`fusewatch run` as an operator runs it: a child process with roles, scraped while a recording replays.

Checks that /readyz turns ready once the models are loaded, that the Prometheus counters
move during a replay (frames decoded, windows, inference time, alerts and their latency),
that `fusewatch status` and `fusewatch alerts` read what the roles wrote, and that SIGTERM
drains and exits 0 (the second signal's immediate stop: tests/unit/daemon/runtime/test_signals.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from config import load_config
from config.schema import FusewatchConfig
from daemon.cli.main import default_config_path
from streams.kafka import MediaPublisher
from streams.sources import ReplayOptions, replay
from tests.helpers import free_port, write_config

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "run-test-token"


@dataclass
class RunProcess:
    """`fusewatch run CONFIG --role …` as a child process, with its log and web address."""

    proc: subprocess.Popen[bytes]
    config: FusewatchConfig
    config_file: Path
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.config.web.port}"

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url + path, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "daemon.cli", *args, "--config", str(self.config_file)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def wait_ready(self, within: float) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                if self.get("/readyz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        raise AssertionError(f"not ready in {within} s:\n{self.log.read_text()[-3000:]}")


def samples(process: RunProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = process.get("/metrics").text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def total(values: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str) -> float:
    return sum(v for (n, _), v in values.items() if n == name)


@pytest.fixture
def run_config(fw_config: FusewatchConfig, tmp_path: Path) -> FusewatchConfig:
    demo = load_config(default_config_path(), env={})
    return demo.model_copy(
        update={
            "site": fw_config.site,
            "kafka": fw_config.kafka,
            "redis": fw_config.redis,
            "detectors": demo.detectors.model_copy(update={"when_behind": "wait"}),
            "outputs": demo.outputs.model_copy(update={"snapshots_dir": str(tmp_path / "snapshots")}),
            "web": demo.web.model_copy(update={"port": free_port()}),
        }
    )


@pytest.fixture
def start_run(tmp_path: Path) -> Iterator[object]:
    started: list[RunProcess] = []

    def start(config: FusewatchConfig, roles: str) -> RunProcess:
        config_file = write_config(config, tmp_path / f"site-{len(started)}.yaml", web_token=TOKEN)
        log = tmp_path / f"run-{len(started)}.log"
        with log.open("wb") as sink:
            proc = subprocess.Popen(
                [sys.executable, "-m", "daemon.cli", "run", str(config_file), "--role", roles],
                cwd=ROOT,
                stdout=sink,
                stderr=sink,
                env=os.environ.copy(),
            )
        started.append(RunProcess(proc, config, config_file, log))
        return started[-1]

    yield start
    for process in started:
        if process.proc.poll() is None:
            process.proc.kill()
            process.proc.wait(10)


async def test_counters_move_during_a_replay_and_sigterm_drains_and_exits_0(
    start_run: object, run_config: FusewatchConfig, media_dir: Path
) -> None:
    process: RunProcess = start_run(run_config, "analyze,fuse,web")  # type: ignore[operator]
    process.wait_ready(within=120)
    before = samples(process)
    assert total(before, "fusewatch_frames_decoded_total") == 0
    assert before[("fusewatch_role_up", (("role", "analyze"),))] == 1

    async with MediaPublisher(run_config.kafka) as publisher:
        await replay(
            str(media_dir / "lobby.ts"),
            "lobby",
            run_config.site,
            publisher,
            ReplayOptions(speed=None, align_s=run_config.windows.size),
        )
        await publisher.flush()
    during = samples(process)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and total(during, "fusewatch_alerts_total") == 0:
        await asyncio.sleep(2)
        during = samples(process)
    assert total(during, "fusewatch_frames_decoded_total") > 100
    assert total(during, "fusewatch_frames_analysed_total") > 10
    assert total(during, "fusewatch_windows_emitted_total") > 10
    assert during[("fusewatch_inference_seconds_count", (("model", "detector"),))] > 0
    assert during[("fusewatch_inference_seconds_count", (("model", "transcriber"),))] > 0
    assert during[("fusewatch_alerts_total", (("event", "distress"), ("site", run_config.site)))] >= 1
    assert during[("fusewatch_alert_latency_seconds_count", (("event", "distress"),))] >= 1
    assert any(n == "fusewatch_consumer_lag" for n, _ in during)
    assert during[("fusewatch_redis_buffer_depth", ())] == 0

    status = json.loads(process.cli("status", "--json"))
    lobby = next(row for row in status["streams"] if row["stream"] == "lobby")
    assert lobby["status"]["frames_decoded"] > 100 and lobby["status"]["last_window_end"] is not None
    assert lobby["last_alert"]["event"] == "distress"
    assert {r["role"] for r in status["roles"]} >= {"analyze", "fuse", "web"}
    lines = [json.loads(line) for line in process.cli("alerts", "--json", "--event", "distress").splitlines()]
    assert lines and all(a["event"] == "distress" for a in lines)
    assert "help" in lines[0]["evidence"]["transcript"].lower()

    process.proc.send_signal(signal.SIGTERM)
    assert process.proc.wait(60) == 0
    log = [json.loads(line) for line in process.log.read_text().splitlines() if line.startswith("{")]
    assert any("SIGTERM: stopping" in entry["msg"] for entry in log)
    assert not [entry for entry in log if entry["level"] == "error"]
