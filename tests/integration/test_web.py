"""The dashboard's HTTP side against a real uvicorn server and the embedded Redis.

Auth on every path, the alert API (list, filter, detail, acknowledge), the live feed over
server-sent events, snapshots, /metrics and the health checks.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from config.schema import FusewatchConfig
from daemon.console.web import COOKIE
from daemon.telemetry.metrics import Telemetry
from streams.clip_store import DirectoryClipStore
from streams.models import AlertRef, Clip, PeriodSummary
from streams.redis_schema import RedisKeys
from tests.helpers import free_port, make_alert
from tests.support.web import TOKEN, Web, running_web, write_snapshot


@pytest.fixture
async def web(fw_config: FusewatchConfig, tmp_path: Path) -> AsyncIterator[Web]:
    async with running_web(fw_config, tmp_path / "snapshots") as running:
        yield running


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/alerts/abc",
        "/streams/lobby",
        "/api/alerts",
        "/api/alerts/abc",
        "/api/streams",
        "/api/summaries?stream=lobby",
        "/api/snapshots?stream=lobby&near_ms=1",
        "/api/search?q=help",
        "/api/moments/x/similar",
        "/api/events",
        "/metrics",
        "/healthz",
        "/readyz",
        "/snapshots/x.jpg",
        "/clips/x.mp4",
        "/static/dashboard.js",
        "/static/timeline.js",
    ],
)
async def test_every_page_and_api_answers_401_without_the_token(web: Web, path: str) -> None:
    async with web.client(token=None) as anonymous, web.client(token="wrong") as wrong:
        for client in (anonymous, wrong):
            response = await client.get(path, headers={"Accept": "text/html"})
            assert response.status_code == 401, path
            assert response.headers["www-authenticate"].startswith("Bearer")
            api = await client.get(path)
            assert api.status_code == 401
    async with httpx.AsyncClient(base_url=web.url, cookies={COOKIE: "0" * 64}) as forged:
        assert (await forged.get(path)).status_code == 401
    async with web.client(token=None) as anonymous:
        post = await anonymous.post("/api/alerts/abc/ack", json={"by": "mallory"})
        assert post.status_code == 401
        cut = await anonymous.post("/api/clips", json={"stream": "lobby", "from_ms": 1, "to_ms": 2})
        assert cut.status_code == 401
        odd = await anonymous.get(path, headers={"Authorization": "Bearer café".encode()})
        assert odd.status_code == 401


async def test_login_sets_a_session_cookie_that_opens_the_pages(web: Web) -> None:
    async with web.client(token=None) as browser:
        page = await browser.get("/", headers={"Accept": "text/html"})
        assert page.status_code == 401 and 'name="token"' in page.text
        wrong = await browser.post("/login", data={"token": "nope", "next": "/"})
        assert wrong.status_code == 401 and "wrong token" in wrong.text
        ok = await browser.post("/login", data={"token": TOKEN, "next": "/alerts/x"})
        assert ok.status_code == 303 and ok.headers["location"] == "/alerts/x"
        assert TOKEN not in ok.headers["set-cookie"]
        browser.cookies.set(COOKIE, ok.cookies[COOKIE])
        assert (await browser.get("/")).status_code == 200
        assert (await browser.get("/api/alerts")).status_code == 200
    async with web.client(token=None) as linked:
        hop = await linked.get(f"/login?token={TOKEN}&next=//evil.example/")
        assert hop.status_code == 303 and hop.headers["location"] == "/"


async def test_alerts_are_listed_newest_first_filtered_found_by_id_and_acknowledged(web: Web) -> None:
    base = int(time.time() * 1000) // 2000 * 2000
    snapshot = write_snapshot(web.snapshots, "test/lobby/1.jpg")
    alerts = [
        make_alert("distress", "test", base - 10_000, snapshot=snapshot),
        make_alert("intrusion", "test", base - 8_000),
        make_alert("distress", "other", base - 6_000),
    ]
    for alert in alerts:
        await web.outputs.publish_alert(alert)
    async with web.client() as client:
        listed = (await client.get("/api/alerts")).json()["alerts"]
        assert [a["id"] for a in listed] == [a.id for a in reversed(alerts)]
        only = (await client.get("/api/alerts", params={"event": "distress", "site": "test"})).json()["alerts"]
        assert [a["id"] for a in only] == [alerts[0].id]
        since = (await client.get("/api/alerts", params={"since_ms": base - 9_000})).json()["alerts"]
        assert {a["id"] for a in since} == {alerts[1].id, alerts[2].id}
        assert (await client.get("/api/alerts", params={"limit": "x"})).status_code == 400

        detail = (await client.get(f"/api/alerts/{alerts[0].id}")).json()
        assert detail["evidence"]["transcript"] == "help somebody call the police"
        assert [t["contribution"] for t in detail["terms"]] == [0.4, 0.6] and detail["ack"] is None
        image = await client.get(detail["snapshot_url"])
        assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
        assert image.content[:2] == b"\xff\xd8"
        assert (await client.get("/snapshots/../../etc/passwd.jpg")).status_code == 404
        assert (await client.get("/api/alerts/unknown")).status_code == 404

        acked = await client.post(f"/api/alerts/{alerts[0].id}/ack", json={"by": "dana", "note": "on my way"})
        assert acked.status_code == 200 and acked.json()["ack"]["by"] == "dana"
        assert (await client.post("/api/alerts/unknown/ack", json={})).status_code == 404
        again = (await client.get(f"/api/alerts/{alerts[0].id}")).json()
        assert again["ack"]["by"] == "dana" and again["ack"]["note"] == "on my way"
    # Stored in Redis: any other dashboard process sees it.
    raw = await web.outputs.client.hget(f"{web.config.redis.key_prefix}:acks", alerts[0].id)
    assert raw is not None and json.loads(raw)["by"] == "dana"


async def test_clips_are_served_with_ranges_and_listed_on_their_alert(web: Web) -> None:
    alert = make_alert("distress", "test", int(time.time() * 1000) // 2000 * 2000)
    await web.outputs.publish_alert(alert)
    store = DirectoryClipStore(web.config.clips.store)
    clip = Clip(
        id=f"{alert.id}-lobby",
        alert_id=alert.id,
        site="test",
        stream="lobby",
        requested_from_ms=alert.window_start - 5000,
        requested_to_ms=alert.window_end + 5000,
        start_ms=alert.window_start - 6000,
        end_ms=alert.window_end + 5000,
        starts_late=False,
        complete=True,
        packets=3,
        bytes=1000,
        cut_ms=12.0,
        created_ms=alert.window_end,
    )
    staging = store.staging_file()
    staging.write_bytes(bytes(range(256)) * 4)
    store.put(clip, staging)
    keys = RedisKeys(web.config.redis.key_prefix)
    async with web.client() as client:
        assert (await client.get(f"/api/alerts/{alert.id}")).json()["clips"] == [], "not recorded yet"
        await web.outputs.client.hset(keys.clips_of(alert.id), "lobby", clip.model_dump_json())
        listed = (await client.get(f"/api/alerts/{alert.id}")).json()["clips"]
        assert [c["url"] for c in listed] == [f"/clips/{clip.id}.mp4"] and listed[0]["start_ms"] == clip.start_ms
        whole = await client.get(listed[0]["url"])
        assert whole.status_code == 200 and whole.headers["content-type"] == "video/mp4" and len(whole.content) == 1024
        part = await client.get(listed[0]["url"], headers={"Range": "bytes=256-511"})
        assert part.status_code == 206 and part.content == bytes(range(256))
        assert part.headers["content-range"] == "bytes 256-511/1024"
        assert (await client.get("/clips/..%2Fsecret.mp4")).status_code in (400, 404)
        assert (await client.get("/clips/.hidden.mp4")).status_code == 400
        assert (await client.get("/clips/nothing-here.mp4")).status_code == 404
        store.root.joinpath(f"{clip.id}.mp4").unlink()  # removed by retention: no longer offered
        assert (await client.get(f"/api/alerts/{alert.id}")).json()["clips"] == []


async def test_period_summaries_of_a_stream_are_listed_oldest_first_for_a_timeline(web: Web) -> None:
    minute = int(time.time() * 1000) // 60_000 * 60_000
    for start in (minute - 180_000, minute - 120_000, minute - 60_000):
        await web.outputs.publish_period_summary(
            PeriodSummary(
                stream="lobby",
                site="test",
                period_s=60,
                period_start=start,
                period_end=start + 60_000,
                windows=30,
                first_window=start,
                last_window=start + 58_000,
                alerts=[AlertRef(id="a1", event="distress", score=1.0, window_start=start)],
            )
        )
    async with web.client() as client:
        listed = (await client.get("/api/summaries", params={"stream": "lobby", "period": "1m"})).json()
        assert listed["period_s"] == 60
        assert [s["period_start"] for s in listed["summaries"]] == [minute - 180_000, minute - 120_000, minute - 60_000]
        assert listed["summaries"][0]["alerts"][0]["event"] == "distress"
        since = await client.get("/api/summaries", params={"stream": "lobby", "since_ms": minute - 90_000})
        assert [s["period_start"] for s in since.json()["summaries"]] == [minute - 120_000, minute - 60_000]
        hourly = await client.get("/api/summaries", params={"stream": "lobby", "period": "3600"})
        assert hourly.json()["summaries"] == []
        for bad in ({}, {"stream": "lobby", "period": "soon"}, {"stream": "lobby", "since_ms": "x"}):
            response = await client.get("/api/summaries", params=bad)
            assert response.status_code == 400 and response.json()["error"]


async def test_the_event_stream_delivers_new_alerts_and_acks_within_two_seconds(web: Web) -> None:
    alert = make_alert("distress", "test", int(time.time() * 1000) // 2000 * 2000)
    events: list[tuple[str, dict[str, object], float]] = []

    async def listen(client: httpx.AsyncClient) -> None:
        kind = ""
        async with client.stream("GET", "/api/events") as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            async for line in response.aiter_lines():
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    events.append((kind, json.loads(line[6:]), time.monotonic()))
                    if len(events) == 2:
                        return

    async with web.client() as client:
        listener = asyncio.create_task(listen(client))
        await asyncio.sleep(0.5)
        sent = time.monotonic()
        await web.outputs.publish_alert(alert)
        await client.post(f"/api/alerts/{alert.id}/ack", json={"by": "sam"})
        await asyncio.wait_for(listener, 5)
    (first, data, at), (second, ack, _) = events
    assert first == "alert" and data["id"] == alert.id and at - sent < 2.0
    assert second == "ack" and ack["id"] == alert.id and ack["ack"]["by"] == "sam"  # type: ignore[index]


async def test_metrics_and_health(fw_config: FusewatchConfig, tmp_path: Path) -> None:
    telemetry = Telemetry()
    telemetry.metrics.frames_decoded.labels("lobby").inc(7)
    async with (
        running_web(fw_config, tmp_path, local_roles=("fuse", "web"), telemetry=telemetry) as web,
        web.client() as client,
    ):
        metrics = await client.get("/metrics")
        assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
        assert 'fusewatch_frames_decoded_total{stream="lobby"} 7.0' in metrics.text
        assert (await client.get("/healthz")).json()["status"] == "ok"
        not_ready = await client.get("/readyz")
        assert not_ready.status_code == 503
        assert not_ready.json()["checks"] == {"kafka": True, "redis": True, "fuse_loaded": False}
        telemetry.loaded.add("fuse")
        ready = await client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["ready"] is True


async def test_readiness_fails_when_the_broker_and_redis_are_unreachable(
    fw_config: FusewatchConfig, tmp_path: Path
) -> None:
    nowhere = fw_config.model_copy(
        update={
            "kafka": fw_config.kafka.model_copy(update={"bootstrap_servers": [f"127.0.0.1:{free_port()}"]}),
            "redis": fw_config.redis.model_copy(update={"url": f"redis://127.0.0.1:{free_port()}/0"}),
        }
    )
    async with running_web(nowhere, tmp_path) as web, web.client() as client:
        response = await client.get("/readyz")
        assert response.status_code == 503
        assert response.json()["checks"] == {"kafka": False, "redis": False}
        down = await client.get("/api/alerts")
        assert down.status_code == 503 and "redis" in down.json()["error"]
