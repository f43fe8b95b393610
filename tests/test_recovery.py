"""Sale recovery (issue 11) through the real app on a real SQLite file, with real peers
(aiosmtpd, an aiohttp webhook sink) and the engine's clock injected: hours pass when the
test moves the clock and wakes the dispatcher, never in real time."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from relay.app import init_app
from relay.config import Config
from relay.engine import Relay
from tests.conftest import relay_of
from tests.peers import SmtpRecorder, WebhookSink, smtp_server, wait_until, webhook_sink
from tests.recovery_kit import (
    DENIED,
    HOUR_MS,
    LUCIA,
    ManualClock,
    approved,
    boleto_slip,
    config_of,
    later,
    notices,
    pix_slip,
    recovery_config,
    rows,
    said,
)
from tests.test_cli import run_cli, write_toml
from tests.test_ingest import post_json

Start = Callable[[Config], Any]


@pytest.fixture
async def peers() -> AsyncIterator[tuple[SmtpRecorder, int, WebhookSink]]:
    async with smtp_server() as (recorder, port), webhook_sink() as sink:
        yield recorder, port, sink


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def start(aiohttp_client: Callable[..., Any], clock: ManualClock) -> Start:
    """Start the real app on the test's clock."""

    async def started(config: Config) -> TestClient[Any, Any]:
        client: TestClient[Any, Any] = await aiohttp_client(init_app(config, clock=clock))
        return client

    return started


async def settled(relay: Relay) -> bool:
    """Nothing due now is waiting: every row is final or scheduled for later."""
    now = relay.clock.now_ms()
    return all(
        row.status != "pending" or (row.next_attempt_at_ms or 0) > now
        for row in await rows(relay.store)
    )


async def move_to(client: Any, clock: ManualClock, hours: float) -> Relay:
    """Let time pass to `hours` after the start, and wake the dispatcher to see it."""
    relay = relay_of(client)
    clock.now = clock.at(hours)
    relay.wake_dispatcher()
    await wait_until(lambda: settled(relay))
    return relay


async def notified(
    start: Start,
    peers: Any,
    clock: ManualClock,
    tmp_path: Path,
    raw: dict[str, Any] | None = None,
    **recovery: Any,
) -> tuple[Any, Any]:
    """The app on `raw` (else `recovery_config` with `recovery`), and a Pix slip that
    expires in 4 h, notified to Lucía at 0 h: (the client, the slip's body)."""
    _, port, sink = peers
    raw = raw or recovery_config(tmp_path, sink, port, **recovery)
    client = await start(config_of(raw, tmp_path))
    slip = pix_slip(expires_at_ms=clock.at(4))
    await post_json(client, slip)
    await move_to(client, clock, 0)
    return client, slip


async def restarted(
    start: Start, peers: Any, clock: ManualClock, tmp_path: Path, hours: float
) -> Relay:
    """The relay started again at `hours`, on the same store, as `notified` configured it."""
    _, port, sink = peers
    clock.now = clock.at(hours)
    client = await start(config_of(recovery_config(tmp_path, sink, port), tmp_path))
    return await move_to(client, clock, hours)


def mail(recorder: SmtpRecorder, code: str = LUCIA) -> list[str]:
    return [str(m["Subject"]) for m in recorder.to(f"{code.lower()}@example.com")]


