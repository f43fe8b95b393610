"""Ingest under hostile or broken input, spoken to over raw sockets; and what it logs."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any
from urllib.parse import quote

import pytest

from relay.records import HistoryFilter
from tests.conftest import HOTTOK, build_config, fixture_json, fixture_text, relay_of
from tests.test_ingest import PATH, post_json

FORM = "application/x-www-form-urlencoded"


async def raw_request(client: Any, head: bytes, body: bytes = b"") -> tuple[int, bytes, bytes]:
    """Send bytes exactly as given (aiohttp's client would refuse them); parse the reply."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    try:
        writer.write(
            b"POST "
            + PATH.encode()
            + b" HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n"
            + head
            + b"Content-Length: %d\r\n\r\n" % len(body)
            + body
        )
        reply = await asyncio.wait_for(reader.read(), timeout=30)
    finally:
        writer.close()
    status_line, _, rest = reply.partition(b"\r\n")
    headers, _, payload = rest.partition(b"\r\n\r\n")
    return int(status_line.split()[1]), headers, payload


async def stored(client: Any) -> list[Any]:
    return await relay_of(client).store.history(HistoryFilter(limit=100))


@pytest.mark.parametrize(
    "token",
    [b"\xff\xfe\xfd", b"t\xc3\xb6k\xc3\xa9n", b"caf\xe9", b"\xed\xa0\x80"],
    ids=["not-utf8", "non-ascii-utf8", "latin1", "surrogate"],
)
async def test_a_hottok_header_with_odd_bytes_is_a_json_401_never_a_500(
    relay_client: Any, config_dict: dict[str, Any], tmp_path: Any, token: bytes
) -> None:
    client = await relay_client(build_config(config_dict, tmp_path))
    body = json.dumps(fixture_json("billet_printed_oxxo.json")).encode()
    status, headers, payload = await raw_request(
        client,
        b"Content-Type: application/json\r\nX-HOTMART-HOTTOK: " + token + b"\r\n",
        body,
    )
    assert status == 401
    assert b"application/json" in headers
    assert json.loads(payload)["error"] == "unauthorized"
    assert await stored(client) == []


async def test_a_body_that_cannot_be_decoded_is_a_json_400_with_a_token_401_without(
    relay_client: Any, config_dict: dict[str, Any], tmp_path: Any
) -> None:
    client = await relay_client(build_config(config_dict, tmp_path))
    garbage = b"this is not gzip at all"
    head = b"Content-Type: application/json\r\nContent-Encoding: gzip\r\n"
    status, headers, payload = await raw_request(
        client, head + b"X-HOTMART-HOTTOK: " + HOTTOK.encode() + b"\r\n", garbage
    )
    assert status == 400
    assert b"application/json" in headers
    assert json.loads(payload)["details"][0]["field"] == "(body)"
    status, _, payload = await raw_request(client, head, garbage)
    assert status == 401  # a stranger learns nothing of the format
    assert json.loads(payload)["error"] == "unauthorized"
    assert await stored(client) == []


def latin1_form(token: str = HOTTOK) -> str:
    """The v1 fixture with the buyer's name percent-encoded in Latin-1, not UTF-8."""
    form = fixture_text("v1_postback_billet_printed.form").replace(
        "hottok=test-hottok-acme", f"hottok={quote(token)}"
    )
    return form.replace("name=Mar%C3%ADa+Gonz%C3%A1lez", "name=Mar%EDa+Gonz%E1lez")


async def test_a_v1_form_that_is_not_utf8_is_400_when_its_own_token_is_valid(
    relay_client: Any, config_dict: dict[str, Any], tmp_path: Any
) -> None:
    client = await relay_client(build_config(config_dict, tmp_path))
    resp = await client.post(PATH, data=latin1_form(), headers={"Content-Type": FORM})
    assert resp.status == 400
    reply = await resp.json()
    assert reply["error"] == "malformed event"
    assert "not UTF-8" in reply["details"][0]["reason"]
    assert reply["details"][0]["field"] == "name"

    # The same bytes raw, not percent-encoded.
    raw = (
        fixture_text("v1_postback_billet_printed.form")
        .encode()
        .replace(b"name=Mar%C3%ADa", b"name=Mar\xeda")
    )
    status, _, payload = await raw_request(client, f"Content-Type: {FORM}\r\n".encode(), raw)
    assert status == 400
    assert "not UTF-8" in json.loads(payload)["details"][0]["reason"]
    assert await stored(client) == []


async def test_a_v1_form_that_is_not_utf8_is_401_without_a_valid_token(
    relay_client: Any, config_dict: dict[str, Any], tmp_path: Any
) -> None:
    client = await relay_client(build_config(config_dict, tmp_path))
    resp = await client.post(PATH, data=latin1_form("wrong"), headers={"Content-Type": FORM})
    assert resp.status == 401
    no_token = latin1_form().replace(f"hottok={HOTTOK}&", "")
    resp = await client.post(PATH, data=no_token, headers={"Content-Type": FORM})
    assert resp.status == 401
    assert (await resp.json())["details"] == ["missing hottok"]


def logged(caplog: pytest.LogCaptureFixture, level: int = logging.INFO) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= level]


