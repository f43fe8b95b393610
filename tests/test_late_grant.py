"""Late permission (issue 7 §3): a withheld slip is sent once it is allowed, not before.

`relay replay ID` and `relay replay --withheld [--since] [--affiliate]` decide withheld
rows again against the config in force, through `decide()`; the privacy gate still
runs at send time. Real peers: aiosmtpd and an aiohttp sink, a real SQLite file.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks import Webhook

from relay.config import Config
from relay.hotmart import parse_json_event
from relay.instance import single_instance
from relay.records import (
    DeliveryStatus,
    NewDelivery,
    Regrant,
    Replacement,
    WithheldRow,
)
from relay.regrant import plan_regrant
from tests.conftest import SECRET, build_config, fixture_json, key_of, relay_of
from tests.peers import SmtpRecorder, WebhookSink, smtp_server, wait_until, webhook_sink
from tests.test_cli import run_cli, write_toml
from tests.test_delivery import history
from tests.test_ingest import post_json
from tests.test_readiness import app_starter

DENIED = "P0000000NP"  # in the base config with buyer_data = false
STRANGER = "UNKNOWN999"  # in no config until it is added
BUYER = ("maria.gonzalez@example.com", "María González")
NOT_PERMITTED = "affiliate is not permitted to see buyer data (buyer_data = false)"


@pytest.fixture
async def peers() -> AsyncIterator[tuple[SmtpRecorder, int, WebhookSink]]:
    async with smtp_server() as (recorder, port), webhook_sink() as sink:
        yield recorder, port, sink


@pytest.fixture
def serve(aiohttp_client: Callable[..., Any]) -> Callable[[Config], Any]:
    """The real app, woken by SIGUSR1 as `relay serve` is (as in tests/test_replay.py)."""
    return app_starter(aiohttp_client, wake_on_signal=True)


@pytest.fixture
def server_lock(tmp_path: Path) -> Iterator[None]:
    """The lock `relay serve` holds, with this process's pid: the CLI wakes this server."""
    with single_instance(tmp_path / "relay.sqlite3"):
        yield


def smtp_config(raw: dict[str, Any], port: int) -> dict[str, Any]:
    raw = copy.deepcopy(raw)
    raw["email"] = {
        "from": "Relay <relay@example.com>",
        "transport": "smtp",
        "smtp": {"host": "127.0.0.1", "port": port, "pool_size": 1},
    }
    return raw


def affiliate(raw: dict[str, Any], code: str) -> dict[str, Any]:
    found: dict[str, Any] = next(a for a in raw["producers"][0]["affiliates"] if a["code"] == code)
    return found


def slip_for(*codes: str) -> dict[str, Any]:
    payload = fixture_json("billet_printed_oxxo.json")
    payload["data"]["affiliates"] = [{"affiliate_code": code, "name": ""} for code in codes]
    return payload


async def only_row(client: Any, **filters: Any) -> Any:
    (row,) = await history(client, **filters)
    return row


async def settled(client: Any) -> bool:
    rows = await history(client)
    return bool(rows) and all(row.status != "pending" for row in rows)


# --- the brief's "done when" ---------------------------------------------------------------


