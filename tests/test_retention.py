"""Retention: `relay purge` and the daily purge forget buyer data, keep delivery facts.

The proof is a scan of the SQLite files' bytes (main file and WAL) after a purge: no
email, phone, name, slip code or link of a purged event is left in them, while events
inside the retention window keep theirs. Times are set explicitly; nothing sleeps.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import web

from relay.alerts import DestinationDisabled
from relay.config import Config
from relay.decide import decide
from relay.durations import duration_text
from relay.engine import open_relay, running
from relay.hotmart import Event, parse_json_event
from relay.hotmart_payment import Payment
from relay.outbox import decided_rows, new_event
from relay.records import (
    AttemptRecord,
    AttemptResolution,
    DeliveryStatus,
    HealthEffect,
    HistoryFilter,
    NewAlert,
    ScrubbedEvent,
    ScrubCandidate,
)
from relay.retention import (
    KEPT_EVENT_FIELDS,
    KEPT_PAYMENT_FIELDS,
    SCRUBBED_EVENT_FIELDS,
    SCRUBBED_PAYMENT_FIELDS,
    PurgeReport,
    purge,
    run_daily,
    scrubbed_payload,
)
from relay.store import StoreUnavailable
from relay.store.sqlite import SqliteStore, open_sqlite_store
from relay.store.sqlite_connection import UnitConnection
from relay.supervisor import Supervisor
from tests.conftest import SECRET, build_config, fixture_json
from tests.peers import WebhookSink, wait_until, webhook_sink
from tests.test_cli import run_cli, write_toml

DAY_MS = 86_400_000
NOW_MS = 1_800_000_000_000  # a fixed "now" for the store-level tests
AFFILIATE = "W0000000WH"
WAIT_MS = 100  # how long a purge here waits for a reader elsewhere to let go of the WAL


def slip_body(tag: str, number: int) -> dict[str, Any]:
    """A Pix slip for AFFILIATE whose buyer and slip values are unique to `tag`."""
    body = fixture_json("billet_printed_pix.json")
    body["id"] = f"evt-{tag}"
    data = body["data"]
    data["affiliates"] = [{"affiliate_code": AFFILIATE, "name": "Wanda"}]
    data["buyer"].update(
        email=f"buyer.{tag}@example.com",
        name=f"Comprador {tag.title()} Ñandú",
        checkout_phone_code="",
        checkout_phone=f"+52 1 55 {7100 + number} {3300 + number}",
    )
    data["purchase"]["transaction"] = f"HP{tag.upper()}"
    data["purchase"]["payment"].update(
        pix_code=f"00020126pix{tag}code5802BR",
        pix_qrcode=f"https://qr.example.com/{tag}.png",
    )
    return body


def buyer_values(tag: str, number: int) -> list[str]:
    buyer = slip_body(tag, number)["data"]["buyer"]
    payment = slip_body(tag, number)["data"]["purchase"]["payment"]
    return [buyer["email"], buyer["name"], buyer["checkout_phone"], *_slip_values(payment)]


def _slip_values(payment: dict[str, Any]) -> list[str]:
    return [payment["pix_code"], payment["pix_qrcode"]]


def spellings(value: str) -> list[bytes]:
    """As the value may sit in the files: UTF-8, JSON-escaped (Jinja's tojson), URL-quoted."""
    return [value.encode(), json.dumps(value)[1:-1].encode(), quote(value).encode()]


def store_bytes(db: Path) -> dict[str, bytes]:
    """Every file of the store: the database, its WAL, and anything else beside it."""
    return {p.name: p.read_bytes() for p in db.parent.iterdir() if p.name.startswith(db.name)}


def found_in(files: dict[str, bytes], values: list[str]) -> list[str]:
    return sorted(
        f"{value!r} in {name}"
        for value in values
        for name, data in files.items()
        if any(spelling in data for spelling in spellings(value))
    )


def wired(raw: dict[str, Any], sink: WebhookSink) -> dict[str, Any]:
    raw = copy.deepcopy(raw)
    raw["producers"][0]["affiliates"] = [
        {
            "code": AFFILIATE,
            "name": "Wanda",
            "buyer_data": True,
            "destinations": [{"kind": "webhook", "url": sink.url("/hook"), "secret": SECRET}],
        }
    ]
    return raw


async def echo(request: web.Request) -> web.Response:
    """A receiver that echoes the payload in its reply, and the buyer's email in a header."""
    body = await request.read()
    email = json.loads(body)["buyer"]["email"]
    return web.Response(body=body, headers={"X-Request-Id": email})


async def ingest(store: Any, config: Config, body: dict[str, Any], received_ms: int) -> int:
    event = parse_json_event(body)
    producer = config.producers[0]
    result = await store.ingest(
        new_event(producer.id, event, decided_rows(decide(producer, event))), received_ms
    )
    return int(result.event_row_id)


def event_row(db: Path, hotmart_id: str) -> tuple[str, int | None]:
    conn = sqlite3.connect(db)
    try:
        payload, scrubbed = conn.execute(
            "SELECT payload_json, scrubbed_at_ms FROM events WHERE hotmart_id = ?", (hotmart_id,)
        ).fetchone()
    finally:
        conn.close()
    return payload, scrubbed


# -- the scrubbed payload ----------------------------------------------------------------


def test_every_event_field_is_either_kept_or_scrubbed_by_name() -> None:
    """A field added to Event or Payment must be sorted here before purge can be trusted."""
    assert set(Event.model_fields) == KEPT_EVENT_FIELDS | SCRUBBED_EVENT_FIELDS
    assert not KEPT_EVENT_FIELDS & SCRUBBED_EVENT_FIELDS
    assert set(Payment.model_fields) == KEPT_PAYMENT_FIELDS | SCRUBBED_PAYMENT_FIELDS
    assert not KEPT_PAYMENT_FIELDS & SCRUBBED_PAYMENT_FIELDS


@pytest.mark.parametrize("fixture", ["billet_printed_pix.json", "billet_printed_oxxo.json"])
def test_a_scrubbed_payload_still_parses_and_holds_no_buyer_or_slip(fixture: str) -> None:
    event = parse_json_event(fixture_json(fixture))
    assert event.buyer is not None and event.payment.has_slip
    candidate = ScrubCandidate(1, 0, event.id, event.event, event.model_dump_json())

    scrubbed = Event.model_validate_json(scrubbed_payload(candidate))

    assert scrubbed.buyer is None
    assert not scrubbed.payment.has_slip and scrubbed.payment.pix_qrcode is None
    # What the history needs stays: ids, names of things, the sale, the kind of payment.
    assert (scrubbed.id, scrubbed.event, scrubbed.created_at_ms) == (
        event.id,
        event.event,
        event.created_at_ms,
    )
    assert (scrubbed.product, scrubbed.affiliates, scrubbed.purchase) == (
        event.product,
        event.affiliates,
        event.purchase,
    )
    assert scrubbed.payment.method == event.payment.method
    assert scrubbed.payment.expires_at_ms == event.payment.expires_at_ms
    text = scrubbed.model_dump_json()
    for value in (event.buyer.email, event.buyer.name, event.buyer.phone):
        assert value not in text


def test_a_payload_that_does_not_parse_becomes_the_bare_event_its_row_names() -> None:
    candidate = ScrubCandidate(1, 0, "evt-9", "PURCHASE_APPROVED", '{"buyer": "x@y.z", "id": 3')

    scrubbed = Event.model_validate_json(scrubbed_payload(candidate))

    assert (scrubbed.id, scrubbed.event, scrubbed.buyer) == ("evt-9", "PURCHASE_APPROVED", None)


def test_retention_is_said_as_it_is_written() -> None:
    assert [duration_text(s) for s in (30 * 86400, 12 * 3600, 5 * 60, 90, 0.5)] == [
        "30d",
        "12h",
        "5m",
        "90s",
        "0.5s",
    ]


# -- relay purge: the byte scan ----------------------------------------------------------


async def test_relay_purge_leaves_no_buyer_data_of_purged_events_in_the_files(
    config_dict: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """issue 8's "done when": the bytes of the store, WAL included, after `relay purge`
    run beside a serving relay (whose open connection keeps the WAL file in place)."""
    now_ms = time.time_ns() // 1_000_000
    old = {f"old{n}": n for n in range(12)}
    fresh = {f"new{n}": n for n in range(12, 16)}
    db = tmp_path / "relay.sqlite3"
    old_values = [v for tag, n in old.items() for v in buyer_values(tag, n)]
    fresh_values = [v for tag, n in fresh.items() for v in buyer_values(tag, n)]
    async with webhook_sink() as sink:
        raw = wired(config_dict, sink)
        config = build_config(raw, tmp_path)
        sink.on("/hook", *[echo] * (len(old) + len(fresh)))
        async with (
            open_relay(config) as opened,
            running(opened, purge_first_delay_s=3600) as runtime,
        ):
            for tag, n in old.items():
                await ingest(runtime.store, config, slip_body(tag, n), now_ms - 40 * DAY_MS)
            for tag, n in fresh.items():
                await ingest(runtime.store, config, slip_body(tag, n), now_ms - DAY_MS)
            runtime.wake_dispatcher()
            await wait_until(
                lambda: _counts_are(runtime.store, {"delivered": len(old) + len(fresh)})
            )
            assert found_in(store_bytes(db), old_values)  # the scan sees them before
            capsys.readouterr()

            assert await run_cli(write_toml(raw, tmp_path / "relay.toml"), "purge") == 0

            out = capsys.readouterr().out
            assert f"from {len(old)} event(s) and {len(old)} attempt(s)" in out
            assert "storage.retention = 30d" in out
            files = store_bytes(db)
            assert f"{db.name}-wal" in files  # the serving relay keeps it: it was scanned
            assert found_in(files, old_values) == []
            # Inside the window nothing is touched: each fresh value is still there.
            assert len(found_in(files, fresh_values)) >= len(fresh_values)
    await _facts_are_kept(db, old, fresh)


async def _counts_are(store: Any, expected: dict[str, int]) -> bool:
    return bool(await store.count_by_status() == expected)


async def _facts_are_kept(db: Path, old: dict[str, int], fresh: dict[str, int]) -> None:
    """Statuses, codes, times, ids and outcomes stay; so does a fresh event's payload."""
    async with open_sqlite_store(db) as store:
        rows = await store.history(HistoryFilter(limit=100))
        assert {r.status for r in rows} == {"delivered"} and len(rows) == len(old) + len(fresh)
        for row in rows:
            detail = await store.delivery(row.id)
            assert detail is not None
            (attempt,) = detail.attempts
            assert (attempt.outcome, attempt.status_code) == ("success", 200)
            assert attempt.latency_ms > 0 and attempt.started_at_ms > 0
            event = Event.model_validate_json(detail.event_payload_json)  # still parses
            if row.hotmart_id.removeprefix("evt-") in old:
                assert event.buyer is None and not event.payment.has_slip
                assert (attempt.request_payload, attempt.response_excerpt) == ("", "")
                assert attempt.response_headers == {}
                assert event.purchase.transaction == row.transaction_code
            else:
                assert event.buyer is not None and event.payment.pix_code
                assert "buyer" in attempt.request_payload and attempt.response_excerpt
                assert "x-request-id" in attempt.response_headers


# -- what purge scrubs, and when ---------------------------------------------------------


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    async with open_sqlite_store(tmp_path / "relay.sqlite3", busy_timeout_ms=100) as opened:
        yield opened


async def attempt_once(store: SqliteStore, status: DeliveryStatus, now_ms: int) -> None:
    """Claim every due delivery and record one attempt for each that sent and echoed."""
    claim = await store.claim_due(now_ms, now_ms + 60_000, 100, 100)
    for delivery in claim.deliveries:
        record = AttemptRecord(
            delivery_id=delivery.id,
            attempt_no=delivery.attempts + 1,
            started_at_ms=now_ms,
            latency_ms=12.5,
            outcome="success" if status == DeliveryStatus.DELIVERED else "permanent",
            status_code=200 if status == DeliveryStatus.DELIVERED else 400,
            response_excerpt=delivery.payload_json,
            response_headers={"x-request-id": "echo " + delivery.payload_json[:200]},
            request_payload=delivery.payload_json,
            detail="",
        )
        resolution = AttemptResolution(status, None, "", HealthEffect.NONE)
        await store.record_attempt(
            record, resolution, delivery.destination_key, 20, None, now_ms,
            lease_token=delivery.lease_token,
        )  # fmt: skip


async def test_an_event_with_a_pending_delivery_keeps_its_data_until_it_settles(
    store: SqliteStore, config_dict: dict[str, Any], tmp_path: Path
) -> None:
    config = build_config(wired(config_dict, _NoSink()), tmp_path)
    await ingest(store, config, slip_body("waiting", 1), NOW_MS - 40 * DAY_MS)

    report = await purge(store, NOW_MS, config.storage.retention_s, erase_wait_ms=WAIT_MS)

    assert (report.events, report.attempts, report.erased) == (0, 0, True)
    payload, scrubbed_at = event_row(tmp_path / "relay.sqlite3", "evt-waiting")
    assert scrubbed_at is None and "buyer.waiting@example.com" in payload

    await attempt_once(store, DeliveryStatus.DELIVERED, NOW_MS)
    report = await purge(store, NOW_MS + 1, config.storage.retention_s, erase_wait_ms=WAIT_MS)

    assert (report.events, report.attempts) == (1, 1)
    payload, scrubbed_at = event_row(tmp_path / "relay.sqlite3", "evt-waiting")
    assert scrubbed_at == NOW_MS + 1 and "buyer.waiting" not in payload


async def test_purge_walks_past_events_kept_back_and_scrubs_each_once(
    store: SqliteStore, config_dict: dict[str, Any], tmp_path: Path
) -> None:
    config = build_config(wired(config_dict, _NoSink()), tmp_path)
    await ingest(store, config, slip_body("first", 1), NOW_MS - 50 * DAY_MS)
    await attempt_once(store, DeliveryStatus.FAILED, NOW_MS)  # settled: may be scrubbed
    await ingest(store, config, slip_body("pending", 2), NOW_MS - 45 * DAY_MS)  # kept back
    for n in range(3, 6):
        await ingest(store, config, slip_body(f"late{n}", n), NOW_MS - 40 * DAY_MS)
    claim = await store.claim_due(NOW_MS, NOW_MS + 60_000, 100, 100)
    later = [d for d in claim.deliveries if d.hotmart_id != "evt-pending"]
    for delivery in later:
        assert await store.resolve_without_attempt(
            delivery.id, DeliveryStatus.SKIPPED, "test", NOW_MS, lease_token=delivery.lease_token
        )

    # One event per batch: the pending one must not stop the walk.
    first = await purge(store, NOW_MS, config.storage.retention_s, batch=1, erase_wait_ms=WAIT_MS)
    again = await purge(store, NOW_MS, config.storage.retention_s, batch=1, erase_wait_ms=WAIT_MS)

    assert (first.events, first.attempts) == (4, 1)
    assert (again.events, again.attempts) == (0, 0)
    assert event_row(tmp_path / "relay.sqlite3", "evt-pending")[1] is None


async def test_events_inside_the_window_are_left_alone(
    store: SqliteStore, config_dict: dict[str, Any], tmp_path: Path
) -> None:
    config = build_config(wired(config_dict, _NoSink()), tmp_path)
    retention_s = config.storage.retention_s
    edge_ms = NOW_MS - int(retention_s * 1000)
    await ingest(store, config, slip_body("edge", 1), edge_ms)  # exactly at the edge: kept
    await ingest(store, config, slip_body("past", 2), edge_ms - 1)
    await attempt_once(store, DeliveryStatus.DELIVERED, NOW_MS)

    report = await purge(store, NOW_MS, retention_s, erase_wait_ms=WAIT_MS)

    assert report.events == 1
    assert event_row(tmp_path / "relay.sqlite3", "evt-edge")[1] is None
    assert event_row(tmp_path / "relay.sqlite3", "evt-past")[1] == NOW_MS


async def test_a_producer_alert_is_not_a_hotmart_event_and_is_left_as_it_is(
    store: SqliteStore, config_dict: dict[str, Any], tmp_path: Path
) -> None:
    """An alert carries no buyer data, and its payload is a DestinationDisabled, which a
    scrub into an `Event` would destroy (a replayed alert could no longer be rendered)."""
    config = build_config(wired(config_dict, _NoSink()), tmp_path)
    old_ms = NOW_MS - 40 * DAY_MS
    await ingest(store, config, slip_body("gone", 1), old_ms)
    (claimed,) = (await store.claim_due(old_ms, old_ms + 60_000, 10, 10)).deliveries
    carried = DestinationDisabled(destination_key=claimed.destination_key, disabled_at_ms=old_ms)
    await store.record_attempt(
        AttemptRecord(claimed.id, 1, old_ms, 1.0, "permanent", 410, "", {}, "{}", "410 Gone"),
        AttemptResolution(DeliveryStatus.FAILED, None, "410 Gone", HealthEffect.GONE),
        claimed.destination_key,
        20,
        NewAlert(
            producer_id="acme",
            alert_id="alert-old",
            event_name="DESTINATION_DISABLED",
            destination_key=claimed.destination_key,
            message_id="msg_alert_old",
            reason="disabled",
            payload_json=carried.model_dump_json(),
        ),
        now_ms=old_ms,
        lease_token=claimed.lease_token,
    )
    await attempt_once(store, DeliveryStatus.DELIVERED, old_ms)  # the alert is sent

    report = await purge(store, NOW_MS, config.storage.retention_s, erase_wait_ms=WAIT_MS)

    assert report.events == 1  # the slip's event; not the alert
    payload, scrubbed = event_row(tmp_path / "relay.sqlite3", "alert-old")
    assert scrubbed is None
    assert DestinationDisabled.model_validate_json(payload) == carried


async def test_a_purged_delivery_is_never_replayed_without_its_data(
    config_dict: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A replay would send a slip notification with no slip and no buyer in it."""
    raw = wired(config_dict, _NoSink())
    config = build_config(raw, tmp_path)
    async with open_sqlite_store(tmp_path / "relay.sqlite3") as opened:
        await ingest(opened, config, slip_body("gone", 1), NOW_MS - 40 * DAY_MS)
        await attempt_once(opened, DeliveryStatus.FAILED, NOW_MS - 40 * DAY_MS)
        await purge(opened, NOW_MS, config.storage.retention_s, erase_wait_ms=WAIT_MS)
        (row,) = await opened.history(HistoryFilter())
    path = write_toml(raw, tmp_path / "relay.toml")
    capsys.readouterr()

    assert await run_cli(path, "replay", str(row.id)) == 1
    assert "purged" in capsys.readouterr().out
    assert await run_cli(path, "replay", "--failed") == 0  # nothing left to replay
    async with open_sqlite_store(tmp_path / "relay.sqlite3") as opened:
        (after,) = await opened.history(HistoryFilter())
    assert (after.status, after.attempts) == ("failed", 1)


async def test_purge_says_so_when_the_wal_cannot_be_cut_yet(
    config_dict: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A reader in another connection holds the WAL: the rows are scrubbed, the files not
    yet, and `relay purge` exits 1 saying to run it again; once the reader is gone, it does."""
    raw = wired(config_dict, _NoSink())
    raw["storage"]["busy_timeout"] = "50ms"
    config = build_config(raw, tmp_path)
    db = tmp_path / "relay.sqlite3"
    long_ago_ms = time.time_ns() // 1_000_000 - 40 * DAY_MS  # `relay purge` reads the clock
    async with open_sqlite_store(db) as opened:
        await ingest(opened, config, slip_body("held", 1), long_ago_ms)
        await attempt_once(opened, DeliveryStatus.DELIVERED, long_ago_ms)
    path = write_toml(raw, tmp_path / "relay.toml")
    reader = sqlite3.connect(db, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT COUNT(*) FROM events").fetchone()  # a read snapshot, held
    capsys.readouterr()
    try:
        assert await run_cli(path, "purge") == 1
        out = capsys.readouterr().out
        assert "from 1 event(s)" in out and "run `relay purge` again" in out
    finally:
        reader.execute("COMMIT")
        reader.close()

    assert await run_cli(path, "purge") == 0
    assert "from 0 event(s)" in capsys.readouterr().out
    assert found_in(store_bytes(db), buyer_values("held", 1)) == []


async def test_purge_reports_a_store_it_cannot_open(
    config_dict: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = copy.deepcopy(config_dict)
    (tmp_path / "not-a-dir").write_text("a file where the store's folder should be")
    raw["storage"]["sqlite_path"] = str(tmp_path / "not-a-dir" / "relay.sqlite3")

    assert await run_cli(write_toml(raw, tmp_path / "relay.toml"), "purge") == 1
    assert "relay purge: failed" in capsys.readouterr().err


class _NoSink(WebhookSink):
    """A webhook URL for configs whose deliveries these tests settle by hand."""

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:9{path}"


# -- relay serve purges by itself --------------------------------------------------------


async def test_serve_purges_shortly_after_start_by_itself(
    config_dict: dict[str, Any], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = build_config(wired(config_dict, _NoSink()), tmp_path)
    db = tmp_path / "relay.sqlite3"
    now_ms = time.time_ns() // 1_000_000
    async with open_sqlite_store(db) as opened:
        for n in range(3):
            await ingest(opened, config, slip_body(f"daily{n}", n), now_ms - 40 * DAY_MS)
        await ingest(opened, config, slip_body("today", 9), now_ms)
        await attempt_once(opened, DeliveryStatus.DELIVERED, now_ms)
    caplog.set_level(logging.INFO, logger="relay.retention")

    async with open_relay(config) as opened, running(opened, purge_first_delay_s=0):
        await wait_until(lambda: "purge: " in caplog.text)
        files = store_bytes(db)  # while it serves: its WAL is there

    assert "purge: scrubbed buyer data from 3 event(s) and 3 attempt(s)" in caplog.text
    assert found_in(files, [v for n in range(3) for v in buyer_values(f"daily{n}", n)]) == []
    assert found_in(files, buyer_values("today", 9))


@pytest.mark.parametrize(
    ("erased", "waits"),
    [(True, [30, 86400, 86400, 86400]), (False, [30, 300, 300, 300])],
)
async def test_the_daily_purge_runs_at_start_then_every_day_or_soon_if_unfinished(
    erased: bool, waits: list[float]
) -> None:
    """While the old copies could not be erased, the next purge comes in minutes."""
    delays: list[float] = []
    purges: list[int] = []

    async def sleep(delay_s: float) -> None:
        delays.append(delay_s)
        if len(delays) == 4:
            raise asyncio.CancelledError

    async def purge_once() -> PurgeReport:
        purges.append(len(delays))
        return PurgeReport(0, 0, 0, erased=erased)

    with pytest.raises(asyncio.CancelledError):
        await run_daily(purge_once, first_delay_s=30, interval_s=86400, retry_s=300, sleep=sleep)

    assert delays == waits
    assert purges == [1, 2, 3]  # one purge after each wait but the last


async def test_a_failed_daily_purge_is_logged_and_started_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    attempts: list[str] = []

    async def purge_once() -> PurgeReport:
        attempts.append("purge")
        if len(attempts) == 1:
            raise sqlite3.OperationalError("disk I/O error")
        raise asyncio.CancelledError  # the second run worked: stop the test here

    async def no_wait(delay_s: float) -> None:
        return None

    body: Callable[[], Awaitable[None]] = lambda: run_daily(  # noqa: E731
        purge_once, first_delay_s=0, sleep=no_wait
    )
    supervisor = Supervisor("purge", body, sleep=no_wait)
    with pytest.raises(asyncio.CancelledError):
        await supervisor.run()

    assert attempts == ["purge", "purge"] and supervisor.restarts == 1
    assert "purge stopped on an error (OperationalError); restarting" in caplog.text


# -- races and faults --------------------------------------------------------------------


async def test_an_event_requeued_after_it_was_read_for_purge_keeps_its_data(
    store: SqliteStore, config_dict: dict[str, Any], tmp_path: Path
) -> None:
    """The pending check is made again in the writing transaction: a replay queued between
    the purge's read and its write wins, and the delivery keeps what it needs to be sent."""
    config = build_config(wired(config_dict, _NoSink()), tmp_path)
    await ingest(store, config, slip_body("raced", 1), NOW_MS - 40 * DAY_MS)
    await attempt_once(store, DeliveryStatus.FAILED, NOW_MS - 40 * DAY_MS)
    (candidate,) = await store.scrub_candidates(NOW_MS - 30 * DAY_MS, (-1, -1), 10)
    (row,) = await store.history(HistoryFilter())
    assert await store.requeue([row.id], NOW_MS) == [row.id]

    counts = await store.scrub(
        [ScrubbedEvent(candidate.event_row_id, scrubbed_payload(candidate))], NOW_MS
    )

    assert (counts.events, counts.attempts) == (0, 0)
    payload, scrubbed_at = event_row(tmp_path / "relay.sqlite3", "evt-raced")
    assert scrubbed_at is None and "buyer.raced@example.com" in payload


def failing_checkpoint(errorname: str) -> type[UnitConnection]:
    """A connection whose WAL checkpoint fails as SQLite reports `errorname`."""

    class FailingCheckpoint(UnitConnection):
        def execute(self, sql: str, parameters: Any = (), /) -> Any:
            if isinstance(sql, str) and "wal_checkpoint" in sql:
                error = sqlite3.OperationalError(errorname.lower())
                error.sqlite_errorname = errorname  # as sqlite3 names it on a real one
                raise error
            return super().execute(sql, parameters)

    return FailingCheckpoint


async def test_a_checkpoint_that_meets_a_lock_is_reported_not_raised(tmp_path: Path) -> None:
    factory = failing_checkpoint("SQLITE_BUSY")
    async with open_sqlite_store(tmp_path / "relay.sqlite3", factory=factory) as opened:
        report = await purge(opened, NOW_MS, 30 * 86400, erase_wait_ms=WAIT_MS)

    assert (report.events, report.erased) == (0, False)
    assert "run `relay purge` again" in report.summary(30 * 86400)


async def test_a_checkpoint_that_fails_on_the_disk_makes_the_purge_fail(tmp_path: Path) -> None:
    factory = failing_checkpoint("SQLITE_IOERR")
    async with open_sqlite_store(tmp_path / "relay.sqlite3", factory=factory) as opened:
        with pytest.raises(StoreUnavailable):
            await purge(opened, NOW_MS, 30 * 86400, erase_wait_ms=WAIT_MS)
