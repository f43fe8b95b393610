"""The admin page's sale recovery figures (issue 11): slips notified, paid, expired."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.admin.admin_kit import admin_config_dict, log_in, post_fixture
from tests.conftest import build_config, relay_of
from tests.peers import wait_until
from tests.test_delivery import settled


async def test_the_recovery_page_shows_slips_notified_paid_and_their_median(
    relay_client: Any, tmp_path: Path
) -> None:
    raw = admin_config_dict(tmp_path)
    raw["recovery"] = {"enabled": True}
    client = await relay_client(build_config(raw, tmp_path))
    await post_fixture(client, "billet_printed_oxxo.json")
    await wait_until(lambda: settled(client))
    await post_fixture(client, "purchase_approved_oxxo.json")
    await wait_until(lambda: settled(client))
    await log_in(client)

    page = await client.get("/admin/recovery")
    text = await page.text()
    week = await (await client.get("/admin/recovery?since=7d")).text()
    bad = await client.get("/admin/recovery?since=banana")

    assert page.status == 200
    assert "K12345678M" in text and "acme" in text
    # Lucía: one slip notified, one paid; the producer's row says the same.
    assert text.count('<td data-label="Notified">1</td>') == 2
    assert text.count('<td data-label="Paid">1</td>') == 2
    assert "Sale recovery" in week
    assert bad.status == 400 and "<code>since</code>" in await bad.text()
    assert relay_of(client).config.recovery is not None


async def test_the_recovery_page_says_when_recovery_is_off(
    relay_client: Any, tmp_path: Path
) -> None:
    client = await relay_client(build_config(admin_config_dict(tmp_path), tmp_path))
    await log_in(client)
    text = await (await client.get("/admin/recovery")).text()
    assert "Sale recovery is off" in text