async def test_a_pix_slip_expiring_in_4h_gets_its_reminder_at_3h(
    start: Start, peers: Any, clock: ManualClock, tmp_path: Path
) -> None:
    recorder, port, sink = peers
    client = await start(config_of(recovery_config(tmp_path, sink, port), tmp_path))
    slip = pix_slip(expires_at_ms=clock.at(4))
    assert (await (await post_json(client, slip)).json())["deliveries"] == 2  # mail and hook
    relay = await move_to(client, clock, 0)
    reminders = await notices(relay.store, "reminder")
    assert [(r.status, r.next_attempt_at_ms) for r in reminders] == [("pending", clock.at(3))] * 2
    assert [b["notification"] for b in said(sink, "slip")] == ["slip"]

    await move_to(client, clock, 2 + 59 / 60)  # a minute early: nothing yet
    assert said(sink, "reminder") == [] and len(recorder.received) == 1

    await move_to(client, clock, 3)
    (reminder,) = said(sink, "reminder")
    (first,) = said(sink, "slip")
    assert reminder["payment"] == first["payment"]  # the same link and code
    assert reminder["payment"]["pix_code"] == slip["data"]["purchase"]["payment"]["pix_code"]
    assert reminder["buyer"]["whatsapp_url"].startswith("https://wa.me/5511987654321?text=")
    hits = sink.at(f"/{LUCIA}")
    assert hits[0].headers["webhook-id"] != hits[1].headers["webhook-id"]  # its own message
    assert mail(recorder) == [
        "Código Pix generado: Método Confeitaria Lucrativa",
        "Recordatorio: el código Pix de Método Confeitaria Lucrativa vence pronto",
    ]
    text = recorder.to("k12345678m@example.com")[1].get_body(("plain",))
    assert text is not None
    assert "vence el " in text.get_content() and "https://wa.me/5511987654321" in text.get_content()
    assert {r.status for r in await notices(relay.store, "reminder")} == {"delivered"}


async def test_paid_at_2h_brings_a_paid_notice_and_no_reminder(
    start: Start, peers: Any, clock: ManualClock, tmp_path: Path
) -> None:
    recorder, _, sink = peers
    client, slip = await notified(start, peers, clock, tmp_path)

    clock.now = clock.at(2)
    reply = await (await post_json(client, approved(slip))).json()
    assert reply["deliveries"] == 2  # the paid notice, by mail and webhook
    relay = await move_to(client, clock, 2)
    (paid,) = said(sink, "paid")
    assert paid["event"] == "PURCHASE_APPROVED" and paid["buyer"]["whatsapp_url"] is None
    assert mail(recorder)[-1] == "Pagado: Método Confeitaria Lucrativa (Pix)"
    cancelled = await notices(relay.store, "reminder")
    assert {(r.status, r.reason) for r in cancelled} == {
        ("cancelled", "paid before the reminder was due (PURCHASE_APPROVED)")
    }

    await move_to(client, clock, 5)
    assert said(sink, "reminder") == []
    assert len(recorder.received) == 2  # the slip and the paid notice, nothing else


async def test_a_canceled_purchase_gets_neither_reminder_nor_notice(
    start: Start, peers: Any, clock: ManualClock, tmp_path: Path
) -> None:
    recorder, _, sink = peers
    client, slip = await notified(start, peers, clock, tmp_path)
    clock.now = clock.at(2)
    await post_json(client, later(slip, "PURCHASE_CANCELED", "CANCELED"))
    relay = await move_to(client, clock, 5)
    assert [b["notification"] for b in said(sink, "slip")] == ["slip"]
    assert len(sink.hits) == 1 and len(recorder.received) == 1
    reasons = {r.reason for r in await notices(relay.store, "reminder")}
    assert reasons == {"canceled before the reminder was due (PURCHASE_CANCELED)"}


async def test_a_restart_between_the_slip_and_the_reminder_loses_nothing(
    start: Start, peers: Any, clock: ManualClock, tmp_path: Path
) -> None:
    recorder, _, sink = peers
    first, _ = await notified(start, peers, clock, tmp_path)
    await first.close()  # drained and stopped: the reminder waits in the store alone
    # The relay was down when the reminder fell due, and starts again at 3.5 h.
    relay = await restarted(start, peers, clock, tmp_path, 3.5)
    assert len(said(sink, "reminder")) == 1
    assert {r.status for r in await notices(relay.store, "reminder")} == {"delivered"}
    assert len(recorder.received) == 2


