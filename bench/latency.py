"""Benchmark 2: end-to-end latency, from sending Hotmart's POST to the affiliate's webhook.

`relay serve` runs in its own process; the sender and a timing sink share this one,
so both timestamps come from one clock. Each event carries a fresh id, and the sink
matches arrivals to sends by the `event_id` in the webhook's JSON body. Runs: one
event at a time, then open-loop steady rates (sends are scheduled, not paced by
replies), the last at the roadmap's 500 events/s.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from standardwebhooks import Webhook

from bench.common import (
    AFFILIATE,
    HOST,
    INGEST_PATH,
    SECRET,
    Child,
    EventBodies,
    free_port,
    ingest_headers,
    percentiles_ms,
    relay_config,
    relay_process,
    relay_store,
    write_relay_config,
)
from relay.records import HistoryFilter
from relay.store import Store

# (name, events, rate per second or None for one at a time)
RUNS: tuple[tuple[str, int, float | None], ...] = (
    ("sequential", 1000, None),
    ("steady 200/s", 1000, 200.0),
    ("steady 500/s", 2000, 500.0),
)
SEQUENTIAL_PER_S = 100  # one at a time takes a few ms each: to size a run of given length
WARMUP_EVENTS = 50
ARRIVAL_TIMEOUT_S = 30.0  # after the last send; anything later counts as missing
SENDER_CONNECTIONS = 64


@dataclass
class TimingSink:
    """The affiliate's webhook: the arrival time of each event, by its `event_id`."""

    arrivals: dict[str, float] = field(default_factory=dict)
    duplicates: int = 0
    unreadable: int = 0
    sample: tuple[bytes, dict[str, str]] | None = None  # one request, to verify its signature

    async def handle(self, request: web.Request) -> web.Response:
        arrived = time.perf_counter()
        body = await request.read()
        try:
            event_id = orjson.loads(body)["event_id"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            self.unreadable += 1
            return web.Response(text="ok")
        if event_id in self.arrivals:
            self.duplicates += 1  # at-least-once: a retry of something already here
        else:
            self.arrivals[event_id] = arrived
        if self.sample is None:
            self.sample = (body, dict(request.headers))
        return web.Response(text="ok")

    def signature_ok(self) -> bool | None:
        if self.sample is None:
            return None
        body, headers = self.sample
        try:
            Webhook(SECRET).verify(body, headers)
        except Exception:  # any verification failure means "not signed as promised"
            return False
        return True


@asynccontextmanager
async def timing_sink() -> AsyncIterator[tuple[TimingSink, str]]:
    sink = TimingSink()
    app = web.Application()
    app.router.add_post("/{tail:.*}", sink.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, HOST, 0)
        await site.start()
        yield sink, f"http://{HOST}:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@dataclass
class Sender:
    """Posts fresh events to relay and remembers when each left."""

    session: aiohttp.ClientSession
    url: str
    bodies: EventBodies = field(default_factory=EventBodies)
    sent_at: dict[str, float] = field(default_factory=dict)
    response_s: list[float] = field(default_factory=list)
    failures: int = 0  # non-200 or no answer: the event may never arrive

    async def send(self) -> str:
        event_id, body = self.bodies.next()
        started = time.perf_counter()
        self.sent_at[event_id] = started
        try:
            async with self.session.post(self.url, data=body, headers=ingest_headers()) as reply:
                await reply.read()
                if reply.status != 200:
                    self.failures += 1
        except (aiohttp.ClientError, OSError):
            self.failures += 1
        self.response_s.append(time.perf_counter() - started)
        return event_id


async def one_run(
    sender: Sender, sink: TimingSink, relay: Child, count: int, rate: float | None
) -> dict[str, Any]:
    sender.sent_at.clear()
    sender.response_s.clear()
    sender.failures = 0
    cpu_before = relay.cpu_s()
    started = time.perf_counter()
    if rate is None:
        for _ in range(count):
            await sender.send()
    else:
        tasks = []
        for index in range(count):
            delay = started + index / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(sender.send()))
        await asyncio.gather(*tasks)
    sending_s = time.perf_counter() - started
    await _wait_for_arrivals(sink, list(sender.sent_at))
    elapsed_s = time.perf_counter() - started
    cpu_after = relay.cpu_s()
    latencies = [
        sink.arrivals[event_id] - sent
        for event_id, sent in sender.sent_at.items()
        if event_id in sink.arrivals
    ]
    arrived = [sink.arrivals[e] for e in sender.sent_at if e in sink.arrivals]
    delivering_s = max(arrived, default=started) - started
    return {
        "events": count,
        "target_rate_per_s": rate,
        "achieved_rate_per_s": round(count / sending_s, 1),
        "ingest_failures": sender.failures,
        "missing": count - len(latencies),
        # Below the sending rate means a backlog grew: relay could not keep up.
        "delivered_per_s": round(len(arrived) / delivering_s, 1) if delivering_s else None,
        "end_to_end": percentiles_ms(latencies),
        "ingest_response": percentiles_ms(sender.response_s),
        # Near 1.0: relay had a whole core busy, from first send to last arrival.
        "relay_cpu_share": (
            None
            if cpu_before is None or cpu_after is None
            else round((cpu_after - cpu_before) / elapsed_s, 2)
        ),
    }


