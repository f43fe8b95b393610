"""Benchmark 1: ingest throughput, relay against a bare aiohttp handler, each in its own process.

A closed-loop load generator keeps 64 requests in flight, posting the OXXO fixture
with a fresh `id` per request, for a fixed time after a warm-up. relay runs as
`relay serve` with SQLite and its dispatcher, in two modes (issue 10's first two rows):

- withheld: the fixture's affiliate has no buyer data, so each request stores its
  event and a withheld row, and nothing is dispatched;
- delivering: the affiliate has buyer data and two destinations, an email (maildir)
  and a webhook (the bench sink), so the same relay delivers each event twice while
  it ingests; its delivered/s in the window is reported with the ratio.

Bare, withheld and delivering runs alternate for three rounds, each relay on a fresh
store; each mode's ratio is the median of its rounds' relay/bare ratios.

The generator is an aiohttp client in this process, always; and wrk as well when
it is installed. Python's client costs about as much CPU per request as the bare
server does, so it can cap the bare side and flatter the ratio: each result
carries both processes' CPU shares to show which side set the pace.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench import wrk
from bench.common import (
    HOST,
    INGEST_PATH,
    SECRET,
    Child,
    EventBodies,
    free_port,
    ingest_headers,
    peer_process,
    percentiles_ms,
    ratio,
    relay_config,
    relay_process,
    relay_store,
    settled_count,
    write_relay_config,
)

CONNECTIONS = 64  # as DESIGN.md's wrk runs
WARMUP_S = 1.0
DURATION_S = 8.0
ROUNDS = 3
MODES = ("withheld", "delivering")


@dataclass
class LoadResult:
    """What one timed window saw; requests that finish inside the window are counted."""

    duration_s: float
    ok: int = 0
    non_200: int = 0
    not_accepted: int = 0  # 200 whose body is not relay's "accepted" (a duplicate, say)
    errors: int = 0  # connection failures, no HTTP status at all
    total_200: int = 0  # including warm-up and drain, to compare with rows on disk
    latencies_s: list[float] = field(default_factory=list)
    client_cpu_s: float = 0.0
    server_cpu_s: float | None = None

    @property
    def rps(self) -> float:
        return self.ok / self.duration_s

    def summary(self) -> dict[str, Any]:
        return {
            "requests_per_s": round(self.rps, 1),
            "ok": self.ok,
            "non_200": self.non_200,
            "not_accepted": self.not_accepted,
            "errors": self.errors,
            "window_s": round(self.duration_s, 2),
            "response_time": percentiles_ms(self.latencies_s),
            # Near 1.0 means that process was the bottleneck.
            "client_cpu_share": round(self.client_cpu_s / self.duration_s, 2),
            "server_cpu_share": (
                None if self.server_cpu_s is None else round(self.server_cpu_s / self.duration_s, 2)
            ),
        }


async def generate_load(
    url: str,
    server: Child,
    *,
    connections: int = CONNECTIONS,
    warmup_s: float = WARMUP_S,
    duration_s: float = DURATION_S,
) -> LoadResult:
    """Keep `connections` requests in flight for warm-up + duration; count the window."""
    bodies = EventBodies()
    headers = ingest_headers()
    result = LoadResult(duration_s=duration_s)
    counting = False
    stopping = False

    async def worker(session: aiohttp.ClientSession) -> None:
        while not stopping:
            _, body = bodies.next()
            started = time.perf_counter()
            try:
                async with session.post(url, data=body, headers=headers) as response:
                    reply = await response.read()
                    status = response.status
            except (aiohttp.ClientError, OSError):
                if counting:
                    result.errors += 1
                continue
            if status == 200:
                result.total_200 += 1
            if not counting:
                continue
            if status != 200:
                result.non_200 += 1
                continue
            if b'"accepted"' not in reply:
                result.not_accepted += 1
            result.ok += 1
            result.latencies_s.append(time.perf_counter() - started)

    connector = aiohttp.TCPConnector(limit=connections)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        tasks = [asyncio.create_task(worker(session)) for _ in range(connections)]
        try:
            await asyncio.sleep(warmup_s)
            cpu0, server_cpu0, t0 = time.process_time(), server.cpu_s(), time.perf_counter()
            counting = True
            await asyncio.sleep(duration_s)
            counting = False
            t1, cpu1, server_cpu1 = time.perf_counter(), time.process_time(), server.cpu_s()
        finally:
            stopping = True
            await asyncio.gather(*tasks, return_exceptions=True)
    result.duration_s = t1 - t0
    result.client_cpu_s = cpu1 - cpu0
    if server_cpu0 is not None and server_cpu1 is not None:
        result.server_cpu_s = server_cpu1 - server_cpu0
    return result


Measure = Callable[[str, Child, Path], Awaitable[tuple[float, dict[str, Any]]]]


def python_generator(duration_s: float, warmup_s: float) -> Measure:
    async def measure(url: str, server: Child, workdir: Path) -> tuple[float, dict[str, Any]]:
        load = await generate_load(url, server, warmup_s=warmup_s, duration_s=duration_s)
        summary = load.summary()
        summary["bad_responses"] = load.non_200 + load.not_accepted + load.errors
        return load.rps, summary

    return measure


def wrk_generator(duration_s: float, warmup_s: float) -> Measure:
    async def measure(url: str, server: Child, workdir: Path) -> tuple[float, dict[str, Any]]:
        await wrk.run_wrk(url, server, workdir, connections=CONNECTIONS, duration_s=warmup_s)
        load = await wrk.run_wrk(
            url, server, workdir, connections=CONNECTIONS, duration_s=duration_s
        )
        summary = load.summary()
        summary["bad_responses"] = load.non_2xx + load.socket_errors
        return load.rps, summary

    return measure


async def relay_run(
    mode: str, measure: Measure, workdir: Path, sink_url: str
) -> tuple[float, dict[str, Any]]:
    """One `relay serve` on a fresh store, measured; delivering also counts deliveries."""
    port = free_port()
    withheld = mode == "withheld"
    destinations = [{"kind": "email", "to": "lucia@example.com"}]
    if not withheld:
        destinations.append({"kind": "webhook", "url": sink_url, "secret": SECRET})
    raw = relay_config(workdir, port, destinations, allow_private_networks=True)
    raw["producers"][0]["affiliates"][0]["buyer_data"] = not withheld
    config = write_relay_config(workdir, raw)
    async with relay_process(config, port, workdir) as relay, relay_store(config) as store:
        before, _ = await settled_count(store)
        started = time.perf_counter()
        rps, summary = await measure(f"http://{HOST}:{port}{INGEST_PATH}", relay, workdir)
        delivered, _ = await settled_count(store)
        summary["delivered_per_s"] = round((delivered - before) / (time.perf_counter() - started))
    return rps, summary


async def rounds_of(name: str, measure: Measure, rounds: int) -> dict[str, Any]:
    """Bare, withheld and delivering runs, alternating, `rounds` times."""
    runs: dict[str, list[tuple[float, dict[str, Any]]]] = {"bare": [], **{m: [] for m in MODES}}
    with tempfile.TemporaryDirectory(prefix="relay-bench-ingest-") as tmp:
        sink_port = free_port()
        async with peer_process("sink", sink_port, Path(tmp)):
            sink_url = f"http://{HOST}:{sink_port}/hooks/bench"
            for index in range(rounds):
                workdir = Path(tmp) / f"round-{index}"
                for mode in runs:
                    (workdir / mode).mkdir(parents=True)
                port = free_port()
                async with peer_process("bare", port, workdir / "bare") as bare:
                    url = f"http://{HOST}:{port}{INGEST_PATH}"
                    runs["bare"].append(await measure(url, bare, workdir / "bare"))
                _print_load(f"{name}: bare", runs["bare"][-1][1])
                for mode in MODES:
                    runs[mode].append(await relay_run(mode, measure, workdir / mode, sink_url))
                    _print_load(f"{name}: {mode}", runs[mode][-1][1])
    result: dict[str, Any] = {"bare": _median_run(runs["bare"])}
    for mode in MODES:
        shares = [
            ratio(rps, bare_rps) or 0.0
            for (rps, _), (bare_rps, _) in zip(runs[mode], runs["bare"], strict=True)
        ]
        result[mode] = _median_run(runs[mode])
        result[mode]["rounds_ratio_relay_to_bare"] = shares
        result[mode]["ratio_relay_to_bare"] = statistics.median(shares)
        bad = sum(summary["bad_responses"] for _, summary in runs[mode])
        result[mode]["bad_responses"] = bad
    result["delivered_per_s"] = result["delivering"]["delivered_per_s"]
    print(
        f"    {name}: relay/bare withheld {result['withheld']['ratio_relay_to_bare']}, "
        f"delivering {result['delivering']['ratio_relay_to_bare']} while delivering "
        f"{result['delivered_per_s']}/s (medians of {rounds})"
    )
    return result


def _median_run(runs: list[tuple[float, dict[str, Any]]]) -> dict[str, Any]:
    """The median run's summary, with every round's rate."""
    ordered = sorted(runs, key=lambda run: run[0])
    middle = dict(ordered[len(ordered) // 2][1])
    middle["rounds_requests_per_s"] = [round(rps, 1) for rps, _ in runs]
    return middle


async def run(seconds: float | None = None) -> dict[str, Any]:
    duration_s = DURATION_S if seconds is None else seconds
    warmup_s = WARMUP_S if seconds is None else min(WARMUP_S, seconds / 2)
    rounds = ROUNDS if seconds is None else 1
    # wrk, when present, is the fairer judge: the Python client can cap the bare server.
    name = "wrk" if wrk.available() else "python"
    measure = (wrk_generator if name == "wrk" else python_generator)(duration_s, warmup_s)
    print(
        f"[1] ingest throughput: {CONNECTIONS} connections ({name}), {duration_s:g}s after a "
        f"{warmup_s:g}s warm-up; bare, withheld and delivering alternate, {rounds} rounds"
    )
    results: dict[str, Any] = {
        "connections": CONNECTIONS,
        "duration_s": duration_s,
        "generator": name,
        "rounds": rounds,
    }
    results.update(await rounds_of(name, measure, rounds))
    results["ratio_relay_to_bare"] = results["withheld"]["ratio_relay_to_bare"]
    return results


def _print_load(name: str, summary: dict[str, Any]) -> None:
    times = summary["response_time"]
    cpu = f"server {_share(summary['server_cpu_share'])}"
    if "delivered_per_s" in summary:
        cpu += f"   delivered {summary['delivered_per_s']}/s"
    if "client_cpu_share" in summary:
        cpu = f"client {_share(summary['client_cpu_share'])}, {cpu}"
    print(
        f"    {name:<13} {summary['requests_per_s']:8.0f} req/s   "
        f"median {times.get('median_ms', 0):6.1f} ms   p99 {times.get('p99_ms', 0):6.1f} ms"
        f"   cpu: {cpu}"
    )


def _share(value: float | None) -> str:
    return "?" if value is None else f"{value:.0%}"
