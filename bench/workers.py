"""Benchmark: ingest while the same relay delivers, in one process and in several.

The load of bench/ingest.py (64 requests in flight, the OXXO fixture with a fresh id
each) against `relay serve` whose one affiliate has two destinations, an email through
a local SMTP server and a webhook to a local sink, both peers in their own processes.
Each event therefore costs one ingest commit and two deliveries. The same load runs
against a bare aiohttp handler, and against the relay in each process layout
(`server.workers` ingest processes, `delivery.workers` dispatcher processes; 0 keeps the
dispatcher inside the one process). Delivered per second is read from the relay's own
/metrics before and after the window, which in a multi-process relay adds up every
process's counts (relay.metrics_peers).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import (
    HOST,
    INGEST_PATH,
    SECRET,
    free_port,
    peer_process,
    ratio,
    relay_config,
    relay_process,
    write_relay_config,
)
from bench.ingest import DURATION_S, WARMUP_S, generate_load

# (server.workers, delivery.workers): one process, then a dispatcher of its own, then
# two ingest processes beside it.
LAYOUTS = ((1, 0), (1, 1), (2, 1))
SINK_PATH = "/hooks/bench"


async def delivered_total(port: int) -> float:
    """relay_deliveries_total{status="delivered"}, every channel, from the relay's /metrics."""
    url = f"http://{HOST}:{port}/metrics"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        text = await response.text()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("relay_deliveries_total{") and 'status="delivered"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


async def one_layout(
    workdir: Path, ingest: int, dispatchers: int, smtp_port: int, sink_port: int, seconds: float
) -> dict[str, Any]:
    port = free_port()
    destinations = [
        {"kind": "email", "to": "lucia@example.com"},
        {"kind": "webhook", "url": f"http://{HOST}:{sink_port}{SINK_PATH}", "secret": SECRET},
    ]
    raw = relay_config(workdir, port, destinations, allow_private_networks=True)
    raw["server"]["workers"] = ingest
    raw["delivery"]["workers"] = dispatchers
    raw["email"] = {
        "from": "Relay bench <relay@example.com>",
        "transport": "smtp",
        "smtp": {"host": HOST, "port": smtp_port, "pool_size": 8},
    }
    config = write_relay_config(workdir, raw)
    async with relay_process(config, port, workdir) as relay:
        before = await delivered_total(port)
        load = await generate_load(
            f"http://{HOST}:{port}{INGEST_PATH}",
            relay,
            warmup_s=min(WARMUP_S, seconds / 2),
            duration_s=seconds,
        )
        after = await delivered_total(port)
    summary = load.summary()
    summary["delivered_per_s"] = round((after - before) / load.duration_s, 1)
    summary["bad_responses"] = load.non_200 + load.not_accepted + load.errors
    return summary


async def run(seconds: float | None = None) -> dict[str, Any]:
    duration_s = DURATION_S if seconds is None else seconds
    print(f"[w] ingest while delivering (email + webhook), by process layout, {duration_s:g}s")
    results: dict[str, Any] = {"duration_s": duration_s}
    with tempfile.TemporaryDirectory(prefix="relay-bench-workers-") as tmp:
        workdir = Path(tmp)
        bare_port = free_port()
        async with peer_process("bare", bare_port, workdir) as bare:
            bare_load = await generate_load(
                f"http://{HOST}:{bare_port}{INGEST_PATH}",
                bare,
                warmup_s=min(WARMUP_S, duration_s / 2),
                duration_s=duration_s,
            )
        results["bare"] = bare_load.summary()
        print(f"    bare           {bare_load.rps:8.0f} req/s")
        smtp_port, sink_port = free_port(), free_port()
        async with (
            peer_process("smtp", smtp_port, workdir),
            peer_process("sink", sink_port, workdir),
        ):
            for ingest, dispatchers in LAYOUTS:
                name = f"{ingest} ingest + {dispatchers} dispatcher"
                layout_dir = workdir / f"relay-{ingest}-{dispatchers}"
                layout_dir.mkdir()
                summary = await one_layout(
                    layout_dir, ingest, dispatchers, smtp_port, sink_port, duration_s
                )
                summary["ratio_relay_to_bare"] = ratio(
                    summary["requests_per_s"], results["bare"]["requests_per_s"]
                )
                results[name] = summary
                times = summary["response_time"]
                print(
                    f"    {name:<26} {summary['requests_per_s']:8.0f} req/s "
                    f"({summary['ratio_relay_to_bare']} of bare), p99 "
                    f"{times.get('p99_ms', 0):6.1f} ms, delivering "
                    f"{summary['delivered_per_s']:6.0f}/s, relay cpu "
                    f"{summary['server_cpu_share']}"
                )
    return results
