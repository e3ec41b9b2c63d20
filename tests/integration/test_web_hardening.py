"""The dashboard under abuse, against a real uvicorn server, the embedded Redis and broker.

Bodies over `web.max_body_bytes` are refused with 413 before anything reads them; the live
feed is capped at `web.max_live_connections` per process while the API keeps answering;
malformed input gets a 4xx that says what was wrong, never a 500; a state-changing request
needs JSON and the dashboard's own Origin (a form on another port of the same host cannot
acknowledge); wrong tokens are throttled per client with backoff; every response carries
the security headers; /readyz asks the broker for metadata with the configured auth; and
the token never reaches the log of `fusewatch run`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr, ValidationError

from config.schema import FusewatchConfig, WebConfig
from daemon.console.web import COOKIE, LoginThrottle
from tests.helpers import free_port, make_alert, write_config
from tests.support.web import TOKEN, Web, running_web

ROOT = Path(__file__).resolve().parents[2]
LIMIT = 2048


@pytest.fixture
async def web(fw_config: FusewatchConfig, tmp_path: Path) -> AsyncIterator[Web]:
    settings: dict[str, object] = {
        "max_body_bytes": LIMIT,
        "max_live_connections": 3,
        "login_attempts": 3,
        "login_backoff": 0.5,
        "login_backoff_max": 2.0,
        "trusted_origins": ["https://Fusewatch.example"],
    }
    async with running_web(fw_config, tmp_path / "snapshots", web=settings) as running:
        yield running


async def _published(web: Web) -> str:
    alert = make_alert("distress", "test", int(time.time() * 1000) // 2000 * 2000)
    await web.outputs.publish_alert(alert)
    return alert.id


async def test_bodies_over_the_limit_are_refused_with_413_before_auth(web: Web) -> None:
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    big = b"token=" + b"x" * LIMIT

    async def chunked() -> AsyncIterator[bytes]:
        for _ in range(4):
            yield b"y" * (LIMIT // 2)

    async with web.client(token=None) as anonymous:
        declared = await anonymous.post("/login", content=big, headers=form)
        assert declared.status_code == 413 and "2048 bytes" in declared.json()["error"]
        streamed = await anonymous.post("/login", content=chunked(), headers=form)
        assert streamed.status_code == 413
        at_limit = await anonymous.post("/login", content=b"token=" + b"x" * (LIMIT - 6), headers=form)
        assert at_limit.status_code == 401 and "wrong token" in at_limit.text
    alert_id = await _published(web)
    async with web.client() as client:
        ack = await client.post(f"/api/alerts/{alert_id}/ack", json={"by": "dana", "note": "n" * LIMIT})
        assert ack.status_code == 413
        assert (await client.get(f"/api/alerts/{alert_id}")).json()["ack"] is None


async def test_live_connections_are_capped_and_the_api_keeps_answering(web: Web) -> None:
    alert_id = await _published(web)
    async with contextlib.AsyncExitStack() as streams, web.client() as client:
        opened = []
        for _ in range(3):
            response = await streams.enter_async_context(client.stream("GET", "/api/events"))
            assert response.status_code == 200
            opened.append((response, response.aiter_lines()))
            assert await anext(opened[-1][1]) == "retry: 2000"
        refused = await client.get("/api/events")
        assert refused.status_code == 503 and "live connections" in refused.json()["error"]
        assert refused.headers["retry-after"]
        assert (await client.get("/api/alerts")).status_code == 200
        assert (await client.get("/api/streams")).status_code == 200
        acked = await client.post(f"/api/alerts/{alert_id}/ack", json={"by": "dana"})
        assert acked.status_code == 200
        await opened[0][0].aclose()
        for _ in range(50):
            async with client.stream("GET", "/api/events") as again:
                if again.status_code == 200:
                    break
            await asyncio.sleep(0.05)
        assert again.status_code == 200, "a closed feed frees its place"


async def test_the_api_keeps_its_redis_connections_with_101_feeds_open(
    fw_config: FusewatchConfig, tmp_path: Path
) -> None:
    # The numbers: redis-py pools hold 100 connections; feeds used to take them from the API.
    async with (
        running_web(fw_config, tmp_path, web={"max_live_connections": 101}) as web,
        contextlib.AsyncExitStack() as streams,
        httpx.AsyncClient(
            base_url=web.url,
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=10,
            limits=httpx.Limits(max_connections=120),
        ) as client,
    ):
        for _ in range(101):
            response = await streams.enter_async_context(client.stream("GET", "/api/events"))
            assert response.status_code == 200
        assert (await client.get("/api/alerts")).status_code == 200
        assert (await client.get("/api/events")).status_code == 503


async def test_malformed_input_gets_a_4xx_with_a_message(web: Web) -> None:
    alert_id = await _published(web)
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    async with web.client(token=None) as anonymous:
        login = await anonymous.post("/login", content=b"token=\xff\xfe&next=/", headers=form)
        assert login.status_code == 400 and "UTF-8" in login.text
    async with web.client() as client:
        as_json = {"Content-Type": "application/json"}
        for body in (b"[]", b'"x"', b"3", b"\xff\xfe", b"[" * 1000 + b"]" * 1000, b"{"):
            response = await client.post(f"/api/alerts/{alert_id}/ack", content=body, headers=as_json)
            assert response.status_code == 400, body[:10]
            assert "JSON object" in response.json()["error"]
        snapshot = await client.get("/snapshots/a%00.jpg")
        assert snapshot.status_code == 400 and "snapshot path" in snapshot.text
        assert (await client.get(f"/api/alerts/{alert_id}")).json()["ack"] is None


async def test_state_changing_requests_need_json_and_the_dashboards_own_origin(web: Web) -> None:
    alert_id = await _published(web)
    elsewhere = f"http://127.0.0.1:{free_port()}"
    plain = {"Content-Type": "text/plain"}
    as_json = {"Content-Type": "application/json"}
    ack = f"/api/alerts/{alert_id}/ack"
    async with web.browser() as browser:
        # The same-host attack: a form on another port, enctype=text/plain, with the operator's cookie.
        forged = await browser.post(ack, content=b'{"by": "mallory", "x": "="}', headers=plain | {"Origin": elsewhere})
        assert forged.status_code == 403 and "Origin" in forged.json()["error"]
        foreign_json = await browser.post(ack, json={"by": "mallory"}, headers={"Origin": elsewhere})
        assert foreign_json.status_code == 403
        assert (await browser.post(ack, json={"by": "mallory"})).status_code == 403  # a cookie, no Origin
        assert (await browser.post(ack, json={"by": "mallory"}, headers={"Origin": "null"})).status_code == 403
        same_origin_text = await browser.post(ack, content=b'{"by": "mallory"}', headers=plain | {"Origin": web.origin})
        assert same_origin_text.status_code == 415 and "application/json" in same_origin_text.json()["error"]
        assert (await browser.get(f"/api/alerts/{alert_id}")).json()["ack"] is None
        ok = await browser.post(ack, json={"by": "dana"}, headers={"Origin": web.origin})
        assert ok.status_code == 200 and ok.json()["ack"]["by"] == "dana"
        proxied = await browser.post(ack, json={"by": "kim"}, headers={"Origin": "https://fusewatch.example"})
        assert proxied.status_code == 200, "web.trusted_origins: the public URL behind a proxy"
    async with web.client() as script:
        assert (await script.post(ack, content=b'{"by": "x"}', headers=plain)).status_code == 415
        assert (await script.post(ack, json={"by": "x"}, headers={"Origin": elsewhere})).status_code == 403
        assert (await script.post(ack, content=b'{"by": "sam"}', headers=as_json)).status_code == 200
    async with web.client(token=None) as login:
        form = {"token": TOKEN, "next": "/"}
        cross = await login.post("/login", data=form, headers={"Origin": elsewhere})
        assert cross.status_code == 403 and COOKIE not in cross.cookies
        as_text = await login.post("/login", content=f"token={TOKEN}".encode(), headers=plain | {"Origin": web.origin})
        assert as_text.status_code == 415
        own = await login.post("/login", data=form, headers={"Origin": web.origin})
        assert own.status_code == 303 and COOKIE in own.cookies


def test_trusted_origins_must_be_origins() -> None:
    for wrong in ("fusewatch.example", "https://fusewatch.example/dashboard", "ftp://fusewatch.example"):
        with pytest.raises(ValidationError, match="expected an Origin"):
            WebConfig(trusted_origins=[wrong])


async def test_wrong_tokens_are_throttled_per_client_with_backoff(web: Web) -> None:
    async with web.anonymous("127.0.0.2") as guesser, web.anonymous("127.0.0.3") as other:
        for _ in range(3):
            assert (await guesser.post("/login", data={"token": "guess"})).status_code == 401
        blocked = await guesser.post("/login", data={"token": TOKEN})
        assert blocked.status_code == 429 and "try again" in blocked.text
        assert int(blocked.headers["retry-after"]) >= 1
        assert (await other.post("/login", data={"token": TOKEN})).status_code == 303, "other clients unaffected"
        await asyncio.sleep(0.6)
        assert (await guesser.post("/login", data={"token": "guess"})).status_code == 401
        assert (await guesser.post("/login", data={"token": TOKEN})).status_code == 429
        await asyncio.sleep(0.5)
        assert (await guesser.post("/login", data={"token": TOKEN})).status_code == 429, "the wait doubled"
        await asyncio.sleep(0.6)
        assert (await guesser.post("/login", data={"token": TOKEN})).status_code == 303
        guesser.cookies.clear()
        assert (await guesser.post("/login", data={"token": "guess"})).status_code == 401, "success resets"
    async with web.anonymous("127.0.0.4") as scraper:
        for _ in range(3):
            assert (await scraper.get("/metrics", headers={"Authorization": "Bearer guess"})).status_code == 401
        right = await scraper.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        assert right.status_code == 429 and right.json()["retry_after_s"] > 0


def test_the_throttle_doubles_caps_and_forgets_a_client_quiet_for_the_longest_wait() -> None:
    now = [100.0]
    throttle = LoginThrottle(attempts=2, backoff=1.0, maximum=4.0, max_clients=2, clock=lambda: now[0])
    throttle.failed("a")
    assert throttle.wait("a") == 0
    waits = []
    for _ in range(4):
        throttle.failed("a")
        waits.append(throttle.wait("a"))
        now[0] += waits[-1]
    assert waits == [1.0, 2.0, 4.0, 4.0]
    now[0] += 4.5
    throttle.failed("a")
    assert throttle.wait("a") == 0, "quiet for longer than the longest wait: counting starts again"
    throttle.failed("a")
    assert throttle.wait("a") == 1.0
    throttle.failed("b")
    throttle.failed("c")
    throttle.failed("c")
    assert throttle.wait("c") == 1.0 and throttle.wait("a") == 0, "only max_clients are remembered"


async def test_every_response_carries_the_security_headers_and_tls_cookies_are_secure(web: Web) -> None:
    async with web.client() as client, web.client(token=None) as anonymous:
        responses = [
            await client.get("/"),
            await client.get("/api/alerts"),
            await client.get("/static/common.js"),
            await anonymous.get("/", headers={"Accept": "text/html"}),
            await anonymous.get("/api/alerts"),
            await anonymous.get("/login"),
        ]
        for response in responses:
            csp = response.headers["content-security-policy"]
            assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp and "script-src 'self'" in csp
            assert response.headers["x-frame-options"] == "DENY"
            assert response.headers["referrer-policy"] == "same-origin"
            assert response.headers["x-content-type-options"] == "nosniff"
            assert "strict-transport-security" not in response.headers
        plain = await anonymous.get(f"/login?token={TOKEN}")
        assert plain.status_code == 303 and "secure" not in plain.headers["set-cookie"].lower()
        assert plain.headers["cache-control"] == "no-store"
        # Behind a TLS-terminating proxy on loopback (uvicorn trusts its X-Forwarded-Proto).
        tls = await anonymous.get(f"/login?token={TOKEN}", headers={"X-Forwarded-Proto": "https"})
        assert tls.status_code == 303 and "; secure" in tls.headers["set-cookie"].lower()
        assert tls.headers["strict-transport-security"].startswith("max-age=")


async def test_readiness_asks_the_broker_with_the_configured_auth(fw_config: FusewatchConfig, tmp_path: Path) -> None:
    # The embedded broker speaks PLAINTEXT only: a TCP connect succeeds, the SASL handshake does not.
    sasl = fw_config.model_copy(
        update={
            "kafka": fw_config.kafka.model_copy(
                update={
                    "security_protocol": "SASL_PLAINTEXT",
                    "sasl_mechanism": "PLAIN",
                    "sasl_username": "fusewatch",
                    "sasl_password": SecretStr("wrong"),
                }
            )
        }
    )
    async with running_web(sasl, tmp_path) as web, web.client() as client:
        response = await client.get("/readyz")
        assert response.status_code == 503
        assert response.json()["checks"] == {"kafka": False, "redis": True}
    async with running_web(fw_config, tmp_path) as web, web.client() as client:
        assert (await client.get("/readyz")).json()["checks"] == {"kafka": True, "redis": True}


def _start_run(config_file: Path, stderr: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "daemon.cli", "run", str(config_file), "--role", "web"],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        env=os.environ.copy(),
    )


def _wait_listening(url: str, proc: subprocess.Popen[bytes]) -> None:
    for _ in range(300):
        assert proc.poll() is None
        with contextlib.suppress(httpx.TransportError):
            httpx.get(f"{url}/healthz", timeout=1)
            return
        time.sleep(0.1)
    raise AssertionError("fusewatch run --role web did not listen")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_the_token_reaches_the_terminal_but_never_the_log(fw_config: FusewatchConfig, tmp_path: Path) -> None:
    port = free_port()
    config = fw_config.model_copy(update={"web": fw_config.web.model_copy(update={"port": port})})
    config_file = write_config(config, tmp_path / "site.yaml", web_token=TOKEN)
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "run.log"
    with log.open("wb") as sink:
        proc = _start_run(config_file, sink.fileno())
    try:
        _wait_listening(url, proc)
        httpx.get(f"{url}/login?token={TOKEN}&next=/", timeout=5)
        httpx.post(
            f"{url}/login",
            content=b"token=\xff",
            timeout=5,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        httpx.get(f"{url}/api/alerts", headers={"Authorization": f"Bearer {TOKEN}x"}, timeout=5)
    finally:
        _stop(proc)
    written = log.read_text()
    assert f"{url}/login" in written, written
    assert TOKEN not in written, written

    # On a terminal the operator gets the whole link (stderr is a pty here, as in an interactive shell).
    controller, terminal = pty.openpty()
    proc = _start_run(config_file, terminal)
    os.close(terminal)
    shown = b""
    try:
        deadline = time.monotonic() + 30
        while b"\n" not in shown and time.monotonic() < deadline:
            if select.select([controller], [], [], 0.5)[0]:
                with contextlib.suppress(OSError):
                    shown += os.read(controller, 4096)
    finally:
        _stop(proc)
        os.close(controller)
    assert f"/login?token={TOKEN}".encode() in re.sub(rb"\x1b\[[0-9;]*m", b"", shown), shown
