"""The admin pages against a real relay: the list and its filters, keyset pages, the
detail with its masked buyer and the recorded reveal, the events page, and each
action with its audit entry."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from relay.records import HistoryFilter
from tests.admin.admin_kit import (
    BEARER,
    LUCIA,
    admin_config_dict,
    api_json,
    log_in,
    post_fixture,
)
from tests.conftest import build_config, relay_of
from tests.peers import WebhookSink, status, wait_until, webhook_sink
from tests.test_delivery import settled

BUYER = ("María González", "maria.gonzalez@example.com", "+52 55 1234 5678")


async def start(relay_client: Any, tmp_path: Path, sink: WebhookSink, **changes: Any) -> Any:
    raw = admin_config_dict(tmp_path, sink.url("/hook"))
    raw["delivery"].update(changes)
    client: TestClient[Any, Any] = await relay_client(build_config(raw, tmp_path))
    return client


async def attempts_of(client: Any, delivery_id: int) -> int:
    detail = await relay_of(client).store.delivery(delivery_id)
    assert detail is not None
    return len(detail.attempts)


async def test_the_list_shows_each_delivery_its_last_code_and_reason(
    relay_client: Any, tmp_path: Path
) -> None:
    async with webhook_sink() as sink:
        client = await start(relay_client, tmp_path, sink)
        for name in ("billet_printed_oxxo.json", "billet_printed_no_affiliate.json"):
            await post_fixture(client, name)
        await wait_until(lambda: settled(client))
        await log_in(client)
        page = await (await client.get("/admin/deliveries")).text()
    assert "acme/K12345678M/crm" in page
    assert (
        '<span class="code" title="HTTP status or SMTP reply of the last attempt">200</span>'
        in page
    )
    assert "ignored" in page and "no affiliate" in page.lower()
    for value in BUYER:
        assert value not in page  # the list never shows the buyer


async def test_filters_tabs_and_keyset_pages_list_each_row_once(
    relay_client: Any, tmp_path: Path
) -> None:
    async with webhook_sink() as sink:
        sink.on("/hook", *[status(500)] * 5)
        client = await start(relay_client, tmp_path, sink)
        for name in (
            "billet_printed_oxxo.json",  # Lucía's webhook: failed after 5 attempts
            "billet_printed_boleto.json",  # João by email: delivered
            "billet_printed_pix.json",
            "billet_printed_no_affiliate.json",  # ignored
        ):
            await post_fixture(client, name)
        await wait_until(lambda: settled(client))
        everything = await relay_of(client).store.history(HistoryFilter(limit=100))

        async def ids(**query: str) -> list[int]:
            status_code, body = await api_json(client, "GET", "/api/deliveries", params=query)
            assert status_code == 200, body
            return [row["id"] for row in body["deliveries"]]

        failed = [r.id for r in everything if r.status == "failed"]
        assert failed and await ids(status="failed") == failed
        assert await ids(tab="sent") == [
            r.id for r in everything if r.status in ("delivered", "failed")
        ]
        assert await ids(tab="pending") == []
        assert await ids(affiliate=LUCIA) == [r.id for r in everything if r.affiliate_code == LUCIA]
        assert await ids(channel="webhook") == failed
        assert await ids(transaction="HP0970394859") == [
            r.id for r in everything if r.transaction_code == "HP0970394859"
        ]
        assert await ids(hotmart_id=everything[0].hotmart_id) == [everything[0].id]
        assert await ids(producer="acme") == [r.id for r in everything]
        assert await ids(producer="someone-else") == []
        assert await ids(event="PURCHASE_BILLET_PRINTED") == [r.id for r in everything]
        assert await ids(since="2000-01-01", until="2999-12-31") == [r.id for r in everything]
        assert await ids(until="2000-01-01") == []
        assert await ids(since="1h") == [r.id for r in everything]

        # Keyset pages of one row: each row once, newest first, then no `next`.
        seen: list[int] = []
        cursor = None
        while True:
            params = {"limit": "1", **({"cursor": cursor} if cursor else {})}
            _, body = await api_json(client, "GET", "/api/deliveries", params=params)
            seen += [row["id"] for row in body["deliveries"]]
            cursor = body["next"]
            if cursor is None:
                break
        assert seen == [r.id for r in everything]

        # The page follows the same filters, with a link to the older rows.
        await log_in(client)
        page = await (await client.get("/admin/deliveries?status=failed&limit=1")).text()
        assert f"/admin/deliveries/{failed[0]}" in page
        assert 'rel="next"' not in page or len(failed) > 1


async def test_a_wrong_filter_is_a_400_that_names_it(relay_client: Any, tmp_path: Path) -> None:
    async with webhook_sink() as sink:
        client = await start(relay_client, tmp_path, sink)
        await log_in(client)
        for query, field in (
            ("status=Nope!", "status"),
            ("since=banana", "since"),
            ("limit=100000", "limit"),
            ("cursor=-4", "cursor"),
            ("channel=fax", "channel"),
            ("tab=later", "tab"),
            ("until=99999999999999d", "until"),
        ):
            status_code, body = await api_json(client, "GET", f"/api/deliveries?{query}")
            assert status_code == 400, query
            assert [d["field"] for d in body["details"]] == [field], body
            page = await client.get(f"/admin/deliveries?{query}")
            assert page.status == 400
            assert f"<code>{field}</code>" in await page.text()
        status_code, body = await api_json(client, "GET", "/api/deliveries?colour=red")
        assert status_code == 400 and body["details"][0]["field"] == "colour"


async def test_the_detail_masks_the_buyer_until_a_recorded_reveal(
    relay_client: Any, tmp_path: Path
) -> None:
    async with webhook_sink() as sink:
        client = await start(relay_client, tmp_path, sink)
        await post_fixture(client, "billet_printed_oxxo.json")
        await wait_until(lambda: settled(client))
        csrf = await log_in(client)
        (row,) = await relay_of(client).store.history(HistoryFilter())
        masked = await (await client.get(f"/admin/deliveries/{row.id}")).text()
        _, api_masked = await api_json(client, "GET", f"/api/deliveries/{row.id}")
        revealed = await client.post(f"/admin/deliveries/{row.id}/reveal", data={"csrf": csrf})
        revealed_page = await revealed.text()
        entries = await relay_of(client).store.audit_log()
    sent = api_masked["attempts"][0]["request_payload"]
    # whatsapp_url is null: sale recovery is off in this config (see test_masking.py).
    assert json.loads(sent)["buyer"] == {
        "name": "•••",
        "email": "•••",
        "phone": "•••",
        "whatsapp_url": None,
    }
    assert api_masked["event"]["buyer"] == {"name": "•••", "email": "•••", "phone": "•••"}
    assert api_masked["attempts"][0]["status_code"] == 200
    for value in BUYER:
        assert value not in masked
        assert value not in json.dumps(api_masked, ensure_ascii=False)
        assert value in revealed_page  # in the event, and in the payload as it was sent
    assert "Reveal buyer data" in masked and "Reveal buyer data" not in revealed_page
    assert "Payload sent" in masked and "slip_code" in masked  # the payload, masked
    reveal = entries[0]
    assert (reveal.action, reveal.delivery_ids, reveal.via) == ("reveal", (row.id,), "page")
    for value in BUYER:
        assert value not in reveal.outcome  # the record says that, never what


async def test_the_events_page_says_why_an_affiliate_got_nothing(
    relay_client: Any, tmp_path: Path
) -> None:
    async with webhook_sink() as sink:
        raw = admin_config_dict(tmp_path, sink.url("/hook"))
        lucia = next(a for a in raw["producers"][0]["affiliates"] if a["code"] == LUCIA)
        lucia["buyer_data"] = False
        client = await relay_client(build_config(raw, tmp_path))
        await post_fixture(client, "billet_printed_oxxo.json")
        await log_in(client)
        (row,) = await relay_of(client).store.history(HistoryFilter())
        page = await (await client.get(f"/admin/events/{row.event_row_id}")).text()
        _, body = await api_json(client, "GET", f"/api/events/{row.event_row_id}")
    assert row.status == "withheld"
    assert "withheld" in page and "buyer_data" in page
    assert [d["status"] for d in body["deliveries"]] == ["withheld"]
    assert "buyer_data" in body["deliveries"][0]["reason"]
    assert body["event"]["buyer"]["email"] == "•••"


async def test_reprocess_queues_an_attempt_that_the_relay_sends_and_records(
    relay_client: Any, tmp_path: Path
) -> None:
    async with webhook_sink() as sink:
        sink.on("/hook", *[status(500)] * 5)
        client = await start(relay_client, tmp_path, sink)
        await post_fixture(client, "billet_printed_oxxo.json")
        await wait_until(lambda: settled(client))
        (row,) = await relay_of(client).store.history(HistoryFilter(status="failed"))
        csrf = await log_in(client)
        resp = await client.post(
            "/admin/replay",
            data={"csrf": csrf, "ids": str(row.id), "return_to": f"/admin/deliveries/{row.id}"},
            allow_redirects=False,
        )
        assert resp.status == 303
        location = resp.headers["Location"]
        assert location.startswith(f"/admin/deliveries/{row.id}?audit=")
        await wait_until(lambda: settled(client))
        assert await attempts_of(client, row.id) == 6
        page = await (await client.get(location)).text()
    assert "Attempt 6: success" in page
    assert f"queued {row.id}" in page  # the notice: what the action did
    (entry,) = [e for e in await relay_of(client).store.audit_log() if e.action == "replay"]
    assert entry.delivery_ids == (row.id,)
    assert entry.via == "page" and entry.remote.startswith("127.0.0.1")


async def test_reprocess_of_a_row_in_flight_is_refused_with_the_reason(
    relay_client: Any, tmp_path: Path
) -> None:
    release = asyncio.Event()

    async def held(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response(text="ok")

    async with webhook_sink() as sink:
        sink.on("/hook", held)
        client = await start(relay_client, tmp_path, sink)
        await post_fixture(client, "billet_printed_oxxo.json")
        await wait_until(lambda: sink.hits)  # the attempt is in flight, holding its lease
        (row,) = await relay_of(client).store.history(HistoryFilter())
        status_code, body = await api_json(client, "POST", f"/api/deliveries/{row.id}/replay")
        csrf = await log_in(client)
        page = await client.post("/admin/replay", data={"csrf": csrf, "ids": str(row.id)})
        text = await page.text()
        release.set()
        await wait_until(lambda: settled(client))
    assert status_code == 409
    assert "being sent right now" in body["details"][0]
    assert "being sent right now" in text
    assert len(sink.hits) == 1  # nothing was sent twice


async def test_reprocess_every_failure_since_a_date(relay_client: Any, tmp_path: Path) -> None:
    async with webhook_sink() as sink:
        sink.on("/hook", *[status(500)] * 10)
        client = await start(relay_client, tmp_path, sink)
        await post_fixture(client, "billet_printed_oxxo.json")
        await post_fixture(client, "billet_printed_baloto.json")
        await wait_until(lambda: settled(client))
        failed = [
            r.id for r in await relay_of(client).store.history(HistoryFilter(status="failed"))
        ]
        csrf = await log_in(client)
        resp = await client.post(
            "/admin/replay-failed",
            data={"csrf": csrf, "since": "2000-01-01"},
            allow_redirects=False,
        )
        assert resp.status == 303
        await wait_until(lambda: settled(client))
        notice = await (await client.get(resp.headers["Location"])).text()
    assert len(failed) == 2
    assert f"queued {', '.join(str(i) for i in sorted(failed))}" in notice
    for delivery_id in failed:
        assert await attempts_of(client, delivery_id) == 6


async def test_send_test_and_toggle_a_destination_from_the_page(
    relay_client: Any, tmp_path: Path
) -> None:
    async with webhook_sink() as sink:
        client = await start(relay_client, tmp_path, sink)
        csrf = await log_in(client)
        key = "acme/K12345678M/crm"
        form = {"csrf": csrf, "producer": "acme", "affiliate": LUCIA, "destination": "crm"}
        resp = await client.post("/admin/send-test", data=form, allow_redirects=False)
        assert resp.status == 303
        await wait_until(lambda: sink.hits)
        assert json.loads(sink.hits[0].body)["test"] is True
        off = await client.post("/admin/destinations/disable", data={"csrf": csrf, "key": key})
        off_page = await off.text()
        on = await client.post("/admin/destinations/enable", data={"csrf": csrf, "key": key})
        on_page = await on.text()
        unknown = await client.post(
            "/admin/destinations/enable", data={"csrf": csrf, "key": "a/b/c"}
        )
        audit = await (await client.get("/admin/audit")).text()
        _, destinations = await api_json(client, "GET", "/api/destinations")
    assert "disabled by an operator" in off_page
    assert f"{key} disabled" in off_page and f"{key} enabled" in on_page
    assert unknown.status == 404
    assert [d["enabled"] for d in destinations["destinations"] if d["key"] == key] == [True]
    for action in ("send-test", "disable", "enable", "login"):
        assert f">{action}<" in audit


async def test_a_test_to_an_affiliate_without_buyer_data_is_refused(
    relay_client: Any, tmp_path: Path
) -> None:
    async with webhook_sink() as sink:
        client = await start(relay_client, tmp_path, sink)
        status_code, body = await api_json(
            client, "POST", "/api/send-test", json={"affiliate": "P0000000NP"}
        )
        assert status_code == 409 and "buyer_data = false" in body["details"][0]
        status_code, body = await api_json(client, "POST", "/api/send-test", json={})
        assert status_code == 400 and body["details"][0]["field"] == "affiliate"
        resp = await client.post("/api/send-test", data=b"{not json", headers=BEARER)
        assert resp.status == 400