async def test_a_withheld_affiliate_gets_none_of_it(
    start: Start, peers: Any, clock: ManualClock, tmp_path: Path
) -> None:
    recorder, port, sink = peers
    client = await start(config_of(recovery_config(tmp_path, sink, port), tmp_path))
    slip = pix_slip(expires_at_ms=clock.at(4), affiliate=DENIED)
    await post_json(client, slip)
    relay = await move_to(client, clock, 0)
    assert {r.status for r in await rows(relay.store)} == {"withheld"}
    assert await notices(relay.store, "reminder") == []
    clock.now = clock.at(2)
    await post_json(client, approved(slip))
    await post_json(client, later(slip, "PURCHASE_EXPIRED", "EXPIRED"))
    await move_to(client, clock, 5)
    assert sink.hits == [] and recorder.received == []
    assert await notices(relay.store, "paid") == []


async def test_an_approval_that_arrives_before_the_slip_prevents_the_reminder(
    start: Start, peers: Any, clock: ManualClock, tmp_path: Path
) -> None:
    """Events arrive out of order, and twice: the approval first, the slip after."""
    _, port, sink = peers
    client = await start(config_of(recovery_config(tmp_path, sink, port), tmp_path))
    slip = pix_slip(expires_at_ms=clock.at(4))
    await post_json(client, approved(slip))
    await post_json(client, slip)
    assert (await (await post_json(client, slip)).json())["status"] == "duplicate"
    relay = relay_of(client)
    # Stored cancelled at once, in the slip's own transaction: never pending.
    reminders = await notices(relay.store, "reminder")
    assert [(r.status, r.reason) for r in reminders] == [
        ("cancelled", "paid before the reminder was due (PURCHASE_APPROVED)")
    ] * 2
    await move_to(client, clock, 5)
    assert said(sink, "reminder") == [] and said(sink, "paid") == []  # the slip was not sent then
    assert len(said(sink, "slip")) == 1


async def test_a_reminder_held_when_the_sale_is_paid_is_not_sent(
    start: Start, peers: Any, clock: ManualClock, tmp_path: Path
) -> None:
    """A reminder leased when the approval arrives (another process claimed it, or an
    attempt died holding it) is left alone by ingest; its attempt finds the approval."""
    sink = peers[2]
    client, slip = await notified(start, peers, clock, tmp_path)
    relay = relay_of(client)
    clock.now = clock.at(3)
    held = await relay.store.claim_due(clock.now, clock.now + 60_000, 10, 4, owner="cli:1")
    assert {d.notification for d in held.deliveries} == {"reminder"}
    await post_json(client, approved(slip))
    await wait_until(lambda: len(said(sink, "paid")) == 1)
    assert {r.status for r in await notices(relay.store, "reminder")} == {"pending"}

    await move_to(client, clock, 3 + 2 / 60)  # the lease ran out: the dispatcher takes it
    assert said(sink, "reminder") == [] and len(said(sink, "paid")) == 1
    reminders = await notices(relay.store, "reminder")
    assert {(r.status, r.reason) for r in reminders} == {
        ("cancelled", "paid before the reminder was due (PURCHASE_APPROVED)")
    }


async def test_an_approval_then_its_completion_bring_one_paid_notice(
    start: Start, peers: Any, clock: ManualClock, tmp_path: Path
) -> None:
    _, port, sink = peers
    raw = recovery_config(tmp_path, sink, port)
    raw["producers"][0]["affiliates"][0]["events"].append("PURCHASE_COMPLETE")
    client, slip = await notified(start, peers, clock, tmp_path, raw)
    await post_json(client, approved(slip))
    await move_to(client, clock, 1)
    await post_json(client, later(slip, "PURCHASE_COMPLETE", "COMPLETED"))
    relay = await move_to(client, clock, 2)
    # Lucía subscribes to both: the approval became the paid notice, and the completion
    # arrives as the event it is.
    assert [(b["event"], b["notification"]) for b in said(sink, "paid") + said(sink, "event")] == [
        ("PURCHASE_APPROVED", "paid"),
        ("PURCHASE_COMPLETE", "event"),
    ]
    paid = await notices(relay.store, "paid")
    assert [r.status for r in paid] == ["delivered", "delivered"]  # by mail and webhook
    approvals = await rows(relay.store, event_name="PURCHASE_APPROVED")
    assert len(approvals) == 2  # one row per destination: no generic approval beside it