async def where_time_went(store: Store, event_ids: list[str]) -> dict[str, Any]:
    """From relay's own records: waiting before the attempt, and the POST itself.

    `queued` runs from the ingest commit's clock reading to the attempt's start (the
    dispatcher's wake-up, the claim transaction, the per-destination limit); `send` is
    the channel's POST to the sink. The rest of end-to-end is HTTP ingest and render.
    """
    queued_s, send_s = [], []
    for event_id in event_ids:
        for row in await store.history(HistoryFilter(hotmart_id=event_id, limit=1)):
            detail = await store.delivery(row.id)
            if detail is None or not detail.attempts:
                continue
            first = detail.attempts[0]
            queued_s.append((first.started_at_ms - row.created_at_ms) / 1000)
            send_s.append(first.latency_ms / 1000)
    return {"queued": percentiles_ms(queued_s), "send": percentiles_ms(send_s)}


async def _wait_for_arrivals(sink: TimingSink, event_ids: list[str]) -> None:
    deadline = time.perf_counter() + ARRIVAL_TIMEOUT_S
    waiting = [event_id for event_id in event_ids if event_id not in sink.arrivals]
    while waiting and time.perf_counter() < deadline:
        await asyncio.sleep(0.02)
        waiting = [event_id for event_id in waiting if event_id not in sink.arrivals]


def sized_runs(seconds: float | None) -> tuple[tuple[str, int, float | None], ...]:
    """The runs, each lasting about `seconds` when given."""
    if seconds is None:
        return RUNS
    return tuple(
        (name, max(10, int((SEQUENTIAL_PER_S if rate is None else rate) * seconds)), rate)
        for name, _, rate in RUNS
    )


async def run(seconds: float | None = None) -> dict[str, Any]:
    runs = sized_runs(seconds)
    print("[2] end-to-end latency: POST sent -> signed webhook at the affiliate's sink")
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="relay-bench-latency-") as tmp:
        workdir = Path(tmp)
        async with timing_sink() as (sink, sink_url):
            port = free_port()
            destinations = [
                {"kind": "webhook", "url": f"{sink_url}/hooks/{AFFILIATE}", "secret": SECRET}
            ]
            raw = relay_config(workdir, port, destinations, allow_private_networks=True)
            config = write_relay_config(workdir, raw)
            connector = aiohttp.TCPConnector(limit=SENDER_CONNECTIONS)
            async with (
                relay_process(config, port, workdir) as relay,
                aiohttp.ClientSession(connector=connector) as session,
            ):
                sender = Sender(session, f"http://{HOST}:{port}{INGEST_PATH}")
                warmup = WARMUP_EVENTS if seconds is None else min(WARMUP_EVENTS, 10)
                await one_run(sender, sink, relay, warmup, 200.0)
                ids_by_run = {}
                for name, count, rate in runs:
                    results[name] = outcome = await one_run(sender, sink, relay, count, rate)
                    ids_by_run[name] = list(sender.sent_at)
                    _print_run(name, outcome)
            print("    inside relay (from its attempt records):")
            async with relay_store(config) as store:
                for name, event_ids in ids_by_run.items():
                    parts = await where_time_went(store, event_ids)
                    results[name]["inside_relay"] = parts
                    print(
                        f"    {name:<13} queued before the attempt: median "
                        f"{parts['queued'].get('median_ms', 0):7.1f}  p99 "
                        f"{parts['queued'].get('p99_ms', 0):7.1f} ms;  POST to sink: median "
                        f"{parts['send'].get('median_ms', 0):5.1f}  p99 "
                        f"{parts['send'].get('p99_ms', 0):5.1f} ms"
                    )
            results["duplicates"] = sink.duplicates
            results["unreadable"] = sink.unreadable
            results["signature_verified"] = sink.signature_ok()
            results["relay_delivery_config"] = raw["delivery"]
    print(
        f"    sink: {sink.duplicates} duplicates, {sink.unreadable} unreadable, "
        f"signature verified: {results['signature_verified']}"
    )
    return results


def _print_run(name: str, outcome: dict[str, Any]) -> None:
    e2e = outcome["end_to_end"]
    extra = f"  delivered {outcome['delivered_per_s']}/s, relay cpu {outcome['relay_cpu_share']}"
    if outcome["target_rate_per_s"]:
        extra += f", sent {outcome['achieved_rate_per_s']:.0f}/s"
    problems = ""
    if outcome["missing"] or outcome["ingest_failures"]:
        problems = f"  MISSING {outcome['missing']}, ingest failures {outcome['ingest_failures']}"
    print(
        f"    {name:<13} n={outcome['events']:<5} median {e2e.get('median_ms', 0):7.1f}  "
        f"p95 {e2e.get('p95_ms', 0):7.1f}  p99 {e2e.get('p99_ms', 0):7.1f}  "
        f"worst {e2e.get('max_ms', 0):7.1f} ms{extra}{problems}"
    )
