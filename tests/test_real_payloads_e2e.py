"""Real-shaped and hostile Hotmart bodies through the whole relay: ingest, store,
dispatcher, a real aiosmtpd server and a real webhook receiver verifying signatures."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks import Webhook

from relay.hotmart_payment import CASH_SLIP
from tests.conftest import SECRET, build_config, fixture_json, relay_of
from tests.peers import SmtpRecorder, WebhookSink, smtp_server, wait_until, webhook_sink
from tests.test_delivery import history, settled, wired_config
from tests.test_ingest import post_json


@pytest.fixture
async def wired(
    relay_client: Any, tmp_path: Path
) -> AsyncIterator[tuple[Any, SmtpRecorder, WebhookSink]]:
    async with smtp_server() as (recorder, port), webhook_sink() as sink:
        client = await relay_client(build_config(wired_config(tmp_path, port, sink), tmp_path))
        yield client, recorder, sink


async def post_and_settle(client: Any, body: Any) -> dict[str, Any]:
    resp = await post_json(client, body)
    assert resp.status == 200, await resp.text()
    await wait_until(lambda: settled(client))
    reply: dict[str, Any] = await resp.json()
    return reply


def webhook_body(sink: WebhookSink, path: str) -> dict[str, Any]:
    (hit,) = sink.at(path)
    body: dict[str, Any] = Webhook(SECRET).verify(hit.body.decode(), hit.headers)
    return body


def mail_text(recorder: SmtpRecorder, address: str) -> tuple[str, str]:
    (mail,) = recorder.to(address)
    text = mail.get_body(preferencelist=("plain",))
    assert text is not None
    return str(mail["Subject"]), text.get_content()


@pytest.mark.parametrize(
    ("fixture", "affiliate", "address", "method", "shown_code"),
    [
        (
            "billet_printed_financed_billet.json",
            "P98765432X",
            "joao@example.com",
            "Boleto",
            "23793.38128 60008.234516 96001.234508 8 13240000019970",
        ),
        (
            "billet_printed_cash_co.json",
            "K12345678M",
            "lucia@example.com",
            CASH_SLIP,
            "4150 0000 0176 4271 7006 54",
        ),
    ],
)
async def test_real_shaped_slips_reach_the_affiliate(
    wired: Any, fixture: str, affiliate: str, address: str, method: str, shown_code: str
) -> None:
    client, recorder, sink = wired
    body = fixture_json(fixture)
    assert (await post_and_settle(client, body))["deliveries"] == 2
    sent = webhook_body(sink, f"/{affiliate}")
    assert sent["payment"]["method"] == method
    assert sent["test"] is False
    subject, text = mail_text(recorder, address)
    assert shown_code in text
    assert body["data"]["purchase"]["payment"]["billet_url"] in text
    assert "[" not in subject  # not marked as a test
    assert {row.status for row in await history(client)} == {"delivered"}


async def test_a_hostile_price_still_delivers_the_slip_with_the_price_unknown(
    wired: Any,
) -> None:
    client, recorder, sink = wired
    body = fixture_json("billet_printed_oxxo.json")
    body["data"]["purchase"]["price"]["value"] = "-1E-999999999"
    await post_and_settle(client, body)
    assert webhook_body(sink, "/K12345678M")["purchase"]["price"]["value"] is None
    _, text = mail_text(recorder, "lucia@example.com")
    assert "9300 0004 2176 4271 2001 2300 0049 9007" in text
    rows = await history(client)
    assert {row.status for row in rows} == {"delivered"}
    for row in rows:
        detail = await relay_of(client).store.delivery(row.id)
        assert detail is not None
        assert all(len(a.request_payload) < 64 * 1024 for a in detail.attempts)


async def test_a_malformed_slip_url_costs_only_the_link(wired: Any) -> None:
    client, recorder, sink = wired
    body = fixture_json("billet_printed_oxxo.json")
    body["data"]["purchase"]["payment"]["billet_url"] = "https://pay.hotmart.example[/x"
    await post_and_settle(client, body)
    sent = webhook_body(sink, "/K12345678M")
    assert sent["payment"]["slip_url"] is None
    assert sent["payment"]["slip_code"] == "93000004217642712001230000499007"
    _, text = mail_text(recorder, "lucia@example.com")
    assert "9300 0004 2176 4271 2001 2300 0049 9007" in text
    rows = await history(client)
    assert {(row.status, row.attempts) for row in rows} == {("delivered", 1)}
    health = await relay_of(client).store.destination_health()
    assert all(h.consecutive_failures == 0 for h in health.values())


async def test_anything_sent_for_the_test_button_is_marked_as_a_test(wired: Any) -> None:
    client, recorder, sink = wired
    body = fixture_json("test_button_billet_printed.json")
    body["event"] = "PURCHASE_APPROVED"  # Lucía subscribes to it; the slip event has no slip
    body["data"]["product"]["id"] = "00000"
    body["data"]["affiliates"] = [{"affiliate_code": "K12345678M", "name": "Affiliate name"}]
    await post_and_settle(client, body)
    assert webhook_body(sink, "/K12345678M")["test"] is True
    subject, text = mail_text(recorder, "lucia@example.com")
    assert subject.startswith("[PRUEBA] ")
    assert "PRUEBA: este es un aviso de prueba" in text


async def test_the_test_buttons_slip_event_is_recorded_as_received_fine(wired: Any) -> None:
    client, recorder, sink = wired
    reply = await post_and_settle(client, fixture_json("test_button_billet_printed.json"))
    assert (reply["status"], reply["deliveries"]) == ("accepted", 0)
    rows = await history(client)
    assert rows
    assert all(row.reason.startswith("Hotmart's test button: received fine.") for row in rows)
    assert sink.hits == []
    assert recorder.received == []


async def test_an_integer_id_above_64_bits_is_a_400_that_says_why(wired: Any) -> None:
    client, _, _ = wired
    body = json.dumps(fixture_json("billet_printed_oxxo.json")).replace(
        '"id": "6d2b4c1e-0a3f-4e0b-9c1d-7f5e2a9b8c01"', '"id": 123456789012345678901234567890'
    )
    assert '"id": 1234567890' in body
    resp = await post_json(client, body)
    assert resp.status == 400
    assert (await resp.json())["details"] == [
        {"field": "id", "reason": "a number too large to keep exactly; send it as a string"}
    ]
    assert await history(client) == []