async def test_an_expired_notice_only_when_the_producer_asks(
    start: Start, peers: Any, clock: ManualClock, tmp_path: Path
) -> None:
    recorder, port, sink = peers
    raw = recovery_config(tmp_path, sink, port, notify_expired=True)
    client, slip = await notified(start, peers, clock, tmp_path, raw)
    clock.now = clock.at(4.5)
    await post_json(client, later(slip, "PURCHASE_EXPIRED", "EXPIRED"))
    relay = await move_to(client, clock, 4.5)
    (expired,) = said(sink, "expired")
    assert expired["buyer"]["whatsapp_url"].startswith("https://wa.me/5511987654321?text=")
    assert mail(recorder)[-1] == ("Código Pix vencido sin pago: Método Confeitaria Lucrativa")
    # The expiry came in before the dispatcher looked again: the reminder due at 3 h
    # was cancelled by it, not sent late.
    assert said(sink, "reminder") == []
    assert {r.status for r in await notices(relay.store, "reminder")} == {"cancelled"}


async def test_no_expired_notice_by_default_and_none_after_a_payment(
    start: Start, peers: Any, clock: ManualClock, tmp_path: Path
) -> None:
    sink = peers[2]
    client, slip = await notified(start, peers, clock, tmp_path)
    await post_json(client, later(slip, "PURCHASE_EXPIRED", "EXPIRED"))
    relay = await move_to(client, clock, 1)
    assert said(sink, "expired") == [] and await notices(relay.store, "expired") == []

    # Asked for, but this sale was paid first: nothing expired.
    asked, paid = await notified(start, peers, clock, tmp_path, notify_expired=True)
    await post_json(asked, approved(paid))
    await post_json(asked, later(paid, "PURCHASE_EXPIRED", "EXPIRED"))
    relay = await move_to(asked, clock, 1)
    assert said(sink, "expired") == [] and await notices(relay.store, "expired") == []


async def test_an_affiliate_who_opts_out_gets_no_reminder_nor_link(
    start: Start, peers: Any, clock: ManualClock, tmp_path: Path
) -> None:
    _, port, sink = peers
    raw = recovery_config(tmp_path, sink, port)
    raw["producers"][0]["affiliates"][0]["recovery"] = False
    client, slip = await notified(start, peers, clock, tmp_path, raw)
    await post_json(client, approved(slip))
    relay = await move_to(client, clock, 5)
    assert await notices(relay.store, "reminder") == []
    assert [b["notification"] for b in said(sink, "slip")] == ["slip"]
    assert said(sink, "slip")[0]["buyer"]["whatsapp_url"] is None
    assert said(sink, "paid") == []  # her subscribed approval stays a plain event
    assert [b["notification"] for b in said(sink, "event")] == ["event"]


async def test_a_boleto_is_reminded_by_its_payment_types_validity(
    start: Start, peers: Any, clock: ManualClock, tmp_path: Path
) -> None:
    """No boleto carries an expiry: `slip_validity.BILLET` after the order date does."""
    _, port, sink = peers
    raw = recovery_config(tmp_path, sink, port, remind_before="6h")
    client = await start(config_of(raw, tmp_path))
    await post_json(client, boleto_slip(order_date_ms=clock.at(-1), transaction="HPB1"))
    relay = await move_to(client, clock, 0)
    reminders = await notices(relay.store, "reminder")
    due = clock.at(-1) + 3 * 24 * HOUR_MS - 6 * HOUR_MS
    assert {r.next_attempt_at_ms for r in reminders} == {due}
    assert "the slip expires " in reminders[0].reason

    await move_to(client, clock, (due - clock.start_ms) / HOUR_MS)
    (reminder,) = said(sink, "reminder")
    assert reminder["payment"]["slip_url"] == "https://hotm.art/bHP0970394859"


