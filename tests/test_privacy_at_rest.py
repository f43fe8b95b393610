"""Privacy at rest (issue 7 §4): buyer data is stored only where a delivery may need it.

An event whose every decision is `ignored` (a direct sale) or `skipped` (not
subscribed, out of scope) can never be sent to anyone, so its buyer is not stored at
all. One with a `withheld` decision keeps its buyer, for a late grant. The proof reads
the SQLite file's bytes, its write-ahead log included, the way someone holding a copy
of the disk would.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from relay.hotmart import parse_json_event
from tests.conftest import build_config, fixture_json, relay_of
from tests.test_delivery import history
from tests.test_ingest import post_json


def with_buyer(payload: dict[str, Any], n: int, *affiliates: str) -> dict[str, Any]:
    """The payload with a buyer of its own (so each event is checked on its own)."""
    payload["id"] = f"privacy-{n}"
    payload["data"]["buyer"].update(
        email=f"buyer{n}.secret@example.com",
        name=f"Zoë Quintana{n}",
        checkout_phone=f"+52 55 9{n}77 6655",
    )
    payload["data"]["affiliates"] = [{"affiliate_code": code, "name": ""} for code in affiliates]
    return payload


def buyer_values(payload: dict[str, Any]) -> list[str]:
    """What the relay would store of this buyer: the values as sent and as parsed."""
    sent = payload["data"]["buyer"]
    buyer = parse_json_event(payload).buyer
    assert buyer is not None
    return [sent["email"], sent["name"], sent["checkout_phone"], buyer.phone, buyer.name]


def stored_bytes(db: Path) -> bytes:
    """The database file with its WAL and shared memory: everything SQLite wrote."""
    return b"".join(
        path.read_bytes()
        for path in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm"))
        if path.exists()
    )


def found_in(data: bytes, value: str) -> bool:
    # Raw UTF-8 as the payload JSON holds it, and JSON's \u escapes, in case of either.
    escaped = value.encode("ascii", "backslashreplace").replace(b"\\x", b"\\u00")
    return value.encode() in data or escaped in data


async def test_no_buyer_is_stored_for_events_no_delivery_can_need(
    relay_client: Any, config_dict: dict[str, Any], tmp_path: Path
) -> None:
    client = await relay_client(build_config(config_dict, tmp_path))
    direct_sale = with_buyer(fixture_json("billet_printed_no_affiliate.json"), 1)
    direct_sale["data"]["affiliates"] = [{"affiliate_code": "", "name": ""}]
    # João is subscribed to slips only: an approval naming him is skipped.
    unsubscribed = with_buyer(fixture_json("purchase_approved_oxxo.json"), 2, "P98765432X")
    for payload in (direct_sale, unsubscribed):
        assert (await post_json(client, payload)).status == 200
    assert sorted(r.status for r in await history(client)) == ["ignored", "skipped"]
    # The event is still recorded, just without its buyer.
    detail = await relay_of(client).store.delivery((await history(client))[0].id)
    assert detail is not None and '"buyer":null' in detail.event_payload_json

    data = stored_bytes(tmp_path / "relay.sqlite3")
    assert b"privacy-1" in data and b"privacy-2" in data  # the scan sees what was stored
    for payload in (direct_sale, unsubscribed):
        leaked = [value for value in buyer_values(payload) if found_in(data, value)]
        assert leaked == []


async def test_a_withheld_event_keeps_its_buyer_for_a_late_grant(
    relay_client: Any, config_dict: dict[str, Any], tmp_path: Path
) -> None:
    client = await relay_client(build_config(config_dict, tmp_path))
    # P0000000NP may not see buyer data: withheld, and the buyer kept for a later grant.
    withheld = with_buyer(fixture_json("billet_printed_oxxo.json"), 3, "P0000000NP")
    assert (await post_json(client, withheld)).status == 200
    assert [r.status for r in await history(client)] == ["withheld"]
    data = stored_bytes(tmp_path / "relay.sqlite3")
    assert all(found_in(data, value) for value in buyer_values(withheld))
