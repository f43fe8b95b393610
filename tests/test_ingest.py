"""POST {server.path} against the real app and a real SQLite file (SPEC §5)."""

from __future__ import annotations

import copy
import json
import logging
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from relay.records import HistoryFilter
from tests.conftest import HOTTOK, build_config, fixture_json, fixture_text, relay_of

PATH = "/hotmart/webhook"
JSON_FIXTURES = {
    # fixture: (reply status, deliveries to send)
    "billet_printed_oxxo.json": ("accepted", 1),
    "billet_printed_baloto.json": ("accepted", 0),  # K12345678M... no: see below
    "billet_printed_boleto.json": ("accepted", 1),
    "billet_printed_pix.json": ("accepted", 1),
    "purchase_approved_oxxo.json": ("accepted", 1),
    "test_button_billet_printed.json": ("accepted", 0),
    "billet_printed_no_affiliate.json": ("ignored", 0),
}
# Baloto's affiliate is K12345678M too, so it is sent as well.
JSON_FIXTURES["billet_printed_baloto.json"] = ("accepted", 1)


async def post_json(client: Any, body: Any, token: str | None = HOTTOK) -> Any:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["X-HOTMART-HOTTOK"] = token
    data = body if isinstance(body, bytes | str) else json.dumps(body)
    return await client.post(PATH, data=data, headers=headers)


async def rows(client: Any) -> list[Any]:
    return await relay_of(client).store.history(HistoryFilter(limit=1000))


@pytest.mark.parametrize(("name", "expected"), sorted(JSON_FIXTURES.items()))
async def test_every_json_fixture_is_accepted_and_decided(
    relay_client: Any,
    config_dict: dict[str, Any],
    tmp_path: Path,
    name: str,
    expected: tuple[str, int],
) -> None:
    client = await relay_client(build_config(config_dict, tmp_path))
    resp = await post_json(client, fixture_json(name))
    assert resp.status == 200
    body = await resp.json()
    assert body == {
        "status": expected[0],
        "event_id": fixture_json(name)["id"],
        "deliveries": expected[1],
    }
    history = await rows(client)
    assert history, "every event leaves at least one decision row"
    assert all(row.reason for row in history), "every decision says why"


async def test_test_button_is_recorded_with_a_plain_reason(
    relay_client: Any, config_dict: dict[str, Any], tmp_path: Path
) -> None:
    client = await relay_client(build_config(config_dict, tmp_path))
    await post_json(client, fixture_json("test_button_billet_printed.json"))
    (row,) = await rows(client)
    assert row.status == "skipped"
    assert "test button" in row.reason and "CREDIT_CARD" in row.reason


async def test_v1_form_postback_with_token_in_body(
    relay_client: Any, config_dict: dict[str, Any], tmp_path: Path
) -> None:
    client = await relay_client(build_config(config_dict, tmp_path))
    resp = await client.post(
        PATH,
        data=fixture_text("v1_postback_billet_printed.form"),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert resp.status == 200
    assert (await resp.json())["status"] == "accepted"
    (row,) = await rows(client)
    assert row.affiliate_code == "K12345678M"
    assert row.transaction_code == "HP1764271500789"


async def test_token_in_json_body_is_accepted(
    relay_client: Any, config_dict: dict[str, Any], tmp_path: Path
) -> None:
    client = await relay_client(build_config(config_dict, tmp_path))
    body = {**fixture_json("billet_printed_oxxo.json"), "hottok": HOTTOK}
    resp = await post_json(client, body, token=None)
    assert resp.status == 200


@pytest.mark.parametrize("token", [None, "", "wrong-token"])
async def test_missing_or_unknown_token_is_401_and_stores_nothing(
    relay_client: Any, config_dict: dict[str, Any], tmp_path: Path, token: str | None
) -> None:
    client = await relay_client(build_config(config_dict, tmp_path))
    resp = await post_json(client, fixture_json("billet_printed_oxxo.json"), token=token)
    assert resp.status == 401
    assert await rows(client) == []


async def test_unreadable_body_without_any_token_is_401_not_400(
    relay_client: Any, config_dict: dict[str, Any], tmp_path: Path
) -> None:
    client = await relay_client(build_config(config_dict, tmp_path))
    resp = await post_json(client, b"{not json", token=None)
    assert resp.status == 401
    assert await rows(client) == []


async def test_unknown_token_in_body_is_401(
    relay_client: Any, config_dict: dict[str, Any], tmp_path: Path
) -> None:
    client = await relay_client(build_config(config_dict, tmp_path))
    body = {**fixture_json("billet_printed_oxxo.json"), "hottok": "nope"}
    assert (await post_json(client, body, token=None)).status == 401


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"{not json", "(body)"),
        (b"[1, 2]", "(body)"),
        ({"event": "PURCHASE_BILLET_PRINTED", "data": {}}, "id"),
        ({"id": "", "event": "PURCHASE_BILLET_PRINTED"}, "id"),
        ({"id": "abc", "data": {}}, "event"),
    ],
)
async def test_malformed_body_is_400_naming_the_field(
    relay_client: Any, config_dict: dict[str, Any], tmp_path: Path, body: Any, field: str
) -> None:
    client = await relay_client(build_config(config_dict, tmp_path))
    resp = await post_json(client, body)
    assert resp.status == 400
    reply = await resp.json()
    assert reply["error"] == "malformed event"
    assert reply["details"][0]["field"] == field
    assert await rows(client) == []