async def test_no_reminder_without_an_expiry_or_when_it_is_too_late(
    start: Start, peers: Any, clock: ManualClock, tmp_path: Path
) -> None:
    _, port, sink = peers
    raw = recovery_config(tmp_path, sink, port, slip_validity={})
    client = await start(config_of(raw, tmp_path))
    await post_json(client, boleto_slip(order_date_ms=clock.at(0)))  # no validity: no reminder
    await post_json(client, pix_slip(expires_at_ms=clock.at(0.5), transaction="HP2"))  # < 1h left
    relay = await move_to(client, clock, 0)
    assert await notices(relay.store, "reminder") == []
    assert len(said(sink, "slip")) == 2


async def test_the_gate_and_recovery_are_checked_again_when_a_reminder_falls_due(
    start: Start, peers: Any, clock: ManualClock, tmp_path: Path
) -> None:
    _, port, sink = peers
    raw = recovery_config(tmp_path, sink, port)
    first, _ = await notified(start, peers, clock, tmp_path, raw)  # reminded at 3 h
    await post_json(first, pix_slip(expires_at_ms=clock.at(8), transaction="HP2"))  # at 7 h
    await first.close()

    del raw["recovery"]  # the producer turns sale recovery off
    second = await start(config_of(raw, tmp_path))
    relay = await move_to(second, clock, 3)
    await second.close()
    raw = recovery_config(tmp_path, sink, port)  # on again, but Lucía may no longer see buyers
    raw["producers"][0]["affiliates"][0]["buyer_data"] = False
    third = await start(config_of(raw, tmp_path))
    relay = await move_to(third, clock, 7)

    assert said(sink, "reminder") == []
    reminders = await notices(relay.store, "reminder")
    assert sorted({(r.transaction_code, r.status, r.reason) for r in reminders}) == [
        ("HP0970394999", "skipped", "at send time: sale recovery is off for it"),
        (
            "HP2",
            "withheld",
            "at send time: affiliate is not permitted to see buyer data (buyer_data = false)",
        ),
    ]
    # Withheld when it fell due, it is not sent late by a later grant.
    assert await relay.store.withheld() == []


async def test_a_reminder_due_after_its_slip_expired_is_cancelled(
    start: Start, peers: Any, clock: ManualClock, tmp_path: Path
) -> None:
    sink = peers[2]
    first, _ = await notified(start, peers, clock, tmp_path)
    await first.close()
    # Down from 0 h to 4 h: the slip expired meanwhile, unpaid.
    relay = await restarted(start, peers, clock, tmp_path, 4)
    assert said(sink, "reminder") == []
    (reason,) = {r.reason for r in await notices(relay.store, "reminder")}
    assert reason == "the slip expired before its reminder went out"
    assert {r.status for r in await notices(relay.store, "reminder")} == {"cancelled"}


async def test_the_history_shows_what_each_row_says_and_why_a_reminder_was_cancelled(
    start: Start, peers: Any, clock: ManualClock, tmp_path: Path, capsys: Any
) -> None:
    _, port, sink = peers
    raw = recovery_config(tmp_path, sink, port)
    client, slip = await notified(start, peers, clock, tmp_path, raw)
    await post_json(client, approved(slip))
    await move_to(client, clock, 1)
    path = write_toml(raw, tmp_path / "relay.toml")
    capsys.readouterr()

    assert await run_cli(path, "history", "--notification", "reminder") == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:6] == ["ID", "WHEN", "(UTC)", "STATUS", "EVENT", "NOTICE"]
    assert len(table) == 3 and all(" cancelled " in line for line in table[1:])
    assert all("paid before the reminder was due (PURCHASE_APPROVED)" in x for x in table[1:])

    assert await run_cli(path, "history", "--status", "cancelled", "--json") == 0
    cancelled = json.loads(capsys.readouterr().out)
    assert {(r["notification"], r["event_name"]) for r in cancelled} == {
        ("reminder", "PURCHASE_BILLET_PRINTED")
    }
    assert await run_cli(path, "show", str(cancelled[0]["id"])) == 0
    assert f"delivery {cancelled[0]['id']} (notification, reminder): cancelled" in (
        capsys.readouterr().out
    )
    assert await run_cli(path, "history", "--notification", "paid", "--json") == 0
    assert {r["status"] for r in json.loads(capsys.readouterr().out)} == {"delivered"}
