"""The dispatcher driven directly: bursts, leases as fences, drain, supervision."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from relay.config import Config
from relay.decide import decide
from relay.hotmart import parse_json_event
from relay.ingest import to_new_event
from relay.runtime import Runtime, SystemClock
from relay.service import Service, open_service, running_service
from relay.store.records import HistoryFilter
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


async def rows(service: Service) -> list[Any]:
    return await service.store.history(HistoryFilter(limit=100))


async def queue_slip(runtime: Runtime, config: Config, hotmart_id: str = "slip-1") -> int:
    """Commit one OXXO slip for Lucía's webhook, as ingest would; return its delivery id."""
    payload = fixture_json("billet_printed_oxxo.json")
    payload["id"] = hotmart_id
    event = parse_json_event(payload)
    producer = config.producers[0]
    new_event = to_new_event(producer.id, event, decide(producer, event))
    result = await runtime.store.ingest(new_event, now_ms=runtime.clock.now_ms())
    (delivery_id,) = await runtime.store.delivery_ids_of_event(result.event_row_id)
    return delivery_id


async def test_a_burst_runs_a_delivery_through_retries_due_soon(
    tmp_path: Path, sink: WebhookSink
) -> None:
    """Defect 10: run_burst returned after one failed attempt, against its docstring."""
    sink.on(HOOK, status(500), status(503), status(200))
    config = webhook_config(tmp_path, sink)
    async with open_service(config) as service:
        delivery_id = await queue_slip(service.runtime, config)
        await service.dispatcher.run_burst(only_ids=[delivery_id])
        (row,) = await rows(service)
    assert (row.status, row.attempts) == ("delivered", 3)
    assert len(sink.at(HOOK)) == 3


async def test_a_burst_leaves_a_retry_minutes_out_to_the_server(
    tmp_path: Path, sink: WebhookSink
) -> None:
    sink.on(HOOK, status(500))
    config = webhook_config(tmp_path, sink, retry_delays=["10m"])
    async with open_service(config) as service:
        delivery_id = await queue_slip(service.runtime, config)
        await service.dispatcher.run_burst(only_ids=[delivery_id])
        (row,) = await rows(service)
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
    async with running_service(config, clock=clock) as runtime:
        first = await queue_slip(runtime, config, "slip-1")
        runtime.wake_dispatcher()
        await wait_until(lambda: len(sink.at(HOOK)) == 1)
        clock.offset_ms += 24 * 3600 * 1000  # every lease taken so far has run out
        await queue_slip(runtime, config, "slip-2")  # a claim after the jump...
        runtime.wake_dispatcher()
        await wait_until(lambda: len(sink.at(HOOK)) >= 2)  # ...has happened: slip-2 went out
        gate.set()
        await wait_until(lambda: settled_all(runtime))
        message_id = await message_id_of(runtime, first)
        assert [h.headers["webhook-id"] for h in sink.at(HOOK)].count(message_id) == 1
        detail = await runtime.store.delivery(first)
    assert detail is not None
    assert [a.attempt_no for a in detail.attempts] == [1]
    assert (detail.delivery.status, detail.delivery.attempts) == ("delivered", 1)


async def settled_all(runtime: Runtime) -> bool:
    found = await runtime.store.history(HistoryFilter(limit=100))
    return bool(found) and all(row.status != "pending" for row in found)


async def message_id_of(runtime: Runtime, delivery_id: int) -> str:
    detail = await runtime.store.delivery(delivery_id)
    assert detail is not None
    return detail.delivery.message_id