async def test_a_withheld_slip_is_sent_once_buyer_data_is_on_and_not_before(
    serve: Any,
    server_lock: None,
    peers: tuple[SmtpRecorder, int, WebhookSink],
    config_dict: dict[str, Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    recorder, port, _ = peers
    denied = smtp_config(config_dict, port)
    path = write_toml(denied, tmp_path / "relay.toml")
    client = await serve(build_config(denied, tmp_path))
    await post_json(client, slip_for(DENIED))
    row = await only_row(client)
    assert row.status == "withheld"

    # While buyer_data is off, deciding again keeps it withheld, and nothing is sent.
    capsys.readouterr()
    assert await run_cli(path, "replay", str(row.id)) == 1
    assert await run_cli(path, "replay", "--withheld") == 0
    out = capsys.readouterr().out
    assert f"delivery {row.id}: still withheld: decided again: affiliate is not permitted" in out
    assert (await only_row(client)).status == "withheld"
    assert recorder.received == []

    # The producer turns buyer_data on and restarts the relay: the same slip goes out,
    # sent by the running server (woken), under the same message id it was given.
    await client.close()
    granted = copy.deepcopy(denied)
    affiliate(granted, DENIED)["buyer_data"] = True
    write_toml(granted, path)
    client = await serve(build_config(granted, tmp_path))
    assert await run_cli(path, "replay", str(row.id)) == 0
    assert f"delivery {row.id} -> {row.destination_key}: delivered" in capsys.readouterr().out
    (mail,) = recorder.to("denied@example.com")
    assert mail["Message-ID"].strip("<>").startswith(row.message_id)
    text = mail.get_body(preferencelist=("plain",))
    assert text is not None and all(value in text.get_content() for value in BUYER)
    after = await only_row(client)
    assert (after.id, after.status, after.attempts) == (row.id, "delivered", 1)


async def test_the_gate_runs_again_at_send_time(
    serve: Any,
    server_lock: None,
    peers: tuple[SmtpRecorder, int, WebhookSink],
    config_dict: dict[str, Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The CLI reads a config that grants; the server still runs one that does not (it was
    not restarted): the server withholds the slip when it comes to send it."""
    recorder, port, _ = peers
    denied = smtp_config(config_dict, port)
    client = await serve(build_config(denied, tmp_path))
    await post_json(client, slip_for(DENIED))
    granted = copy.deepcopy(denied)
    affiliate(granted, DENIED)["buyer_data"] = True
    path = write_toml(granted, tmp_path / "relay.toml")
    row = await only_row(client)
    capsys.readouterr()
    assert await run_cli(path, "replay", "--withheld") == 1  # not delivered
    assert "withheld at send time: affiliate is not permitted" in capsys.readouterr().out
    row = await only_row(client)
    assert row.status == "withheld"
    assert row.reason.startswith("at send time: affiliate is not permitted")
    assert recorder.received == []


# --- which rows: --affiliate and --since ---------------------------------------------------


async def test_withheld_rows_are_chosen_by_affiliate_and_age(
    relay_client: Any,
    peers: tuple[SmtpRecorder, int, WebhookSink],
    config_dict: dict[str, Any],
    tmp_path: Path,
) -> None:
    recorder, port, _ = peers
    raw = smtp_config(config_dict, port)
    raw["producers"][0]["affiliates"].append(
        {
            "code": "D1111111NP",
            "destinations": [{"kind": "email", "to": "other@example.com"}],
        }
    )
    client = await relay_client(build_config(raw, tmp_path))
    await post_json(client, slip_for(DENIED))
    old = await only_row(client, affiliate_code=DENIED)
    store = relay_of(client).store
    three_hours_ms = 3 * 3600 * 1000
    await store.run(
        lambda c: c.execute(
            "UPDATE deliveries SET created_at_ms = created_at_ms - ? WHERE id = ?",
            (three_hours_ms, old.id),
        )
    )
    payload = slip_for("D1111111NP")
    payload["id"] = "second-slip"
    await post_json(client, payload)
    for code in (DENIED, "D1111111NP"):
        affiliate(raw, code)["buyer_data"] = True
    path = write_toml(raw, tmp_path / "relay.toml")

    # --since 1h: only the newer slip (D1111111NP's); the older one is left alone.
    assert await run_cli(path, "replay", "--withheld", "--since", "1h") == 0
    assert [m.rcpt_tos for m in recorder.received] == [["other@example.com"]]
    assert (await only_row(client, affiliate_code=DENIED)).status == "withheld"
    # --affiliate: only that affiliate's.
    assert await run_cli(path, "replay", "--withheld", "--affiliate", "NOBODY") == 0
    assert len(recorder.received) == 1
    assert await run_cli(path, "replay", "--withheld", "--affiliate", DENIED) == 0
    assert len(recorder.to("denied@example.com")) == 1
    assert (await only_row(client, affiliate_code=DENIED)).status == "delivered"
    # Nothing withheld is left: a further run does nothing.
    assert await run_cli(path, "replay", "--withheld") == 0
    assert len(recorder.received) == 2


@pytest.mark.parametrize(
    "args",
    [
        ("--withheld", "--failed"),
        ("--affiliate", DENIED),
        ("--failed", "--affiliate", DENIED),
        ("1", "--withheld"),
        ("1", "--since", "1h"),
    ],
)
async def test_replay_options_that_do_not_go_together(
    config_dict: dict[str, Any],
    tmp_path: Path,
    args: tuple[str, ...],
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = write_toml(config_dict, tmp_path / "relay.toml")
    assert await run_cli(path, "replay", *args) == 2
    assert "--withheld [--since WHEN] [--affiliate CODE]" in capsys.readouterr().err


# --- an affiliate that had nowhere to send, and now has ------------------------------------


@pytest.mark.parametrize("before", ["unknown", "no destinations"])
async def test_a_withheld_row_without_a_destination_becomes_one_row_per_destination(
    relay_client: Any,
    peers: tuple[SmtpRecorder, int, WebhookSink],
    config_dict: dict[str, Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    before: str,
) -> None:
    recorder, port, sink = peers
    raw = smtp_config(config_dict, port)
    if before == "no destinations":
        raw["producers"][0]["affiliates"].append({"code": STRANGER, "destinations": []})
    client = await relay_client(build_config(raw, tmp_path))
    await post_json(client, slip_for(STRANGER))
    old = await only_row(client)
    assert (old.status, old.destination_key) == ("withheld", None)

    raw["producers"][0]["affiliates"] = [
        a for a in raw["producers"][0]["affiliates"] if a["code"] != STRANGER
    ]
    raw["producers"][0]["affiliates"].append(
        {
            "code": STRANGER,
            "buyer_data": True,
            "destinations": [
                {"kind": "email", "to": "stranger@example.com"},
                {"kind": "webhook", "id": "crm", "url": sink.url("/crm"), "secret": SECRET},
            ],
        }
    )
    path = write_toml(raw, tmp_path / "relay.toml")
    capsys.readouterr()
    assert await run_cli(path, "replay", str(old.id)) == 0
    out = capsys.readouterr().out

    rows = {r.id: r for r in await history(client)}
    new_ids = sorted(set(rows) - {old.id})
    assert len(new_ids) == 2
    # The old row says what it became; the new rows were sent.
    assert rows[old.id].status == "superseded"
    listed = ", ".join(f"delivery {i} (pending)" for i in new_ids)
    assert rows[old.id].reason == f"decided again: replaced by {listed}"
    assert f"delivery {old.id}: decided again, replaced by deliveries" in out
    assert {(rows[i].channel, rows[i].status) for i in new_ids} == {
        ("email", "delivered"),
        ("webhook", "delivered"),
    }
    assert {rows[i].destination_key for i in new_ids} >= {f"acme/{STRANGER}/crm"}
    (mail,) = recorder.to("stranger@example.com")
    (hit,) = sink.at("/crm")
    body = Webhook(SECRET).verify(hit.body.decode(), hit.headers)
    assert body["buyer"]["email"] == BUYER[0]

    # Deciding again once more adds nothing: the superseded row is final.
    assert await run_cli(path, "replay", "--withheld") == 0
    assert await run_cli(path, "replay", str(old.id)) == 1
    assert len(await history(client)) == 3
    assert len(recorder.received) == 1 and len(sink.hits) == 1


async def test_a_granted_affiliate_not_subscribed_stays_withheld_with_the_new_reason(
    relay_client: Any, config_dict: dict[str, Any], tmp_path: Path
) -> None:
    client = await relay_client(build_config(config_dict, tmp_path))
    await post_json(client, slip_for(DENIED))
    affiliate(config_dict, DENIED).update(buyer_data=True, events=["PURCHASE_APPROVED"])
    path = write_toml(config_dict, tmp_path / "relay.toml")
    assert await run_cli(path, "replay", "--withheld") == 0
    row = await only_row(client)
    assert row.status == "withheld"
    assert row.reason == "decided again: event PURCHASE_BILLET_PRINTED is not subscribed"
    assert not (tmp_path / "mail" / "new").exists()


# --- the store's part: only withheld rows move, and never twice ----------------------------


async def test_regrant_moves_only_withheld_rows_and_adds_no_second_row(
    relay_client: Any, config_dict: dict[str, Any], tmp_path: Path
) -> None:
    """Another replay may have decided a row meanwhile; an event may have a row already."""
    client = await relay_client(build_config(config_dict, tmp_path))
    await post_json(client, slip_for("K12345678M", STRANGER))
    await wait_until(lambda: settled(client))
    sent = await only_row(client, status="delivered")
    withheld = await only_row(client, status="withheld")
    store = relay_of(client).store
    (event_row_id,) = await store.run(
        lambda c: c.execute("SELECT event_id FROM deliveries LIMIT 1").fetchone()
    )

    def new_row(key: str | None) -> NewDelivery:
        return NewDelivery(DeliveryStatus.PENDING, "r", "msg_x", STRANGER, key, "email")

    result = await store.regrant(
        [Regrant(sent.id, DeliveryStatus.PENDING, "x", "email")],
        [
            # The delivered row is not withheld: nothing replaces it.
            Replacement((sent.id,), event_row_id, (new_row(f"acme/{STRANGER}/new"),)),
            # The event already has a row for this destination: no second one.
            Replacement((withheld.id,), event_row_id, (new_row(sent.destination_key),)),
        ],
        now_ms=1,
    )
    assert (result.pending, result.withheld, result.replaced) == ([], [], [])
    assert {(r.id, r.status, r.reason) for r in await history(client)} == {
        (sent.id, sent.status, sent.reason),
        (withheld.id, withheld.status, withheld.reason),
    }


async def test_withheld_rows_are_read_a_page_at_a_time_and_new_rows_never_twice(
    relay_client: Any,
    config_dict: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("relay.operations.REGRANT_PAGE_ROWS", 2)
    client = await relay_client(build_config(config_dict, tmp_path))
    for n in range(5):
        payload = slip_for(STRANGER)
        payload["id"] = f"slip-{n}"
        await post_json(client, payload)
    config_dict["producers"][0]["affiliates"].append(
        {
            "code": STRANGER,
            "buyer_data": True,
            "destinations": [{"kind": "email", "to": "stranger@example.com"}],
        }
    )
    path = write_toml(config_dict, tmp_path / "relay.toml")
    assert await run_cli(path, "replay", "--withheld") == 0
    rows = await history(client)
    assert sorted(r.status for r in rows) == ["delivered"] * 5 + ["superseded"] * 5
    assert len(list((tmp_path / "mail" / "new").iterdir())) == 5


# --- the plan, purely ----------------------------------------------------------------------


def withheld_row(
    row_id: int, key: str | None, payload: str, *, producer: str = "acme", code: str = DENIED
) -> WithheldRow:
    """A withheld row of an event of its own (event row id = row id)."""
    keys = frozenset({key} if key else set())
    return WithheldRow(row_id, row_id, producer, code, key, payload, keys)


def test_the_plan_keeps_rows_withheld_when_nothing_can_be_sent(
    config_dict: dict[str, Any], tmp_path: Path
) -> None:
    config_dict["producers"][0]["affiliates"].append(
        {"code": "D1111111NP", "destinations": [{"kind": "email", "to": "d@example.com"}]}
    )
    config = build_config(config_dict, tmp_path)
    event = parse_json_event(slip_for(DENIED, "D1111111NP", STRANGER)).model_dump_json()
    regrants, replacements = plan_regrant(
        config,
        [
            withheld_row(1, None, event, producer="gone"),
            withheld_row(2, None, event[:20]),  # a stored payload that is not an event
            withheld_row(3, f"acme/{DENIED}/removed", event),  # its destination is gone
            withheld_row(4, None, event, code="D1111111NP"),  # was unknown; known, not granted
            withheld_row(5, None, event, code=STRANGER),  # still unknown
        ],
    )
    assert replacements == []
    again = "decided again: "
    assert [(r.delivery_id, r.status, r.reason.removeprefix(again)) for r in regrants] == [
        (1, DeliveryStatus.WITHHELD, "producer gone is no longer in the config"),
        (2, DeliveryStatus.WITHHELD, "its stored event cannot be read"),
        (3, DeliveryStatus.WITHHELD, NOT_PERMITTED),
        (4, DeliveryStatus.WITHHELD, NOT_PERMITTED),
        (
            5,
            DeliveryStatus.WITHHELD,
            f"unknown affiliate {STRANGER}: not in producer acme's config",
        ),
    ]


def test_the_plan_says_when_a_destination_is_gone_and_the_rest_have_rows(
    config_dict: dict[str, Any], tmp_path: Path
) -> None:
    affiliate(config_dict, DENIED)["buyer_data"] = True
    config = build_config(config_dict, tmp_path)
    event = parse_json_event(slip_for(DENIED)).model_dump_json()
    current = key_of(config_dict, DENIED)
    gone = f"acme/{DENIED}/removed"
    row = WithheldRow(1, 1, "acme", DENIED, gone, event, frozenset({gone, current}))
    regrants, replacements = plan_regrant(config, [row])
    assert replacements == []
    assert [r.reason for r in regrants] == [
        f"decided again: destination {gone} is no longer in the config"
    ]
