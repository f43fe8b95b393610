"""The admin page's edges: what is not there, what cannot be read, a store that fails,
an alert among the events, a buyer-less event, the Withheld row decided again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from relay.records import HistoryFilter
from relay.store import StoreUnavailable
from tests.admin.admin_kit import BEARER, LUCIA, admin_config_dict, api_json, log_in, post_fixture
from tests.conftest import build_config, relay_of
from tests.peers import status, wait_until, webhook_sink
from tests.test_delivery import settled

TOO_LARGE_ID = "9999999999999999999"  # 19 digits, past any row id


async def test_what_is_not_there_is_a_404_or_a_way_home(relay_client: Any, tmp_path: Path) -> None:
    client = await relay_client(build_config(admin_config_dict(tmp_path), tmp_path))
    await log_in(client)
    for path in ("/admin", "/admin/"):
        resp = await client.get(path, allow_redirects=False)
        assert resp.status == 303 and resp.headers["Location"] == "/admin/deliveries"
    for path in (
        "/admin/static/nope.css",
        "/admin/deliveries/5",
        f"/admin/deliveries/{TOO_LARGE_ID}",
        "/admin/events/5",
    ):
        assert (await client.get(path)).status == 404, path
    for path in ("/api/deliveries/5", "/api/events/5", f"/api/events/{TOO_LARGE_ID}"):
        status_code, body = await api_json(client, "GET", path)
        assert status_code == 404 and body["error"] == "not found", path
    css = await client.get("/admin/static/admin.css")
    assert css.status == 200 and css.content_type == "text/css"
    resp = await client.put("/api/deliveries", headers=BEARER)
    assert resp.status == 405 and (await resp.json())["error"] == "method not allowed"


async def test_forms_missing_what_they_need_say_so(relay_client: Any, tmp_path: Path) -> None:
    client = await relay_client(build_config(admin_config_dict(tmp_path), tmp_path))
    csrf = await log_in(client)
    for path, data, says in (
        ("/admin/replay", {"ids": "x"}, "Nothing selected"),
        ("/admin/replay-failed", {"since": "banana"}, "Not a date"),
        ("/admin/send-test", {}, "No affiliate"),
    ):
        resp = await client.post(path, data={"csrf": csrf, **data})
        assert resp.status == 400 and says in await resp.text(), path
    status_code, body = await api_json(client, "POST", "/api/replay", json={"ids": [0]})
    assert status_code == 400 and body["details"][0]["field"] == "ids.0"
    status_code, body = await api_json(client, "GET", "/api/audit?cursor=x")
    assert status_code == 400


async def test_a_store_that_fails_is_a_503_page_and_answer(
    relay_client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await relay_client(build_config(admin_config_dict(tmp_path), tmp_path))
    await log_in(client)

    async def unavailable(*args: Any, **kwargs: Any) -> Any:
        raise StoreUnavailable("sqlite: disk I/O error")

    monkeypatch.setattr(relay_of(client).store, "history", unavailable)
    page = await client.get("/admin/deliveries")
    assert page.status == 503 and "Store unavailable" in await page.text()
    assert page.headers["X-Frame-Options"] == "DENY"
    status_code, body = await api_json(client, "GET", "/api/deliveries")
    assert status_code == 503 and body["error"] == "store unavailable"


async def test_an_alert_and_a_buyerless_event_show_as_they_are(
    relay_client: Any, tmp_path: Path
) -> None:
    async with webhook_sink() as sink:
        sink.on("/hook", status(410))  # gone: the destination is disabled, the producer told
        client = await relay_client(
            build_config(admin_config_dict(tmp_path, sink.url("/hook")), tmp_path)
        )
        await post_fixture(client, "billet_printed_oxxo.json")
        await post_fixture(client, "test_button_billet_printed.json")  # skipped: no slip
        await wait_until(lambda: settled(client))
        rows = await relay_of(client).store.history(HistoryFilter())
        alert = next(r for r in rows if r.kind == "alert")
        skipped = next(r for r in rows if r.status == "skipped")
        _, event = await api_json(client, "GET", f"/api/events/{alert.event_row_id}")
        _, detail = await api_json(client, "GET", f"/api/deliveries/{skipped.id}")
        csrf = await log_in(client)
        page = await client.get(f"/admin/deliveries/{alert.id}")
        reveal = await client.post(
            f"/admin/events/{skipped.event_row_id}/reveal", data={"csrf": csrf}
        )
    assert event["event"]["payload"]["destination_key"] == f"acme/{LUCIA}/crm"
    assert event["event"]["buyer"] is None
    assert detail["event"]["buyer"] is None and detail["event"]["test"] is True
    assert page.status == 200 and "DESTINATION_DISABLED" in await page.text()
    assert reveal.status == 200
    (entry, *_) = await relay_of(client).store.audit_log()
    assert entry.action == "reveal" and entry.delivery_ids == (skipped.id,)


async def test_replay_through_the_api_queues_a_failed_delivery_and_keeps_who_asked(
    relay_client: Any, tmp_path: Path
) -> None:
    async with webhook_sink() as sink:
        sink.on("/hook", *[status(500)] * 5)
        client = await relay_client(
            build_config(admin_config_dict(tmp_path, sink.url("/hook")), tmp_path)
        )
        await post_fixture(client, "billet_printed_oxxo.json")
        await wait_until(lambda: settled(client))
        resp = await client.post(
            "/api/deliveries/1/replay",
            headers={**BEARER, "X-Forwarded-For": "203.0.113.9,\tforged"},
        )
        body = await resp.json()
        await wait_until(lambda: settled(client))
    assert resp.status == 202 and body["queued"] == [1]
    (entry,) = [e for e in await relay_of(client).store.audit_log() if e.action == "replay"]
    assert entry.via == "api"
    assert entry.remote == "127.0.0.1 (X-Forwarded-For: 203.0.113.9,\\tforged)"


async def test_a_withheld_row_is_decided_again_and_says_so(
    relay_client: Any, tmp_path: Path
) -> None:
    raw = admin_config_dict(tmp_path)
    lucia = next(a for a in raw["producers"][0]["affiliates"] if a["code"] == LUCIA)
    lucia["buyer_data"] = False
    client = await relay_client(build_config(raw, tmp_path))
    await post_fixture(client, "billet_printed_oxxo.json")
    status_code, body = await api_json(client, "POST", "/api/replay", json={"ids": [1]})
    assert status_code == 202
    assert body["queued"] == [] and [r["id"] for r in body["still_withheld"]] == [1]
    assert "still withheld" in body["message"]
