"""The timeline's click-through against the real server, Redis and broker: the nearest snapshot of a
moment (`GET /api/snapshots`) and a clip of any span cut from `fw.media` (`POST /api/clips`)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from config.schema import FusewatchConfig
from streams.clock import NS_PER_MS
from streams.kafka import MediaPublisher
from streams.sources import ReplayOptions, replay
from tests.helpers import free_port
from tests.support.web import Web, running_web, write_snapshot

pytestmark = pytest.mark.integration


@pytest.fixture
async def web(fw_config: FusewatchConfig, tmp_path: Path) -> AsyncIterator[Web]:
    async with running_web(fw_config, tmp_path / "snapshots") as running:
        yield running


async def test_the_snapshot_nearest_to_a_moment_is_found_within_its_bounds(web: Web) -> None:
    base = int(time.time() * 1000) // 60_000 * 60_000 - 120_000
    for start in (base + 4_000, base + 10_000):
        write_snapshot(web.snapshots, f"test/lobby/{start}.jpg")
    async with web.client() as client:
        found = await client.get("/api/snapshots", params={"stream": "lobby", "near_ms": base + 8_000})
        assert found.status_code == 200
        assert found.json() == {
            "stream": "lobby",
            "site": "test",
            "window_start": base + 10_000,
            "url": f"/snapshots/test/lobby/{base + 10_000}.jpg",
        }
        image = await client.get(found.json()["url"])
        assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
        bounded = await client.get(
            "/api/snapshots",
            params={"stream": "lobby", "site": "test", "near_ms": base + 8_000, "from_ms": base, "to_ms": base + 9_999},
        )
        assert bounded.json()["window_start"] == base + 4_000

        none = await client.get(
            "/api/snapshots", params={"stream": "lobby", "near_ms": base + 30_000, "from_ms": base + 20_000}
        )
        assert none.status_code == 404 and "only windows with detections" in none.json()["error"]
        elsewhere = await client.get("/api/snapshots", params={"stream": "lobby", "site": "hq", "near_ms": base})
        assert elsewhere.status_code == 404
        for bad in (
            {"stream": "../../etc", "near_ms": base},
            {"stream": "lobby"},
            {"stream": "lobby", "near_ms": "soon"},
            {"stream": "lobby", "site": "a/b", "near_ms": base},
            {"stream": "lobby", "near_ms": base, "from_ms": base, "to_ms": base - 1},
            {"stream": "lobby", "near_ms": base, "from_ms": base, "to_ms": base + 86_400_000},
        ):
            response = await client.get("/api/snapshots", params=bad)
            assert response.status_code == 400 and response.json()["error"], bad


async def test_a_span_is_cut_from_fw_media_once_and_served_as_an_mp4(
    fw_config: FusewatchConfig, media_dir: Path, tmp_path: Path
) -> None:
    # Replayed as if it had been recorded five minutes ago, so every span asked for has started.
    wall_base_ns = (int(time.time() * 1000) // 2000 * 2000 - 300_000) * NS_PER_MS
    async with MediaPublisher(fw_config.kafka) as publisher:
        lobby = await replay(
            str(media_dir / "lobby.ts"),
            "lobby",
            fw_config.site,
            publisher,
            ReplayOptions(speed=None, wall_base_ns=wall_base_ns),
        )
        await publisher.flush()
    start_ms = lobby.wall_start_ns // NS_PER_MS
    span = {"stream": "lobby", "from_ms": start_ms + 10_000, "to_ms": start_ms + 20_000}
    async with running_web(fw_config, tmp_path / "snapshots") as web, web.client() as client:
        cut = await client.post("/api/clips", json=span)
        assert cut.status_code == 200, cut.text
        clip = cut.json()["clip"]
        name = f"span-lobby-{span['from_ms']}-{span['to_ms']}"
        assert cut.json()["reused"] is False and clip["id"] == name and clip["url"] == f"/clips/{name}.mp4"
        assert clip["start_ms"] <= span["from_ms"] and span["to_ms"] - 1_000 <= clip["end_ms"] <= span["to_ms"]
        assert clip["complete"] is True and clip["video_codec"] == "h264" and clip["alert_id"] is None
        video = await client.get(clip["url"])
        assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
        assert video.content[4:8] == b"ftyp" and len(video.content) == clip["bytes"]
        part = await client.get(clip["url"], headers={"Range": "bytes=0-99"})
        assert part.status_code == 206 and part.content == video.content[:100]

        stored = Path(web.config.clips.store.path) / f"{name}.mp4"
        written = stored.stat().st_mtime_ns
        again = await client.post("/api/clips", json=span)
        assert again.status_code == 200 and again.json()["reused"] is True
        assert again.json()["clip"] == clip and stored.stat().st_mtime_ns == written, "not cut a second time"

        gone = await client.post(
            "/api/clips", json={"stream": "lobby", "from_ms": start_ms - 3_600_000, "to_ms": start_ms - 3_590_000}
        )
        assert gone.status_code == 404 and "retention" in gone.json()["error"]
        nothing = await client.post("/api/clips", json=span | {"stream": "hall"})
        assert nothing.status_code == 404 and "hall" in nothing.json()["error"]
        for bad in (
            span | {"to_ms": span["from_ms"]},
            span | {"to_ms": span["from_ms"] + 120_001},
            span | {"stream": "../lobby"},
            {"stream": "lobby"},
        ):
            refused = await client.post("/api/clips", json=bad)
            assert refused.status_code == 400 and refused.json()["error"], bad
        plain = await client.post("/api/clips", content=b"stream=lobby", headers={"Content-Type": "text/plain"})
        assert plain.status_code == 415
        async with web.browser() as browser:  # the page's own request: the session cookie and its Origin
            foreign = await browser.post("/api/clips", json=span, headers={"Origin": "http://evil.example"})
            assert foreign.status_code == 403
            own = await browser.post("/api/clips", json=span, headers={"Origin": web.origin})
            assert own.status_code == 200 and own.json()["reused"] is True


async def test_a_cut_answers_503_when_kafka_cannot_be_reached(fw_config: FusewatchConfig, tmp_path: Path) -> None:
    nowhere = fw_config.model_copy(
        update={"kafka": fw_config.kafka.model_copy(update={"bootstrap_servers": [f"127.0.0.1:{free_port()}"]})}
    )
    now = int(time.time() * 1000)
    async with running_web(nowhere, tmp_path / "snapshots") as web, web.client() as client:
        response = await client.post("/api/clips", json={"stream": "lobby", "from_ms": now - 20_000, "to_ms": now})
        assert response.status_code == 503 and "Kafka" in response.json()["error"]
