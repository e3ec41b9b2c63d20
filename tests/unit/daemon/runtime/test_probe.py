"""The container health probe (`python -m daemon.runtime.probe`): the token from the environment, exit codes."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from config.schema import FusewatchConfig, KafkaConfig, RedisConfig, WebConfig
from daemon.console.web import serve
from daemon.runtime.probe import ProbeError, main, port_from, token_from
from daemon.telemetry.metrics import Telemetry
from tests.helpers import free_port

ROOT = Path(__file__).resolve().parents[4]
TOKEN = "probe-token-1"


def probe_lines(err: str) -> list[str]:
    """The probe's own lines of stderr (the server's client libraries may log there too)."""
    return [line for line in err.splitlines() if line.startswith(("/healthz", "/readyz", "/metrics"))]


def test_the_token_comes_from_the_environment_or_a_file(tmp_path: Path) -> None:
    assert token_from({"FUSEWATCH_WEB_TOKEN": "abc"}) == "abc"
    secret = tmp_path / "token"
    secret.write_text("from-file\n")
    assert token_from({"FUSEWATCH_WEB_TOKEN_FILE": str(secret)}) == "from-file"
    with pytest.raises(ProbeError, match="no token"):
        token_from({"FUSEWATCH_WEB_TOKEN": ""})
    with pytest.raises(ProbeError, match="cannot read FUSEWATCH_WEB_TOKEN_FILE"):
        token_from({"FUSEWATCH_WEB_TOKEN_FILE": str(tmp_path / "missing")})


def test_the_port_is_the_flag_then_the_environment_then_8686() -> None:
    assert port_from({}, None) == 8686
    assert port_from({"FUSEWATCH_HEALTH_PORT": "9100"}, None) == 9100
    assert port_from({"FUSEWATCH_HEALTH_PORT": "9100"}, 9200) == 9200
    with pytest.raises(ProbeError, match="expected a port number"):
        port_from({"FUSEWATCH_HEALTH_PORT": "http"}, None)


async def test_the_probe_asks_a_real_fusewatch_process_with_the_bearer_token(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A process without the web role (dashboard off, as with --metrics-port): /healthz passes with the
    token and fails without it; /readyz fails while neither Kafka nor Redis answers."""
    port = free_port()
    config = FusewatchConfig(
        kafka=KafkaConfig(bootstrap_servers=[f"127.0.0.1:{free_port()}"]),
        redis=RedisConfig(url=f"redis://127.0.0.1:{free_port()}/0"),
        web=WebConfig(port=port),
    )
    stop = asyncio.Event()
    server = asyncio.create_task(serve(config, Telemetry(), stop, token=TOKEN, dashboard=False))
    env = {"FUSEWATCH_WEB_TOKEN": TOKEN, "FUSEWATCH_HEALTH_PORT": str(port)}
    try:
        for _ in range(100):
            if await asyncio.to_thread(main, ["/healthz"], env) == 0:
                break
            await asyncio.sleep(0.05)
        capsys.readouterr()
        assert await asyncio.to_thread(main, ["/healthz"], env) == 0
        assert capsys.readouterr().out.strip() == "/healthz: 200"
        wrong = dict(env, FUSEWATCH_WEB_TOKEN="not-the-token")
        assert await asyncio.to_thread(main, ["/healthz"], wrong) == 1
        assert probe_lines(capsys.readouterr().err)[0].startswith("/healthz: 401")
        assert await asyncio.to_thread(main, ["/readyz"], env) == 1
        said = probe_lines(capsys.readouterr().err)[0]
        assert said.startswith("/readyz: 503") and '"kafka":false' in said.replace(" ", "")
    finally:
        stop.set()
        await asyncio.wait_for(server, 10)
    assert await asyncio.to_thread(main, ["/healthz"], env) == 1
    assert f"no answer from 127.0.0.1:{port}" in probe_lines(capsys.readouterr().err)[0]


def test_the_probe_runs_as_a_module_without_a_token_and_says_why() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "daemon.runtime.probe", "/healthz"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert done.returncode == 1
    assert "no token: set FUSEWATCH_WEB_TOKEN" in done.stderr
