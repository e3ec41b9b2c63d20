"""The dashboard in a real browser: Debian's chromium, driven by playwright.

An operator signs in through the login link, keeps the alert list open, and an alert
published by the fuse stage's Redis writer appears without a reload within 2 s. Its detail
page shows the snapshot, the transcript and why it fired; an acknowledgement made there is
visible to a second operator at once. The roles panel lists live processes, and a role
none runs once, as departed. Screenshots are kept as test artefacts.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, async_playwright, expect

from config.schema import FusewatchConfig
from daemon.telemetry.status import RoleStatus, StatusStore, now_ms
from streams.redis_schema import redis_client
from tests.helpers import make_alert
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
    await expect(page.locator("#terms .stream").nth(1)).to_have_text("lobby")
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
