"""The dispatcher driven directly: bursts, leases as fences, drain, supervision."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from relay.attempt_outcome import AttemptBounds
from relay.clock import SystemClock
from relay.config import Config
from relay.decide import decide
from relay.engine import Relay, open_relay, running
from relay.hotmart import parse_json_event
from relay.outbox import decided_rows, new_event, new_message_id
from relay.records import HistoryFilter, cli_lease_owner
from tests.conftest import SECRET, base_config_dict, build_config, fixture_json
from tests.peers import WebhookSink, status, wait_until, webhook_sink

HOOK = "/hook"


@pytest.fixture
async def sink() -> AsyncIterator[WebhookSink]:
    async with webhook_sink() as opened:
        yield opened


def webhook_config(tmp_path: Path, sink: WebhookSink, **delivery: Any) -> Config:
    """Lucía alone, with one webhook destination at the sink."""
    raw = base_config_dict(tmp_path)
    raw["delivery"].update(delivery)
    lucia = raw["producers"][0]["affiliates"][0]
    lucia["destinations"] = [{"kind": "webhook", "url": sink.url(HOOK), "secret": SECRET}]
    raw["producers"][0]["affiliates"] = [lucia]
    return build_config(raw, tmp_path)


async def rows(relay: Relay) -> list[Any]:
    return await relay.store.history(HistoryFilter(limit=100))


async def queue_slip(
    relay: Relay, config: Config, hotmart_id: str = "slip-1", channel: str = ""
) -> int:
    """Commit one OXXO slip for Lucía's webhook, as ingest would; return its delivery id.

    `channel` overrides the stored channel value (fault injection: a row unreadable)."""
    payload = fixture_json("billet_printed_oxxo.json")
    payload["id"] = hotmart_id
    event = parse_json_event(payload)
    producer = config.producers[0]
    new = new_event(producer.id, event, decided_rows(decide(producer, event)))
    if channel:
        (delivery,) = new.deliveries
        new = replace(new, deliveries=(replace(delivery, channel=channel),))
    result = await relay.store.ingest(new, now_ms=relay.clock.now_ms())
    (delivery_id,) = await relay.store.delivery_ids_of_event(result.event_row_id)
    return delivery_id


async def test_a_burst_runs_a_delivery_through_retries_due_soon(
    tmp_path: Path, sink: WebhookSink
) -> None:
    """Defect 10: run_burst returned after one failed attempt, against its docstring."""
    sink.on(HOOK, status(500), status(503), status(200))
    config = webhook_config(tmp_path, sink)
    async with open_relay(config) as relay:
        delivery_id = await queue_slip(relay, config)
        await relay.dispatcher.run_burst(only_ids=[delivery_id])
        (row,) = await rows(relay)
    assert (row.status, row.attempts) == ("delivered", 3)
    assert len(sink.at(HOOK)) == 3


async def test_a_burst_leaves_a_retry_minutes_out_to_the_server(
    tmp_path: Path, sink: WebhookSink
) -> None:
    sink.on(HOOK, status(500))
    config = webhook_config(tmp_path, sink, retry_delays=["10m"])
    async with open_relay(config) as relay:
        delivery_id = await queue_slip(relay, config)
        await relay.dispatcher.run_burst(only_ids=[delivery_id])
        (row,) = await rows(relay)
    assert (row.status, row.attempts) == ("pending", 1)
    assert len(sink.at(HOOK)) == 1


class JumpingClock:
    """Real time plus an offset the test moves: a lease can run out mid-attempt."""

    def __init__(self) -> None:
        self.offset_ms = 0

    def now_ms(self) -> int:
        return SystemClock().now_ms() + self.offset_ms


def gated(gate: asyncio.Event) -> Any:
    """A reply held until the test opens `gate`: an attempt in flight, without sleeping."""

    async def reply(request: web.Request) -> web.Response:
        await gate.wait()
        return web.Response(text="ok")

    return reply


async def test_a_lease_that_runs_out_mid_attempt_never_starts_a_second_attempt(
    tmp_path: Path, sink: WebhookSink
) -> None:
    """Defect 4: the dispatcher claimed its own in-flight row again once the lease ran out:
    two POSTs under one webhook-id, and two attempt rows both numbered 1."""
    gate = asyncio.Event()
    sink.on(HOOK, gated(gate))
    clock = JumpingClock()
    config = webhook_config(tmp_path, sink)
    async with open_relay(config, clock=clock) as relay, running(relay):
        first = await queue_slip(relay, config, "slip-1")
        relay.wake_dispatcher()
        await wait_until(lambda: len(sink.at(HOOK)) == 1)
        clock.offset_ms += 24 * 3600 * 1000  # every lease taken so far has run out
        await queue_slip(relay, config, "slip-2")  # a claim after the jump...
        relay.wake_dispatcher()
        await wait_until(lambda: len(sink.at(HOOK)) >= 2)  # ...has happened: slip-2 went out
        gate.set()
        await wait_until(lambda: settled_all(relay))
        message_id = await message_id_of(relay, first)
        assert [h.headers["webhook-id"] for h in sink.at(HOOK)].count(message_id) == 1
        detail = await relay.store.delivery(first)
    assert detail is not None
    assert [a.attempt_no for a in detail.attempts] == [1]
    assert (detail.delivery.status, detail.delivery.attempts) == ("delivered", 1)


async def settled_all(relay: Relay) -> bool:
    found = await relay.store.history(HistoryFilter(limit=100))
    return bool(found) and all(row.status != "pending" for row in found)


async def message_id_of(relay: Relay, delivery_id: int) -> str:
    detail = await relay.store.delivery(delivery_id)
    assert detail is not None
    return detail.delivery.message_id


async def test_an_attempt_over_its_budget_is_cut_and_recorded_as_a_failed_attempt(
    tmp_path: Path, sink: WebhookSink
) -> None:
    """The budget bounds the attempt as a whole, so its lease (budget plus margin)
    cannot run out while it runs."""
    gate = asyncio.Event()
    sink.on(HOOK, gated(gate))  # the first POST is never answered; the retry is
    config = webhook_config(tmp_path, sink)
    bounds = AttemptBounds(budget_s=0.2, lease_s=30.0)
    try:
        async with open_relay(config, bounds=bounds) as relay:
            delivery_id = await queue_slip(relay, config)
            await relay.dispatcher.run_burst(only_ids=[delivery_id])
            detail = await relay.store.delivery(delivery_id)
    finally:
        gate.set()
    assert detail is not None
    assert [(a.attempt_no, a.outcome) for a in detail.attempts] == [
        (1, "transient"),
        (2, "success"),
    ]
    assert "ran over its 0.2s budget" in detail.attempts[0].detail
    assert detail.attempts[0].request_payload  # what was being sent is kept


async def test_a_taken_over_lease_cannot_record_a_second_attempt_1(
    tmp_path: Path, sink: WebhookSink, caplog: pytest.LogCaptureFixture
) -> None:
    """A serve and a CLI replay share one database. Should a lease ever run out under a
    live attempt (here the clock jumps), the fence still lets only its new holder record."""
    gate = asyncio.Event()
    sink.on(HOOK, gated(gate))
    clock = JumpingClock()
    config = webhook_config(tmp_path, sink)
    async with open_relay(config, clock=clock) as serve:
        delivery_id = await queue_slip(serve, config)
        first = asyncio.create_task(serve.dispatcher.run_burst(only_ids=[delivery_id]))
        await wait_until(lambda: len(sink.at(HOOK)) == 1)
        clock.offset_ms += 24 * 3600 * 1000
        async with open_relay(
            config, store=serve.store, clock=clock, owner=cli_lease_owner(4242)
        ) as cli:
            await cli.dispatcher.run_burst(only_ids=[delivery_id])  # claims the row past its lease
        gate.set()
        await first
        detail = await serve.store.delivery(delivery_id)
    assert detail is not None
    assert [a.attempt_no for a in detail.attempts] == [1]  # never two rows numbered 1
    assert "outcome not recorded, its lease was taken over" in caplog.text


async def test_an_outcome_that_cannot_be_stored_fails_its_delivery_once(
    tmp_path: Path, sink: WebhookSink, caplog: pytest.LogCaptureFixture
) -> None:
    config = webhook_config(tmp_path, sink)
    async with open_relay(config) as relay:
        delivery_id = await queue_slip(relay, config)
        await relay.store.run(
            lambda c: c.execute(
                "CREATE TRIGGER no_attempts BEFORE INSERT ON attempts "
                "BEGIN SELECT RAISE(ABORT, 'cannot take it'); END"
            )
        )
        await relay.dispatcher.run_burst(only_ids=[delivery_id])
        (row,) = await rows(relay)
    assert row.status == "failed"
    assert "attempt 1 could not be recorded" in row.reason
    assert len(sink.at(HOOK)) == 1  # sent once, and not claimed again and again
    assert f"delivery {delivery_id}: attempt not recorded, delivery failed" in caplog.text


async def test_a_row_that_cannot_be_read_is_failed_and_the_dispatcher_goes_on(
    tmp_path: Path, sink: WebhookSink, caplog: pytest.LogCaptureFixture
) -> None:
    """Defect 3: an unknown channel value raised in the claim and killed the dispatcher,
    on every restart again."""
    config = webhook_config(tmp_path, sink)
    async with open_relay(config) as relay, running(relay):
        broken = await queue_slip(relay, config, "broken", channel="fax")
        fine = await queue_slip(relay, config, "fine")
        relay.wake_dispatcher()
        await wait_until(lambda: settled_all(relay))
        by_id = {row.id: row for row in await relay.store.history(HistoryFilter())}
        assert relay.readiness.report()[0]
    assert by_id[broken].status == "failed" and "unknown channel 'fax'" in by_id[broken].reason
    assert by_id[fine].status == "delivered"
    assert f"delivery {broken} failed without an attempt" in caplog.text


async def test_drain_waits_for_every_attempt_in_flight(tmp_path: Path, sink: WebhookSink) -> None:
    gate = asyncio.Event()
    sink.on(HOOK, gated(gate), gated(gate))
    config = webhook_config(tmp_path, sink, shutdown_grace="10s")
    async with open_relay(config) as relay:
        ids = [await queue_slip(relay, config, f"slip-{i}") for i in range(2)]
        burst = asyncio.create_task(relay.dispatcher.run_burst(only_ids=ids))
        await wait_until(lambda: len(sink.at(HOOK)) == 2)
        assert relay.dispatcher.in_flight == 2
        drained = asyncio.create_task(relay.dispatcher.drain(grace_s=10.0))
        await asyncio.sleep(0)
        assert not drained.done()  # both attempts are still in flight
        gate.set()
        await drained
        assert relay.dispatcher.in_flight == 0
        await burst
        statuses = [row.status for row in await rows(relay)]
    assert statuses == ["delivered", "delivered"]


def test_message_ids_are_128_fresh_random_bits_each() -> None:
    # Drawn from os.urandom for each id: none repeats, and none follows from another.
    ids = [new_message_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"msg_[0-9a-f]{32}", i) for i in ids)
    first, second = int(ids[0][4:], 16), int(ids[1][4:], 16)
    assert second - first not in (0, 1, -1)  # not a counter
