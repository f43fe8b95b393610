"""GET /metrics against the real app, a real SQLite file and a real webhook sink: the
exposition parses with prometheus_client's own parser, each counter moves by exactly what
was posted or sent, the gauges read the store, and no label carries buyer data."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from relay.config import ConfigError, parse_config
from relay.hotmart import KNOWN_EVENTS
from relay.metrics import DEFAULT_ATTEMPT_BUCKETS_S, Metrics, attempt_buckets_s, bearer_matches
from relay.records import Channel, QueueGauges
from relay.recovery import SLIP_OUTCOMES
from tests.acceptance.buyer_data import buyer_values
from tests.conftest import (
    FIXTURES,
    HOTTOK,
    SECRET,
    build_config,
    fixture_json,
    fixture_text,
    key_of,
    relay_of,
)
from tests.peers import WebhookSink, status, wait_until, webhook_sink

PATH = "/hotmart/webhook"
METRICS_TOKEN = "metrics-token-3f9a"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


class ManualClock:
    """The relay's clock, moved by the test: ages and staleness without waiting."""

    def __init__(self) -> None:
        self.now = 1_764_000_000_000

    def now_ms(self) -> int:
        return self.now


async def scrape(client: Any, headers: dict[str, str] | None = None) -> Samples:
    resp = await client.get("/metrics", headers=headers or {})
    assert resp.status == 200, await resp.text()
    assert resp.content_type == "text/plain"
    samples: Samples = {}
    for family in text_string_to_metric_families(await resp.text()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def moved(before: Samples, after: Samples) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every counter and histogram count that changed, and by how much."""
    counted = [k for k in after if k[0].endswith(("_total", "_count"))]
    deltas = {key: after[key] - before.get(key, 0.0) for key in counted}
    return {key: delta for key, delta in deltas.items() if delta}


async def post(client: Any, body: Any, token: str = HOTTOK) -> Any:
    headers = {"Content-Type": "application/json", "X-HOTMART-HOTTOK": token}
    return await client.post(PATH, data=json.dumps(body), headers=headers)


def with_webhook(raw: dict[str, Any], url: str) -> dict[str, Any]:
    """Lucía (K12345678M) receives by webhook at `url` instead of by email."""
    raw["producers"][0]["affiliates"][0]["destinations"] = [
        {"kind": "webhook", "url": url, "secret": SECRET}
    ]
    return raw


@pytest.fixture
async def sink() -> AsyncIterator[WebhookSink]:
    async with webhook_sink() as running:
        yield running


async def test_counters_move_by_exactly_what_was_posted(
    relay_client: Any, config_dict: dict[str, Any], tmp_path: Path
) -> None:
    client = await relay_client(build_config(config_dict, tmp_path))
    before = await scrape(client)

    oxxo = fixture_json("billet_printed_oxxo.json")
    assert (await post(client, oxxo)).status == 200  # accepted: one email to Lucía
    assert (await post(client, oxxo)).status == 200  # the same again: duplicate
    direct = fixture_json("billet_printed_no_affiliate.json")
    assert (await post(client, direct)).status == 200  # a direct sale: ignored
    denied = fixture_json("billet_printed_oxxo.json")
    denied["id"] = "denied-affiliate-event"
    denied["data"]["affiliates"] = [{"affiliate_code": "P0000000NP", "name": "Denied"}]
    assert (await post(client, denied)).status == 200  # accepted, and withheld
    assert (await post(client, oxxo, token="not-the-hottok")).status == 401
    # The counter moves once the outcome is stored: wait for it, then compare everything.
    await wait_until(lambda: shows(client, "relay_deliveries_total", 1, **EMAIL_DELIVERED))

    after = await scrape(client)
    events, slip = "relay_events_total", "PURCHASE_BILLET_PRINTED"
    deliveries = "relay_deliveries_total"
    assert moved(before, after) == {
        (events, (("event", slip), ("outcome", "accepted"), ("producer", "acme"))): 2,
        (events, (("event", slip), ("outcome", "duplicate"), ("producer", "acme"))): 1,
        (events, (("event", slip), ("outcome", "ignored"), ("producer", "acme"))): 1,
        ("relay_ingest_rejections_total", (("status", "401"),)): 1,
        (deliveries, (("channel", "none"), ("status", "ignored"))): 1,
        (deliveries, (("channel", "email"), ("status", "withheld"))): 1,
        (deliveries, (("channel", "email"), ("status", "delivered"))): 1,
        ("relay_attempt_duration_seconds_count", (("channel", "email"),)): 1,
        ("relay_ingest_duration_seconds_count", ()): 5,
    }
    # Every post is in the ingest histogram's +Inf bucket, and in no bucket below 0.
    assert value(after, "relay_ingest_duration_seconds_bucket", le="+Inf") == 5


EMAIL_DELIVERED = {"channel": "email", "status": "delivered"}


async def shows(client: Any, name: str, expected: float, **labels: str) -> bool:
    return value(await scrape(client), name, **labels) == expected


async def _delivered(store: Any) -> bool:
    return (await store.count_by_status()).get("delivered") == 1


async def test_an_attempt_against_a_sink_moves_the_histogram_and_the_delivered_counter(
    relay_client: Any, config_dict: dict[str, Any], tmp_path: Path, sink: WebhookSink
) -> None:
    raw = with_webhook(config_dict, sink.url("/lucia"))
    sink.on("/lucia", status(503))  # the first attempt fails; the retry (10 ms) lands
    client = await relay_client(build_config(raw, tmp_path))
    assert (await post(client, fixture_json("billet_printed_oxxo.json"))).status == 200
    await wait_until(lambda: len(sink.at("/lucia")) == 2)
    delivered = {"channel": "webhook", "status": "delivered"}
    await wait_until(lambda: shows(client, "relay_deliveries_total", 1, **delivered))

    after = await scrape(client)
    webhook = {"channel": "webhook"}
    assert value(after, "relay_attempt_duration_seconds_count", **webhook) == 2
    assert value(after, "relay_attempt_duration_seconds_bucket", le="+Inf", **webhook) == 2
    assert value(after, "relay_attempt_duration_seconds_sum", **webhook) > 0
    assert value(after, "relay_deliveries_total", status="retrying", **webhook) == 1
    assert value(after, "relay_deliveries_total", status="delivered", **webhook) == 1
    assert value(after, "relay_deliveries_total", status="failed", **webhook) == 0
    # The buckets run from milliseconds to the delivery timeout (2 s here), then the budget.
    edges = {dict(k[1])["le"] for k in after if k[0] == "relay_attempt_duration_seconds_bucket"}
    assert {"0.005", "1.0", "2.0", "9.0", "+Inf"} <= edges
    assert "2.5" not in edges


async def test_a_delivery_the_claim_skips_for_a_disabled_destination_is_counted(
    relay_client: Any, config_dict: dict[str, Any], tmp_path: Path
) -> None:
    client = await relay_client(build_config(config_dict, tmp_path))
    store = relay_of(client).store
    await store.set_destination_enabled(key_of(config_dict, "K12345678M"), False, "by hand", 1)
    assert (await post(client, fixture_json("billet_printed_oxxo.json"))).status == 200
    skipped = {"channel": "email", "status": "skipped"}
    await wait_until(lambda: shows(client, "relay_deliveries_total", 1, **skipped))
    assert (await store.count_by_status()) == {"skipped": 1}
    assert value(await scrape(client), "relay_deliveries_total", **skipped) == 1  # once


async def test_gauges_read_pending_and_disabled_rows_from_the_store(
    aiohttp_client: Any, config_dict: dict[str, Any], tmp_path: Path, sink: WebhookSink
) -> None:
    from relay.app import init_app

    gate = asyncio.Event()

    async def held(request: web.Request) -> web.Response:
        await gate.wait()
        return web.Response(text="ok")

    raw = with_webhook(config_dict, sink.url("/lucia"))
    sink.on("/lucia", held)
    clock = ManualClock()
    client = await aiohttp_client(init_app(build_config(raw, tmp_path), clock=clock))
    store = relay_of(client).store
    await wait_until(lambda: gauges_are(client, depth=0, age_s=0, disabled=0))

    assert (await post(client, fixture_json("billet_printed_oxxo.json"))).status == 200
    await wait_until(lambda: sink.at("/lucia"))  # in flight: pending, and held at the sink
    clock.now += 7_000
    await store.set_destination_enabled(key_of(raw, "P98765432X"), False, "by hand", clock.now)
    await wait_until(lambda: gauges_are(client, depth=1, age_s=7.0, disabled=1))

    gate.set()
    await wait_until(lambda: _delivered(store))
    await wait_until(lambda: gauges_are(client, depth=0, age_s=0, disabled=1))


async def gauges_are(client: Any, *, depth: int, age_s: float, disabled: int) -> bool:
    """The store's gauges as a scrape shows them, read for it (a busy machine's store may
    answer one scrape late: the caller polls)."""
    samples = await scrape(client)
    return value(samples, "relay_store_gauges_age_seconds") == 0 and (
        value(samples, "relay_queue_depth"),
        value(samples, "relay_oldest_pending_age_seconds"),
        value(samples, "relay_destinations_disabled"),
    ) == (depth, age_s, disabled)


async def test_a_locked_store_never_holds_a_scrape_it_serves_the_last_gauges_and_their_age(
    aiohttp_client: Any, config_dict: dict[str, Any], tmp_path: Path, caplog: Any
) -> None:
    from relay.app import init_app

    # The ingest below waits on the lock for as long as the test holds it, never less.
    config_dict["storage"]["busy_timeout"] = "60s"
    clock = ManualClock()
    client = await aiohttp_client(init_app(build_config(config_dict, tmp_path), clock=clock))
    store = relay_of(client).store
    await wait_until(lambda: gauges_are(client, depth=0, age_s=0, disabled=0))

    locker = sqlite3.connect(tmp_path / "relay.sqlite3", isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")  # another process's write: the store's writes wait
    try:
        # A write now waits on that lock on the store's one thread; its first step queues
        # it there, so the scrape's read is queued behind it.
        blocked = asyncio.create_task(store.probe_write(clock.now))
        await asyncio.sleep(0)
        clock.now += 4_000
        with caplog.at_level(logging.WARNING, logger="relay.metrics"):
            stale = await scrape(client)
        assert not blocked.done(), "the scrape answered while the store was still locked"
    finally:
        locker.rollback()
        locker.close()
    assert value(stale, "relay_store_gauges_age_seconds") == 4.0
    assert value(stale, "relay_queue_depth") == 0  # the last value read, not a made-up one
    assert "serving its last gauges" in caplog.text
    await blocked
    await wait_until(lambda: gauges_are(client, depth=0, age_s=0, disabled=0))


@pytest.mark.parametrize(
    ("authorization", "answer"),
    [
        (None, 401),
        ("Bearer wrong-token", 401),
        (f"Basic {METRICS_TOKEN}", 401),
        (f"Bearer {METRICS_TOKEN}x", 401),
        (f"Bearer {METRICS_TOKEN}", 200),
        (f"bearer {METRICS_TOKEN}", 200),
    ],
)
async def test_metrics_token_protects_the_endpoint_when_set(
    relay_client: Any,
    config_dict: dict[str, Any],
    tmp_path: Path,
    authorization: str | None,
    answer: int,
) -> None:
    config_dict["admin"] = {"metrics_token": "env:RELAY_METRICS_TOKEN"}
    config = parse_config(config_dict, {"RELAY_METRICS_TOKEN": METRICS_TOKEN}, base_dir=tmp_path)
    assert config.admin.metrics_token == METRICS_TOKEN
    client = await relay_client(config)
    headers = {} if authorization is None else {"Authorization": authorization}
    resp = await client.get("/metrics", headers=headers)
    assert resp.status == answer
    if answer == 401:
        assert resp.content_type == "application/json"
        assert (await resp.json())["error"] == "unauthorized"
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        assert METRICS_TOKEN not in await resp.text()
    else:
        families = {f.name for f in text_string_to_metric_families(await resp.text())}
        assert "relay_events" in families


async def test_without_a_metrics_token_the_endpoint_is_open(
    relay_client: Any, config_dict: dict[str, Any], tmp_path: Path
) -> None:
    client = await relay_client(build_config(config_dict, tmp_path))
    assert relay_of(client).config.admin.metrics_token is None
    samples = await scrape(client)
    assert value(samples, "relay_ingest_rejections_total", status="401") == 0
    # A token that is not needed is not checked either.
    assert (await client.get("/metrics", headers={"Authorization": "Bearer x"})).status == 200


def test_an_empty_metrics_token_is_refused_not_taken_for_none(tmp_path: Path) -> None:
    raw = {"admin": {"metrics_token": ""}, "producers": [{"id": "p", "hottok": "t"}]}
    with pytest.raises(ConfigError) as refused:
        parse_config(raw, {}, base_dir=tmp_path)
    assert [path for path, _ in refused.value.problems] == ["admin.metrics_token"]


async def test_no_label_or_value_carries_buyer_data_or_secrets(
    relay_client: Any, config_dict: dict[str, Any], tmp_path: Path
) -> None:
    config_dict["admin"] = {"metrics_token": METRICS_TOKEN, "token": "admin-token-77c1"}
    client = await relay_client(build_config(config_dict, tmp_path))
    for path in sorted(FIXTURES.glob("*.json")):
        await post(client, fixture_json(path.name))
    for path in sorted(FIXTURES.glob("*.form")):
        await client.post(
            PATH,
            data=fixture_text(path.name),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
    # A stranger's post names an event of its own, and a producer's names one never seen.
    strange = {**fixture_json("billet_printed_oxxo.json"), "event": "ATTACKER_CHOSEN_NAME"}
    await post(client, strange, token="stranger")
    await post(client, {**strange, "id": "strange-1"})
    resp = await client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    text = await resp.text()

    secrets = {HOTTOK, SECRET, METRICS_TOKEN, "admin-token-77c1"}
    leaked = [v for v in buyer_values() | secrets if v.lower() in text.lower()]
    assert leaked == []
    assert "ATTACKER_CHOSEN_NAME" not in text
    labels: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            for name, label in sample.labels.items():
                labels.setdefault(name, set()).add(label)
    assert labels["producer"] == {"acme"}
    assert labels["event"] <= KNOWN_EVENTS | {"other"}
    assert "other" in labels["event"]
    assert labels["outcome"] <= {"accepted", "duplicate", "ignored", *SLIP_OUTCOMES}
    assert labels["channel"] <= {"email", "webhook", "none"}
    assert labels["status"] <= {
        "400", "401", "408", "413", "415", "503",
        "delivered", "failed", "retrying", "withheld", "skipped", "ignored",
    }  # fmt: skip
    assert set(labels) == {"producer", "event", "outcome", "channel", "status", "le"}


async def test_each_app_counts_for_itself(
    relay_client: Any, config_dict: dict[str, Any], tmp_path: Path
) -> None:
    one = await relay_client(build_config(config_dict, tmp_path / "one"))
    two = await relay_client(build_config(config_dict, tmp_path / "two"))
    await post(one, fixture_json("billet_printed_no_affiliate.json"))
    ignored = {"producer": "acme", "event": "PURCHASE_BILLET_PRINTED", "outcome": "ignored"}
    assert value(await scrape(one), "relay_events_total", **ignored) == 1
    assert value(await scrape(two), "relay_events_total", **ignored) == 0


def test_attempt_buckets_run_from_milliseconds_to_the_timeout_then_the_budget() -> None:
    assert attempt_buckets_s(2.0, 9.0) == (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.0, 9.0)
    assert DEFAULT_ATTEMPT_BUCKETS_S[-2:] == (10.0, 25.0)


async def test_a_value_on_a_bound_counts_in_that_bucket() -> None:
    metrics = Metrics(ManualClock(), attempt_bounds_s=(0.1, 1.0))
    for duration_s in (0.1, 0.5, 1.0, 3.0):
        metrics.attempt_made(Channel.WEBHOOK, duration_s)

    body, _ = await metrics.exposition(_fails, "")  # the store never read: gauges absent
    text = body.decode()
    assert 'relay_attempt_duration_seconds_bucket{channel="webhook",le="0.1"} 1.0' in text
    assert 'relay_attempt_duration_seconds_bucket{channel="webhook",le="1.0"} 3.0' in text
    assert 'relay_attempt_duration_seconds_bucket{channel="webhook",le="+Inf"} 4.0' in text
    assert "relay_store_gauges_age_seconds +Inf" in text
    assert "relay_queue_depth" not in text


async def test_a_slow_store_gets_one_read_at_a_time_and_closing_cancels_it() -> None:
    clock = ManualClock()
    metrics = Metrics(clock, gauge_timeout_s=0.01)
    gate, reads = asyncio.Event(), []

    async def read() -> QueueGauges:
        reads.append(clock.now)
        await gate.wait()
        return QueueGauges(pending=3, earliest_due_at_ms=clock.now - 2_000, destinations_disabled=1)

    stale = await asyncio.gather(*(metrics.exposition(read, "") for _ in range(3)))
    stale.append(await metrics.exposition(read, ""))
    assert len(reads) == 1, "scrapes behind a stuck store wait on its one read"
    assert all(b"relay_queue_depth" not in body for body, _ in stale)

    gate.set()

    async def landed() -> bool:
        body, _ = await metrics.exposition(read, "")
        return b"relay_queue_depth 3.0" in body and b"oldest_pending_age_seconds 2.0" in body

    await wait_until(landed)

    gate.clear()
    reads.clear()
    await metrics.exposition(read, "")  # a read stuck again...
    metrics.close()  # ...is cancelled when the relay closes
    for _ in range(3):
        await asyncio.sleep(0)
    await metrics.exposition(read, "")
    assert len(reads) == 2, "the cancelled read no longer stands in the way of a new one"
    metrics.close()


async def _fails() -> Any:
    raise RuntimeError("store closed")


@pytest.mark.parametrize(
    ("header", "matches"),
    [
        ("Bearer s3cret", True),
        ("BEARER s3cret ", True),
        ("Bearer  s3cret", True),
        ("Bearer s3cre", False),
        ("Token s3cret", False),
        ("s3cret", False),
        ("", False),
        (None, False),
        ("Bearer s3cret\udcff", False),
    ],
)
def test_bearer_matches(header: str | None, matches: bool) -> None:
    assert bearer_matches(header, "s3cret") is matches


async def test_sale_recovery_counts_slips_notified_paid_and_expired(
    relay_client: Any, config_dict: dict[str, Any], tmp_path: Path
) -> None:
    """relay_slips_total{outcome} (issue 11): a slip the relay will send counts as
    notified, and the first paid or expired event of its transaction as paid or expired;
    a repeated approval, a duplicate or a slip nobody is sent counts nothing."""
    config_dict["recovery"] = {"enabled": True}
    client = await relay_client(build_config(config_dict, tmp_path))
    before = await scrape(client)
    slip = fixture_json("billet_printed_oxxo.json")
    assert (await post(client, slip)).status == 200
    assert (await post(client, slip)).status == 200  # a duplicate: counted once
    other = fixture_json("billet_printed_oxxo.json")
    other["id"], other["data"]["purchase"]["transaction"] = "slip-two", "HP-TWO"
    assert (await post(client, other)).status == 200
    denied = fixture_json("billet_printed_oxxo.json")
    denied["id"], denied["data"]["purchase"]["transaction"] = "slip-denied", "HP-DENIED"
    denied["data"]["affiliates"] = [{"affiliate_code": "P0000000NP", "name": "Denied"}]
    assert (await post(client, denied)).status == 200  # withheld: not notified
    await wait_until(lambda: shows(client, "relay_deliveries_total", 2, **EMAIL_DELIVERED))
    approved = fixture_json("purchase_approved_oxxo.json")
    assert (await post(client, approved)).status == 200  # pays the first slip
    complete = {**approved, "id": "complete-1", "event": "PURCHASE_COMPLETE"}
    assert (await post(client, complete)).status == 200  # already paid: not counted again
    expired = {**approved, "id": "expired-2", "event": "PURCHASE_EXPIRED"}
    expired["data"] = json.loads(json.dumps(approved["data"]))
    expired["data"]["purchase"]["transaction"] = "HP-TWO"
    assert (await post(client, expired)).status == 200

    after = await scrape(client)
    slips = {
        outcome: value(after, "relay_slips_total", outcome=outcome)
        - value(before, "relay_slips_total", outcome=outcome)
        for outcome in ("notified", "paid", "expired")
    }
    assert slips == {"notified": 2, "paid": 1, "expired": 1}
