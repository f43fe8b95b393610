"""SIGTERM's drain against a claim still running: the race behind the acceptance suite's
occasional repeat after SIGTERM (tests/acceptance/test_crash_safety.py), made certain.

The store's claim is gated (fault injection at the Store seam): the rows are leased in
the database, but the answer reaches the dispatcher only after drain() has begun. What
that claim starts must still be waited for, or not started at all; an attempt that
reaches the receiver and is never recorded is sent again after the restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from relay.decide import decide
from relay.engine import Relay, open_relay, running
from relay.hotmart import parse_json_event
from relay.outbox import decided_rows, new_event
from relay.store.sqlite import SqliteStore
from tests.conftest import SECRET, base_config_dict, build_config, fixture_json
from tests.peers import wait_until, webhook_sink

PATH = "/K12345678M"
WINDOW_S = 5.0  # how long a second request gets to arrive; only a correct relay waits it out


def held(release: asyncio.Event) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def reply(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response(text="ok")

    return reply


async def ingest(relay: Relay, event_id: str) -> None:
    """What the ingest handler does once it has parsed a body: commit, then wake."""
    payload = fixture_json("billet_printed_oxxo.json")
    payload["id"] = event_id
    event = parse_json_event(payload)
    producer = relay.config.producers[0]
    new = new_event(producer.id, event, decided_rows(decide(producer, event)))
    await relay.store.ingest(new, relay.clock.now_ms())
    relay.wake_dispatcher()


async def within(window_s: float, condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + window_s
    while time.monotonic() < deadline and not condition():
        await asyncio.sleep(0.01)


async def test_drain_waits_for_what_a_late_claim_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate, gated = asyncio.Event(), asyncio.Event()
    armed = False
    real_claim = SqliteStore.claim_due

    async def gated_claim(self: SqliteStore, *args: Any, **kwargs: Any) -> Any:
        claim = await real_claim(self, *args, **kwargs)
        if armed and claim.deliveries:
            gated.set()
            await gate.wait()  # leased in the store; the answer comes late
        return claim

    monkeypatch.setattr(SqliteStore, "claim_due", gated_claim)
    release_first, release_second = asyncio.Event(), asyncio.Event()
    async with webhook_sink() as sink:
        sink.on(PATH, held(release_first), held(release_second))
        raw = base_config_dict(tmp_path)
        raw["delivery"].update(
            {"shutdown_grace": "30s", "timeout": "60s"}
        )  # a held reply must not time out
        raw["producers"][0]["affiliates"][0]["destinations"] = [
            {"kind": "webhook", "url": sink.url(PATH), "secret": SECRET}
        ]
        service = contextlib.AsyncExitStack()  # what the app's cleanup_ctx holds open
        runtime = await service.enter_async_context(open_relay(build_config(raw, tmp_path)))
        await service.enter_async_context(running(runtime))
        stopping: asyncio.Task[Any] | None = None
        try:
            await ingest(runtime, "first")
            await wait_until(lambda: len(sink.at(PATH)) == 1)  # in flight, held
            armed = True
            await ingest(runtime, "second")
            await asyncio.wait_for(gated.wait(), timeout=10)
            runtime.wakeup.clear()
            stopping = asyncio.create_task(service.aclose())
            await wait_until(runtime.wakeup.is_set)  # drain() has called stop()
            gate.set()  # now the claim answers
            await within(WINDOW_S, lambda: len(sink.at(PATH)) == 2)
            release_first.set()
            await within(WINDOW_S, stopping.done)
        finally:
            gate.set()
            release_first.set()
            release_second.set()
            if stopping is None:
                await service.aclose()
            else:
                await asyncio.wait_for(stopping, timeout=60)
            await _orphans_finish()
        received = {hit.headers["webhook-id"] for hit in sink.at(PATH)}
    assert received  # the first attempt, at least, went out
    for message_id, status, attempts in _rows(tmp_path / "relay.sqlite3"):
        if message_id in received:
            assert (status, attempts) == ("delivered", 1), (message_id, status, attempts)


def _rows(db: Path) -> list[tuple[str, str, int]]:
    conn = sqlite3.connect(db)
    try:
        sql = "SELECT message_id, status, attempts FROM deliveries WHERE channel = 'webhook'"
        return [tuple(row) for row in conn.execute(sql)]
    finally:
        conn.close()


async def _orphans_finish() -> None:
    """Let an attempt the service left behind end here, not when the loop is torn down."""
    await within(
        10.0,
        lambda: not any(task.get_name().startswith("delivery-") for task in asyncio.all_tasks()),
    )
