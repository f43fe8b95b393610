"""Benchmark 5: ingest and delivery throughput by store: SQLite with its one instance,
PostgreSQL with one instance and with two sharing the store.

Ingest: 64 connections keep posts in flight for a fixed window, spread over the
instances round-robin (a load balancer's way); each post writes an event and its slip
row, the dispatchers delivering meanwhile. Delivery: a backlog of slips is seeded first
(through the store's protocol, as ingest writes them), then the instances start and the
time until every one is delivered (maildir transport, so the store sets the pace) is
the figure. Both on this 2-core machine, where the load generator, PostgreSQL and the
relays share the cores: read the figures side by side, not as a ceiling.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import (
    HOST,
    INGEST_PATH,
    EventBodies,
    free_port,
    ingest_headers,
    relay_config,
    relay_process,
    relay_store,
    seed_slips,
    settled_count,
    write_relay_config,
)
from relay.config import load_config
from relay.store.backend import open_store

POSTGRES_DSN = os.environ.get("RELAY_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
CONNECTIONS = 64
WARMUP_S = 1.0
DURATION_S = 6.0
BACKLOG = 3_000  # slips delivered in the delivery run
DELIVERY_BOUND_S = 120.0
# (store, instances): the rows of the table.
ROWS = (("sqlite", 1), ("postgres", 1), ("postgres", 2))


async def run(
    seconds: float | None = None, stores: tuple[str, ...] = ("sqlite", "postgres")
) -> dict[str, Any]:
    duration_s = seconds or DURATION_S
    backlog = BACKLOG if seconds is None else max(200, int(BACKLOG * seconds / DURATION_S))
    results: dict[str, Any] = {}
    for store, instances in ROWS:
        if store not in stores:
            continue
        name = f"{store} x{instances}"
        with tempfile.TemporaryDirectory(prefix="relay-bench-stores-") as tmp:
            async with _schema(store) as dsn:
                results[name] = await _measure(Path(tmp), dsn, instances, duration_s, backlog)
        row = results[name]
        print(
            f"  {name:<12} ingest {row['ingest_per_s']:>7}/s   "
            f"delivery {row['delivery_per_s']:>7}/s ({backlog} slips)"
        )
    return results


@asynccontextmanager
async def _schema(store: str) -> AsyncIterator[str | None]:
    """None for SQLite; for PostgreSQL, a DSN on a new schema, dropped afterwards."""
    if store == "sqlite":
        yield None
        return
    import asyncpg

    schema = f"bench_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(POSTGRES_DSN)
    try:
        await admin.execute(f"CREATE SCHEMA {schema}")
        try:
            yield f"{POSTGRES_DSN}?search_path={schema}"
        finally:
            await admin.execute(f"DROP SCHEMA {schema} CASCADE")
    finally:
        await admin.close()


async def _measure(
    workdir: Path, dsn: str | None, instances: int, duration_s: float, backlog: int
) -> dict[str, Any]:
    ports = [free_port() for _ in range(instances)]
    configs = []
    for index, port in enumerate(ports):
        folder = workdir / f"i{index}"
        folder.mkdir()
        raw = relay_config(workdir, port, [{"kind": "email", "to": "lucia@example.com"}])
        if dsn is not None:
            raw["storage"] = {"postgres_dsn": dsn}
        configs.append((write_relay_config(folder, raw), port, folder))
    async with open_store(load_config(configs[0][0], {}), migrate=True):
        pass  # PostgreSQL: `relay migrate`; SQLite: created
    await seed_slips(configs[0][0], backlog)
    async with AsyncExitStack() as stack:
        started = time.perf_counter()
        children = [
            await stack.enter_async_context(relay_process(path, port, folder))
            for path, port, folder in configs
        ]
        delivered_s = await _until_delivered(configs[0][0], backlog, started)
        urls = [f"http://{HOST}:{port}{INGEST_PATH}" for port in ports]
        ok, window_s, non_200 = await _load(urls, duration_s)
        cpu = [child.cpu_s() for child in children]
    return {
        "instances": instances,
        "ingest_per_s": round(ok / window_s, 1),
        "ingest_non_200": non_200,
        "delivery_per_s": round(backlog / delivered_s, 1),
        "delivery_s": round(delivered_s, 2),
        "relay_cpu_s": cpu,
    }


async def _until_delivered(config_path: Path, count: int, started: float) -> float:
    async with relay_store(config_path) as store:
        while time.perf_counter() - started < DELIVERY_BOUND_S:
            delivered, failed = await settled_count(store)
            if delivered + failed >= count:
                return time.perf_counter() - started
            await asyncio.sleep(0.05)
    raise RuntimeError(f"not delivered within {DELIVERY_BOUND_S:g}s")


async def _load(urls: list[str], duration_s: float) -> tuple[int, float, int]:
    """Closed loop: CONNECTIONS posts in flight, worker n always to instance n mod len."""
    bodies = EventBodies()
    headers = ingest_headers()
    counts = {"ok": 0, "non_200": 0}
    counting = stopping = False

    async def worker(session: aiohttp.ClientSession, url: str) -> None:
        while not stopping:
            try:
                async with session.post(url, data=bodies.next()[1], headers=headers) as response:
                    await response.read()
                    status = response.status
            except (aiohttp.ClientError, OSError):
                continue
            if counting:
                counts["ok" if status == 200 else "non_200"] += 1

    connector = aiohttp.TCPConnector(limit=CONNECTIONS)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=30)
    ) as session:
        tasks = [
            asyncio.create_task(worker(session, urls[n % len(urls)])) for n in range(CONNECTIONS)
        ]
        try:
            await asyncio.sleep(WARMUP_S)
            counting, t0 = True, time.perf_counter()
            await asyncio.sleep(duration_s)
            counting, t1 = False, time.perf_counter()
        finally:
            stopping = True
            await asyncio.gather(*tasks, return_exceptions=True)
    return counts["ok"], t1 - t0, counts["non_200"]
