"""The dashboard in a real browser: Debian's chromium, driven by playwright.

An operator signs in through the login link, keeps the alert list open, and an alert
published by the fuse stage's Redis writer appears without a reload within 2 s. Its detail
page shows the snapshot, the transcript and why it fired; an acknowledgement made there is
visible to a second operator at once. The roles panel lists live processes, and a role
none runs once, as departed. A stream's timeline draws its period summaries on one axis and
opens a moment (summary, snapshot, a clip cut from `fw.media`) or an alert on a click.
The search box finds a moment of the index in the operator's words, shows its thumbnail,
transcript and why it matched, plays its clip cut from `fw.media`, and says so when no
moment matches. Screenshots are kept as test artefacts.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, async_playwright, expect

from config.schema import ClipsConfig, ClipStoreConfig, FusewatchConfig, SourceConfig, VideoInput, Zone
from daemon.clips.worker import ClipsWorker
from daemon.telemetry.status import RoleStatus, StatusStore, now_ms
from detectors.text_embedding import load_embedder
from streams.clip_store import DirectoryClipStore
from streams.clock import NS_PER_MS
from streams.kafka import MediaPublisher
from streams.models import (
    AlertRef,
    Clip,
    Detection,
    LoudMoment,
    MediaMessage,
    PeriodLoudness,
    PeriodObjects,
    PeriodSummary,
    SaidLine,
    Summary,
)
from streams.redis_schema import RedisKeys, redis_client
from streams.sources import Demuxer, ReplayOptions, open_spec, replay
from streams.testing import MemorySpanSource
from tests.helpers import make_alert
from tests.support.search import make_moment, search_on, write_moments
from tests.support.web import TOKEN, Web, running_web, write_snapshot

pytestmark = pytest.mark.e2e
ARTIFACTS = Path(__file__).resolve().parents[2] / ".cache" / "test-artifacts"


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    executable = shutil.which("chromium")
    if executable is None:
        raise RuntimeError("Debian's chromium is not installed (deploy/test.sh installs it)")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=executable,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking"],
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def web(fw_config: FusewatchConfig, tmp_path: Path) -> AsyncIterator[Web]:
    async with running_web(fw_config, tmp_path / "snapshots") as running:
        yield running


async def test_a_published_alert_shows_up_live_with_its_snapshot_and_can_be_acknowledged(
    browser: Browser, web: Web
) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    operator = await browser.new_context(viewport={"width": 1400, "height": 900})
    page = await operator.new_page()
    await page.goto(f"{web.url}/login?token={TOKEN}")
    await expect(page.locator("#feed-state")).to_have_text("live", timeout=10_000)
    await expect(page.locator("#no-alerts")).to_be_visible()

    window = int(time.time() * 1000) // 2000 * 2000
    snapshot = write_snapshot(web.snapshots, f"test/lobby/{window}.jpg")
    alert = make_alert("distress", "test", window, snapshot=snapshot)
    row = page.locator(f"#alert-{alert.id}")
    sent = time.monotonic()
    await web.outputs.publish_alert(alert)
    await expect(row).to_be_visible(timeout=2_000)
    assert time.monotonic() - sent < 2.0
    await expect(row.locator(".event")).to_have_text("distress")
    await expect(row.locator(".why")).to_contain_text("speech.keywords +0.60")
    await expect(row.locator(".said")).to_contain_text("help somebody call the police")
    await page.screenshot(path=str(ARTIFACTS / "dashboard-alert-list.png"), full_page=True)

    await row.locator(".event a").click()
    await expect(page).to_have_url(f"{web.url}/alerts/{alert.id}")
    image = page.locator("#snapshot")
    await expect(image).to_be_visible()
    loaded = await image.evaluate("img => img.complete && img.naturalWidth")
    assert loaded == 64
    await expect(page.locator("#transcript")).to_have_text("help somebody call the police")
    await expect(page.locator("#terms tbody tr")).to_have_count(2)
    await expect(page.locator("#terms .contribution").nth(1)).to_have_text("0.60")
    await expect(page.locator("#terms .term-stream").nth(1)).to_have_text("lobby")
    await expect(page.locator("#detections tbody tr")).to_have_count(1)

    second = await (await browser.new_context()).new_page()
    await second.goto(f"{web.url}/login?token={TOKEN}")
    await expect(second.locator(f"#alert-{alert.id} button.ack")).to_be_visible(timeout=5_000)

    await page.locator("#operator").fill("dana")
    await page.locator("#operator").dispatch_event("change")
    await page.locator("#ack").click()
    await expect(page.locator("#ack-state")).to_contain_text("acknowledged by dana")
    await page.screenshot(path=str(ARTIFACTS / "dashboard-alert-detail.png"), full_page=True)
    # The other operator's list updates over the event stream, no reload.
    await expect(second.locator(f"#alert-{alert.id} .acked")).to_have_text("✓ dana", timeout=2_000)
    await operator.close()


def _lobby(media_dir: Path, base_ms: int) -> list[MediaMessage]:
    with Demuxer(open_spec(str(media_dir / "lobby.ts")), "lobby", "test", live=False) as demuxer:
        return [m for _, m in demuxer.messages(lambda t: base_ms * 1_000_000 + round(t * 1e9))]


async def test_the_alert_page_plays_its_clip_and_draws_boxes_and_zones(
    browser: Browser, fw_config: FusewatchConfig, media_dir: Path, tmp_path: Path
) -> None:
    zones = [
        Zone(name="door", polygon=[(0.0, 0.0), (0.3, 0.0), (0.3, 0.5)]),
        Zone(name="desk", polygon=[(0.5, 0.5), (1.0, 0.5), (1.0, 1.0), (0.5, 1.0)]),
    ]
    lobby = SourceConfig(id="lobby", url=str(media_dir / "lobby.ts"), video=VideoInput(zones=zones))
    config = fw_config.model_copy(update={"sources": [lobby]})
    async with running_web(config, tmp_path / "snapshots") as web:
        base = int(time.time() * 1000) // 2000 * 2000 - 120_000
        window = base + 30_000
        alert = make_alert(
            "distress", "test", window, snapshot=write_snapshot(web.snapshots, f"test/lobby/{window}.jpg")
        )
        people = [
            Detection(label="person", confidence=0.91, box=(0.1, 0.2, 0.3, 0.9), track_id=3),
            Detection(label="person", confidence=0.72, box=(0.6, 0.1, 0.8, 0.7), track_id=7),
        ]
        alert = alert.model_copy(update={"evidence": alert.evidence.model_copy(update={"detections": people})})
        await web.outputs.publish_alert(alert)
        page = await (await browser.new_context(viewport={"width": 1400, "height": 900})).new_page()
        await page.goto(f"{web.url}/login?token={TOKEN}")
        await page.goto(f"{web.url}/alerts/{alert.id}")
        await expect(page.locator("#no-clip")).to_be_visible()
        await expect(page.locator("#overlay rect.box")).to_have_count(2)
        await expect(page.locator("#overlay .detection text").first).to_have_text("person #3 0.91")
        await expect(page.locator("#overlay .zone polygon")).to_have_count(2)

        # The clips role cuts the clip and records it; the open page picks it up by itself.
        settings = ClipsConfig(wait=0.0, store=ClipStoreConfig(path=web.config.clips.store.path))
        client = redis_client(web.config.redis)
        key = RedisKeys(web.config.redis.key_prefix).clips_of(alert.id)

        async def record(clip: Clip) -> None:
            await client.hset(key, clip.stream, clip.model_dump_json())

        store = DirectoryClipStore(settings.store)
        try:
            worker = ClipsWorker(settings, MemorySpanSource(_lobby(media_dir, base)), store, record)
            assert await worker.handle(alert) == []
        finally:
            await client.aclose()
        player = page.locator("#clip-lobby")
        await expect(player).to_be_visible(timeout=10_000)
        duration = await player.evaluate(
            "v => v.readyState >= 1 ? v.duration"
            " : new Promise(done => v.addEventListener('loadedmetadata', () => done(v.duration)))"
        )
        expected = settings.pre_roll + (alert.window_end - alert.window_start) / 1000 + settings.post_roll
        assert expected - 0.5 <= duration <= expected + settings.max_keyframe_interval, duration
        assert await player.evaluate("v => v.videoWidth") == 768
        seeked = await player.evaluate(
            "v => new Promise(done => { v.addEventListener('seeked', () => done(v.currentTime), {once: true});"
            " v.currentTime = v.duration / 2; })"
        )
        assert abs(seeked - duration / 2) < 1.0, "the player seeks (the server answers Range requests)"
        await page.screenshot(path=str(ARTIFACTS / "dashboard-alert-clip.png"), full_page=True)

        await page.goto(f"{web.url}/")
        await expect(page.locator(f"#alert-{alert.id} img.thumb")).to_be_visible(timeout=5_000)


async def test_the_roles_panel_shows_live_processes_and_a_departed_role_once(browser: Browser, web: Web) -> None:
    now = now_ms()

    def role(name: str, process: str, age_ms: int, departed: bool) -> RoleStatus:
        at = now - age_ms
        return RoleStatus(
            role=name,
            process=process,
            state="stopped" if departed else "running",
            restarts=0,
            last_error="",
            updated_ms=at,
            departed_ms=at if departed else None,
        )

    client = redis_client(web.config.redis)
    try:
        await StatusStore(client, web.config.redis.key_prefix).write_roles(
            [
                role("analyze", "h:1", 120_000, departed=True),  # an earlier run's, beside the live one
                role("analyze", "h:2", 0, departed=False),
                role("fuse", "h:1", 180_000, departed=True),
                role("fuse", "h:0", 240_000, departed=False),  # killed before that: stale
            ]
        )
    finally:
        await client.aclose()
    page = await (await browser.new_context()).new_page()
    await page.goto(f"{web.url}/login?token={TOKEN}")
    items = page.locator("#roles li")
    await expect(items).to_have_text(["analyze — running", "fuse — departed 3 min ago"], timeout=5_000)
    await expect(items.nth(1)).to_have_class("role departed")


async def test_the_browser_without_the_token_gets_the_login_page_and_no_data(browser: Browser, web: Web) -> None:
    page = await (await browser.new_context()).new_page()
    response = await page.goto(f"{web.url}/")
    assert response is not None and response.status == 401
    await expect(page.locator("input[name=token]")).to_be_visible()
    api = await page.request.get(f"{web.url}/api/alerts")
    assert api.status == 401
    await page.locator("input[name=token]").fill(TOKEN)
    await page.locator("button[type=submit]").click()
    await expect(page.locator("#feed-state")).to_have_text("live", timeout=10_000)
    await asyncio.sleep(0)


def _period(start: int, **fields: object) -> PeriodSummary:
    return PeriodSummary.model_validate(
        {
            "stream": "lobby",
            "site": "test",
            "period_s": 60,
            "period_start": start,
            "period_end": start + 60_000,
            "windows": 30,
            "video_windows": 30,
            "audio_windows": 30,
            "first_window": start,
            "last_window": start + 58_000,
        }
        | fields
    )


async def test_the_timeline_draws_a_streams_periods_and_opens_a_moment_or_an_alert(
    browser: Browser, fw_config: FusewatchConfig, media_dir: Path, tmp_path: Path
) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    # The lobby recording as if it had played from `base` on, ten minutes ago: three minutes around it.
    base = int(time.time() * 1000) // 60_000 * 60_000 - 600_000
    async with MediaPublisher(fw_config.kafka) as publisher:
        options = ReplayOptions(speed=None, wall_base_ns=base * NS_PER_MS)
        await replay(str(media_dir / "lobby.ts"), "lobby", "test", publisher, options)
        await publisher.flush()
    alert = make_alert("distress", "test", base + 34_000)
    periods = [
        _period(
            base - 60_000,
            objects={
                "person": PeriodObjects(max_count=2, mean_count=1.2, new_tracks=3),
                "dog": PeriodObjects(max_count=1, mean_count=0.4, new_tracks=1),
            },
            speech=[SaidLine(start_ms=base - 40_000, end_ms=base - 37_500, text="is anyone at the desk")],
            loudness=PeriodLoudness(mean_dbfs=-42.0, peak_dbfs=-20.0),
        ),
        _period(
            base,
            objects={"person": PeriodObjects(max_count=3, mean_count=2.1, new_tracks=4)},
            speech=[
                SaidLine(start_ms=base + 12_000, end_ms=base + 14_000, text="good morning"),
                SaidLine(start_ms=base + 33_000, end_ms=base + 36_000, text="help somebody call the police"),
            ],
            keywords=["help", "police"],
            loudness=PeriodLoudness(
                mean_dbfs=-30.0,
                peak_dbfs=-6.0,
                loud_moments=[
                    LoudMoment(start_ms=base + 32_000, end_ms=base + 38_000, loudness_dbfs=-14.0, peak_dbfs=-6.0)
                ],
            ),
            alerts=[AlertRef(id=alert.id, event="distress", score=1.0, window_start=alert.window_start)],
        ),
        _period(base + 60_000, loudness=PeriodLoudness(mean_dbfs=-55.0, peak_dbfs=-35.0), complete=False),
    ]
    lobby = SourceConfig(id="lobby", url=str(media_dir / "lobby.ts"))
    async with running_web(fw_config.model_copy(update={"sources": [lobby]}), tmp_path / "snapshots") as web:
        for period in periods:
            await web.outputs.publish_period_summary(period)
        await web.outputs.publish_alert(alert)
        await web.outputs.publish_summary(
            Summary(stream="lobby", site="test", window_start=base + 118_000, window_end=base + 120_000)
        )
        write_snapshot(web.snapshots, f"test/lobby/{base + 34_000}.jpg")
        await web.outputs.publish_period_summary(
            _period(
                base // 3_600_000 * 3_600_000 - 3_600_000,
                period_s=3600,
                period_end=base // 3_600_000 * 3_600_000,
                objects={"person": PeriodObjects(max_count=3, mean_count=0.8, new_tracks=9)},
            )
        )
        page = await (await browser.new_context(viewport={"width": 1400, "height": 1000})).new_page()
        problems: list[str] = []  # uncaught script errors and CSP violations (not the 404s the page expects)
        page.on("console", lambda m: problems.append(m.text) if "Content Security Policy" in m.text else None)
        page.on("pageerror", lambda error: problems.append(str(error)))
        await page.goto(f"{web.url}/login?token={TOKEN}")
        await page.locator("#stream-lobby h3 a").click()
        await expect(page).to_have_url(f"{web.url}/streams/lobby")

        chart = page.locator("#timeline-svg")
        await expect(chart.locator(".lane-objects rect.bar")).to_have_count(3)
        await expect(chart.locator(".lane-objects line.mean")).to_have_count(3)
        await expect(chart.locator(".lane-speech rect.said")).to_have_count(3)
        await expect(chart.locator(".lane-loudness circle.peak")).to_have_count(3)
        await expect(chart.locator(".lane-loudness rect.loud")).to_have_count(1)
        await expect(chart.locator(".lane-alerts .alert-mark")).to_have_count(1)
        await expect(chart.locator(".lane-alerts .alert-mark")).to_have_class("alert-mark sev-high")
        await expect(page.locator("#legend .legend-item")).to_have_text(["person", "dog"])
        assert await chart.locator(".tick-label").count() >= 4

        await chart.locator(".lane-objects rect.bar").first.click()  # the first period's person bar
        panel = page.locator("#moment")
        await expect(panel).to_be_visible()
        await expect(panel.locator("#moment-said li")).to_have_count(1)
        await expect(panel.locator("#moment-said")).to_contain_text("is anyone at the desk")
        await expect(panel.locator("#moment-objects li").first).to_have_text("person: max 2, mean 1.20, 3 new tracks")
        await expect(panel.locator("#no-snapshot")).to_be_visible()
        await expect(chart.locator(".period.selected")).to_have_attribute("data-start", str(base - 60_000))

        await chart.locator(".lane-speech rect.said").nth(2).click()  # the call for help
        await expect(panel.locator("#moment-said li")).to_have_count(2)
        await expect(panel.locator("#moment-said li").nth(1)).to_contain_text("help somebody call the police")
        await expect(panel.locator("#moment-alerts a")).to_have_attribute("href", f"/alerts/{alert.id}")
        image = panel.locator("#moment-snapshot")
        await expect(image).to_be_visible()
        assert await image.evaluate("img => img.complete && img.naturalWidth") == 64
        await panel.locator("#clip-moment").click()
        player = panel.locator("#moment-clip")
        await expect(player).to_be_visible(timeout=30_000)
        duration = await player.evaluate(
            "v => v.readyState >= 1 ? v.duration"
            " : new Promise(done => v.addEventListener('loadedmetadata', () => done(v.duration)))"
        )
        assert 5.0 <= duration <= 5.0 + 60.0, duration  # the line and a second either side, from its keyframe
        assert await player.evaluate("v => v.videoWidth") == 768
        await player.evaluate(
            "v => new Promise(done => { v.addEventListener('seeked', () => done(), {once: true});"
            " v.currentTime = v.duration - 2; })"
        )
        await page.screenshot(path=str(ARTIFACTS / "dashboard-timeline.png"), full_page=True)

        await chart.locator(".lane-alerts .alert-mark").click()
        await expect(page).to_have_url(f"{web.url}/alerts/{alert.id}")
        await expect(page.locator("#transcript")).to_have_text("help somebody call the police")

        await page.goto(f"{web.url}/streams/lobby?range=day")
        await expect(page.locator("#range")).to_have_value("day")
        await expect(chart.locator(".lane-objects rect.bar")).to_have_count(1)
        await expect(chart.locator(".lane-speech rect.said")).to_have_count(0)
        assert problems == []


async def test_the_search_box_finds_a_moment_shows_its_thumbnail_and_plays_its_clip(
    browser: Browser, fw_config: FusewatchConfig, media_dir: Path, tmp_path: Path
) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    # The lobby recording as if it had played ten minutes ago; the moments are its wall times.
    base = int(time.time() * 1000) // 60_000 * 60_000 - 600_000
    async with MediaPublisher(fw_config.kafka) as publisher:
        options = ReplayOptions(speed=None, wall_base_ns=base * NS_PER_MS)
        lobby = await replay(str(media_dir / "lobby.ts"), "lobby", "test", publisher, options)
        await publisher.flush()
    wall = lobby.wall_start_ns // NS_PER_MS
    config = search_on(fw_config, tmp_path / "search")
    said = "Help! Somebody call the police!"
    shot = write_snapshot(tmp_path / "snapshots", f"test/lobby/{wall + 32_000}.jpg")
    moments = [
        make_moment("lobby", wall + 30_000, wall + 34_000, {"person": 2}, said, -12.0, "distress", shot),
        make_moment(
            "lobby", wall + 4_000, wall + 16_000, {"person": 1}, "ask not what your country can do for you", -30.0
        ),
        make_moment("street", wall, wall + 30_000, {"car": 3, "bus": 1}, loudness_dbfs=-35.0),
    ]
    await asyncio.to_thread(lambda: write_moments(config, moments, load_embedder()))
    async with running_web(config, tmp_path / "snapshots") as web:
        page = await (await browser.new_context(viewport={"width": 1400, "height": 900})).new_page()
        problems: list[str] = []  # uncaught script errors and CSP violations
        page.on("console", lambda m: problems.append(m.text) if "Content Security Policy" in m.text else None)
        page.on("pageerror", lambda error: problems.append(str(error)))
        await page.goto(f"{web.url}/login?token={TOKEN}")
        await expect(page.locator("#feed-state")).to_have_text("live", timeout=10_000)

        await page.locator("#search-query").fill("someone shouted for help")
        await page.locator("#search-query").press("Enter")
        results = page.locator("#search-results li")
        first = results.first
        await expect(first).to_have_attribute("data-moment", moments[0].id, timeout=15_000)
        await expect(page.locator("#search-state")).to_have_text(f"{await results.count()} moments")
        thumb = first.locator("img.thumb")
        await expect(thumb).to_be_visible()
        loaded = (
            "img => img.complete ? img.naturalWidth : new Promise(done => img.onload = () => done(img.naturalWidth))"
        )
        assert await thumb.evaluate(loaded) == 64
        await expect(first.locator(".said")).to_have_text(f"“{said}”")
        await expect(first.locator(".why")).to_contain_text("words: help, shouted; meaning")
        await expect(first.locator(".result-head")).to_contain_text("lobby · 4 s · alert: distress")
        await expect(first.locator(".result-head a")).to_have_attribute("href", "/streams/lobby")

        await first.locator("button.clip-button").click()
        player = first.locator("video.clip-video")
        await expect(player).to_be_visible(timeout=30_000)
        duration = await player.evaluate(
            "v => v.readyState >= 1 ? v.duration"
            " : new Promise(done => v.addEventListener('loadedmetadata', () => done(v.duration)))"
        )
        assert await player.evaluate("v => v.readyState") >= 1
        assert 4.0 <= duration <= 4.0 + 60.0, duration  # the moment, from the keyframe before it
        assert await player.evaluate("v => v.videoWidth") == 768
        await expect(first.locator("button.clip-button")).to_be_disabled()
        await page.screenshot(path=str(ARTIFACTS / "dashboard-search.png"), full_page=True)

        await page.locator("#search-query").fill("ask not what your country can do")
        await page.locator("#search-query").press("Enter")
        await expect(page.locator("#search-state")).to_have_text("1 moment")
        await expect(results).to_have_count(1)
        await expect(first).to_have_attribute("data-moment", moments[1].id)
        await expect(first.locator(".why")).to_have_text(
            re.compile(r"^words: ask, can, country, do, not; meaning 0\.\d\d$")
        )
        await expect(first.locator(".thumb.none")).to_have_count(1)  # no snapshot: an empty frame in its place
        await expect(first.locator("video")).to_have_count(0)

        nonsense = "purple elephant juggling quantum marmalade"
        await page.locator("#search-query").fill(nonsense)
        await page.locator("#search-query").press("Enter")
        await expect(page.locator("#search-state")).to_have_text(f"no moment matches “{nonsense}”")
        await expect(page.locator("#search-results")).to_be_hidden()
        assert problems == []