async def test_every_rejection_is_logged_with_reason_and_address_never_token_or_body(
    relay_client: Any,
    config_dict: dict[str, Any],
    tmp_path: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    config_dict["server"] = {"max_body_bytes": 4096}
    client = await relay_client(build_config(config_dict, tmp_path))
    caplog.set_level(logging.INFO)
    secret_body = {**fixture_json("billet_printed_oxxo.json"), "marker": "BODY-MARKER-123"}
    await post_json(client, secret_body, token="WRONG-TOKEN-456")  # 401
    await post_json(client, secret_body, token=None)  # 401, missing
    await post_json(client, {"event": "X", "marker": "BODY-MARKER-123"})  # 400
    await post_json(client, {**secret_body, "pad": "x" * 8192})  # 413
    await client.post(PATH, data="BODY-MARKER-123", headers={"Content-Type": "text/plain"})  # 415

    lines = logged(caplog, logging.WARNING)
    for status in ("401", "400", "413", "415"):
        assert any(f"rejected {status}" in line and "127.0.0.1" in line for line in lines), (
            status,
            lines,
        )
    assert any("unknown X-HOTMART-HOTTOK" in line for line in lines)
    assert any("missing hottok" in line for line in lines)
    assert any("id: missing" in line for line in lines)  # the 400 names the field and why
    everything = "\n".join(logged(caplog, logging.DEBUG))
    assert "WRONG-TOKEN-456" not in everything
    assert HOTTOK not in everything
    assert "BODY-MARKER-123" not in everything


async def test_the_accepted_line_is_debug_and_gives_the_outcome_of_each_decision(
    relay_client: Any,
    config_dict: dict[str, Any],
    tmp_path: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # One INFO line per request cost ingest about 4.5% of its time (issue 10): the facts
    # are counted for /metrics (relay_events_total, relay_deliveries_total), and the line
    # is there at DEBUG for whoever needs to follow one event.
    client = await relay_client(build_config(config_dict, tmp_path))
    caplog.set_level(logging.INFO, logger="relay.ingest")
    caplog.clear()  # what the relay said as it started
    await post_json(client, fixture_json("billet_printed_oxxo.json"))
    assert [r for r in caplog.records if r.name == "relay.ingest"] == []
    caplog.set_level(logging.DEBUG, logger="relay.ingest")
    body = fixture_json("billet_printed_oxxo.json")
    body["id"] = "another-event"
    body["data"]["affiliates"] = [
        {"affiliate_code": "K12345678M", "name": "x"},
        {"affiliate_code": "P0000000NP", "name": "y"},
        {"affiliate_code": "Z999", "name": "z"},
    ]
    await post_json(client, body)
    await post_json(client, body)
    await post_json(client, fixture_json("billet_printed_no_affiliate.json"))
    lines = logged(caplog, logging.DEBUG)
    event_id = body["id"]
    assert (
        f"event {event_id} PURCHASE_BILLET_PRINTED from acme: accepted; "
        "K12345678M/email pending, P0000000NP/email withheld, Z999 withheld"
    ) in lines
    assert f"event {event_id} PURCHASE_BILLET_PRINTED from acme: duplicate" in lines
    assert any(line.endswith("ignored; no affiliate") for line in lines), lines


async def test_a_body_that_never_finishes_gets_a_json_408(
    relay_client: Any, config_dict: dict[str, Any], tmp_path: Any
) -> None:
    config_dict["server"] = {"body_timeout": "200ms"}
    client = await relay_client(build_config(config_dict, tmp_path))
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    try:
        writer.write(
            b"POST " + PATH.encode() + b" HTTP/1.1\r\nHost: relay\r\n"
            b"Content-Type: application/json\r\nX-HOTMART-HOTTOK: " + HOTTOK.encode() + b"\r\n"
            b'Content-Length: 1000\r\n\r\n{"id": '
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=30)
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        payload = await reader.readexactly(length)
    finally:
        writer.close()
    assert head.startswith(b"HTTP/1.1 408")
    assert b"connection: close" in head.lower()
    assert json.loads(payload)["error"] == "request timeout"
    assert await stored(client) == []


async def test_unknown_paths_and_methods_answer_in_json(
    relay_client: Any, config_dict: dict[str, Any], tmp_path: Any
) -> None:
    client = await relay_client(build_config(config_dict, tmp_path))
    missing = await client.get("/no/such/path")
    assert missing.status == 404
    assert await missing.json() == {"error": "not found", "details": ["GET /no/such/path"]}
    wrong = await client.get(PATH)
    assert wrong.status == 405
    assert "POST" in wrong.headers["Allow"]
    assert (await wrong.json())["error"] == "method not allowed"