async def test_v1_without_transaction_is_400(
    relay_client: Any, config_dict: dict[str, Any], tmp_path: Path
) -> None:
    client = await relay_client(build_config(config_dict, tmp_path))
    form = fixture_text("v1_postback_billet_printed.form").replace("transaction=", "x=")
    resp = await client.post(
        PATH, data=form, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert resp.status == 400
    assert (await resp.json())["details"][0]["field"] == "transaction"


async def test_body_over_the_limit_is_413(
    relay_client: Any, config_dict: dict[str, Any], tmp_path: Path
) -> None:
    config_dict["server"] = {"max_body_bytes": 2048}
    client = await relay_client(build_config(config_dict, tmp_path))
    body = {**fixture_json("billet_printed_oxxo.json"), "padding": "x" * 4096}
    assert (await post_json(client, body)).status == 413

    async def chunks() -> Any:  # no Content-Length: aiohttp must still stop at the limit
        for _ in range(8):
            yield b" " * 1024

    resp = await client.post(
        PATH,
        data=chunks(),
        headers={"Content-Type": "application/json", "X-HOTMART-HOTTOK": HOTTOK},
    )
    assert resp.status == 413
    assert await rows(client) == []


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", "multipart/form-data"])
async def test_unsupported_content_type_is_415(
    relay_client: Any, config_dict: dict[str, Any], tmp_path: Path, content_type: str
) -> None:
    client = await relay_client(build_config(config_dict, tmp_path))
    resp = await client.post(
        PATH,
        data=json.dumps(fixture_json("billet_printed_oxxo.json")),
        headers={"Content-Type": content_type, "X-HOTMART-HOTTOK": HOTTOK},
    )
    assert resp.status == 415


async def test_duplicate_answers_duplicate_and_adds_nothing(
    relay_client: Any, config_dict: dict[str, Any], tmp_path: Path
) -> None:
    client = await relay_client(build_config(config_dict, tmp_path))
    first = await post_json(client, fixture_json("billet_printed_oxxo.json"))
    before = await rows(client)
    second = await post_json(client, fixture_json("billet_printed_oxxo.json"))
    assert (await first.json())["status"] == "accepted"
    assert await second.json() == {
        "status": "duplicate",
        "event_id": fixture_json("billet_printed_oxxo.json")["id"],
        "deliveries": 0,
    }
    assert len(await rows(client)) == len(before)


async def test_store_that_cannot_commit_answers_503_then_recovers(
    relay_client: Any, config_dict: dict[str, Any], tmp_path: Path
) -> None:
    config_dict["storage"]["busy_timeout"] = "50ms"
    config = build_config(config_dict, tmp_path)
    client = await relay_client(config)
    # Another process holds the write lock: the commit cannot happen.
    blocker = sqlite3.connect(config.storage.sqlite_path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        resp = await post_json(client, fixture_json("billet_printed_oxxo.json"))
        assert resp.status == 503
        assert (await resp.json())["error"] == "store unavailable"
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    # Hotmart sends again; now it lands, and it is new, not a duplicate.
    resp = await post_json(client, fixture_json("billet_printed_oxxo.json"))
    assert (await resp.json())["status"] == "accepted"


async def test_messy_real_world_payload_is_understood(
    relay_client: Any, config_dict: dict[str, Any], tmp_path: Path
) -> None:
    client = await relay_client(build_config(config_dict, tmp_path))
    body = copy.deepcopy(fixture_json("billet_printed_oxxo.json"))
    body["creationDate"] = body.pop("creation_date")
    body["data"]["subscription"] = "192.168.4.57"
    body["data"]["brand_new_field"] = {"nested": [1, 2]}
    body["data"]["purchase"]["price"]["value"] = "499.00"
    body["data"]["purchase"]["payment"]["billet_barcode"] = (
        "9300 0004 2176 4271 2001 2300 0049 9007"
    )
    del body["data"]["buyer"]
    resp = await post_json(client, body)
    assert resp.status == 200
    assert (await resp.json())["deliveries"] == 1


async def test_healthz(relay_client: Any, config_dict: dict[str, Any], tmp_path: Path) -> None:
    client = await relay_client(build_config(config_dict, tmp_path))
    resp = await client.get("/healthz")
    assert resp.status == 200
    assert (await resp.json())["status"] == "ok"


async def test_no_buyer_pii_reaches_the_logs(
    relay_client: Any,
    config_dict: dict[str, Any],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    client = await relay_client(build_config(config_dict, tmp_path))
    for name in JSON_FIXTURES:
        await post_json(client, fixture_json(name))
    await client.post(
        PATH,
        data=fixture_text("v1_postback_billet_printed.form"),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    await post_json(client, b"{broken")
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "event 6d2b4c1e" in logged  # the ids are there...
    for pii in (
        "maria.gonzalez@example.com",
        "María",
        "Gonz",
        "GOMA900101",
        "1234 5678",
        "ana.souza@example.com",
        "12345678909",
        "Andrés",
        "andres.rojas",
    ):
        assert pii not in logged  # ...the buyer is not


async def test_answers_are_json_with_the_content_type_aiohttp_gave_them(
    relay_client: Any, config_dict: dict[str, Any], tmp_path: Path
) -> None:
    # Written with orjson now; the Content-Type is the one web.json_response sets.
    client = await relay_client(build_config(config_dict, tmp_path))
    answers = [
        await post_json(client, fixture_json("billet_printed_oxxo.json")),
        await post_json(client, b"{broken"),
        await post_json(client, fixture_json("billet_printed_oxxo.json"), token="nope"),
        await client.get("/no-such-page"),
        await client.get("/livez"),
    ]
    assert [a.status for a in answers] == [200, 400, 401, 404, 200]
    for answer in answers:
        assert answer.headers["Content-Type"] == "application/json; charset=utf-8"
        assert isinstance(await answer.json(), dict)
    assert (await answers[3].json()) == {"error": "not found", "details": ["GET /no-such-page"]}
