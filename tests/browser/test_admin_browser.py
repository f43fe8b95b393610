"""The admin page in a real browser: Debian's Chromium, driven by Playwright, against a
relay serving on a real port with a webhook sink and an SMTP server as its peers.

Skipped, saying why, only where /usr/bin/chromium is absent; `.ci/run` installs it, so
CI runs these. Screenshots of the list and the detail land in tests/artifacts/.
"""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, async_playwright

from tests.admin.admin_kit import ADMIN_TOKEN, LUCIA, admin_config_dict, post_fixture
from tests.conftest import build_config
from tests.peers import smtp_server, status, wait_until, webhook_sink
from tests.test_delivery import settled

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PHONE_WIDTH_PX = 375
# A browser on a loaded 2-core machine: each step waits for what it needs, up to this.
STEP_TIMEOUT_MS = 20_000

pytestmark = [
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="Debian's Chromium is not installed (apt-get install chromium)",
    ),
    pytest.mark.timeout(240),
]


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def served(relay_client: Any, tmp_path: Path) -> AsyncIterator[tuple[Any, Any, str]]:
    """A relay on a real port: Lucía's webhook fails five times, then answers 200;
    João's email goes to a real SMTP server. Three fixtures posted and settled."""
    async with webhook_sink() as sink, smtp_server() as (recorder, smtp_port):
        sink.on("/hook", *[status(500)] * 5)
        raw = admin_config_dict(tmp_path, sink.url("/hook"))
        raw["email"] = {
            "from": "Relay <relay@example.com>",
            "transport": "smtp",
            "smtp": {"host": "127.0.0.1", "port": smtp_port},
        }
        client = await relay_client(build_config(copy.deepcopy(raw), tmp_path))
        for name in (
            "billet_printed_oxxo.json",
            "billet_printed_boleto.json",
            "billet_printed_no_affiliate.json",
        ):
            await post_fixture(client, name)
        await wait_until(lambda: settled(client))
        assert recorder.received  # João's email arrived
        yield client, sink, str(client.make_url("")).rstrip("/")


async def log_in(page: Page, base: str) -> None:
    await page.goto(f"{base}/admin/deliveries")
    assert "/admin/login" in page.url  # sent to the login first
    await page.fill("input[name=token]", ADMIN_TOKEN)
    await page.click("button:has-text('Log in')")
    await page.wait_for_url(f"{base}/admin/deliveries")


async def test_an_operator_works_through_the_admin_page(
    browser: Browser, served: tuple[Any, Any, str]
) -> None:
    client, sink, base = served
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(STEP_TIMEOUT_MS)
    ARTIFACTS.mkdir(exist_ok=True)
    await log_in(page, base)

    # The deliveries of the posted fixtures: failed, delivered, ignored.
    rows = page.locator("table.rows tbody tr")
    assert await rows.count() == 3
    listed = await page.locator("table.rows").inner_text()
    for word in ("failed", "delivered", "ignored", "500"):
        assert word in listed

    # Select-all ticks every row.
    await page.check("input[data-select-all]")
    boxes = page.locator("input[name=ids][type=checkbox]")
    assert all([await boxes.nth(i).is_checked() for i in range(await boxes.count())])

    # Filter by failed.
    await page.click("summary:has-text('Filters')")
    await page.select_option("select[name=status]", "failed")
    await page.click("button:has-text('Filter')")
    await page.wait_for_url("**status=failed**")
    assert await rows.count() == 1
    await page.screenshot(path=str(ARTIFACTS / "admin-deliveries.png"), full_page=True)

    # Its detail: the payload sent and the receiver's response code, the buyer masked.
    await page.locator("table.rows tbody tr td[data-label='#'] a").first.click()
    await page.wait_for_url("**/admin/deliveries/*")
    detail = await page.locator("main").inner_text()
    assert "Payload sent" in detail and "slip_code" in detail
    assert "Attempt 5: permanent, 500" in detail or "Attempt 5: transient, 500" in detail
    assert "María González" not in detail
    await page.screenshot(path=str(ARTIFACTS / "admin-delivery.png"), full_page=True)

    # Reveal the buyer: a POST, after which the data shows.
    await page.click("button:has-text('Reveal buyer data')")
    await page.wait_for_url("**/reveal")
    assert "María González" in await page.locator("main").inner_text()

    # Reprocess: a new attempt appears once the relay has sent it (the sink now says 200).
    await page.go_back()
    await page.click("button:has-text('Reprocess')")
    await page.wait_for_url("**audit=**")
    await wait_until(lambda: len(sink.hits) == 6)
    await wait_until(lambda: settled(client))
    await page.reload()
    assert "Attempt 6: success, 200" in await page.locator("main").inner_text()

    # Send a test to Lucía's webhook from the destinations page.
    await page.click("nav >> text=Destinations")
    crm = page.locator(f"article[data-key='acme/{LUCIA}/crm']")
    await crm.locator("button:has-text('Send a test')").click()
    await page.wait_for_url("**audit=**")
    assert "test queued as" in await page.locator(".notice").inner_text()
    await wait_until(lambda: len(sink.hits) == 7)
    assert json.loads(sink.hits[-1].body)["test"] is True  # however the JSON is spaced

    # Disable it, then enable it again.
    await crm.locator("button:has-text('Disable')").click()
    await page.wait_for_url("**audit=**")
    assert "disabled by an operator" in await crm.inner_text()
    await crm.locator("button:has-text('Enable')").click()
    await page.wait_for_url("**audit=**")
    assert "enabled" in await crm.locator("h2").inner_text()
    assert await crm.locator("button:has-text('Disable')").count() == 1


async def test_every_page_fits_a_phone_375_px_wide(
    browser: Browser, served: tuple[Any, Any, str]
) -> None:
    _, _, base = served
    page = await browser.new_page(viewport={"width": PHONE_WIDTH_PX, "height": 740})
    page.set_default_timeout(STEP_TIMEOUT_MS)
    await page.goto(f"{base}/admin/login")
    widths = {"login": await page.evaluate("document.documentElement.scrollWidth")}
    await log_in(page, base)
    for name, path in (
        ("deliveries", "/admin/deliveries"),
        ("failed", "/admin/deliveries?status=failed"),
        ("detail", "/admin/deliveries/1"),
        ("event", "/admin/events/1"),
        ("destinations", "/admin/destinations"),
        ("audit", "/admin/audit"),
        ("recovery", "/admin/recovery"),
    ):
        await page.goto(f"{base}{path}")
        widths[name] = await page.evaluate("document.documentElement.scrollWidth")
    await page.goto(f"{base}/admin/deliveries/1")
    await page.click("button:has-text('Reveal buyer data')")
    # Measure the revealed page once it and its stylesheet have loaded: read any sooner,
    # the unstyled page (long unbroken values) is wider than the phone.
    await page.wait_for_url("**/reveal")
    await page.wait_for_load_state("load")
    widths["revealed"] = await page.evaluate("document.documentElement.scrollWidth")
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "admin-delivery-375px.png"), full_page=True)
    assert {name: w for name, w in widths.items() if w > PHONE_WIDTH_PX} == {}
