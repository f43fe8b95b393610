"""The memory target (issue 10): `relay serve` stays under 150 MB RSS, and flat, while it
drains a backlog of 1,000,000 pending deliveries. Not part of `make bench` (seeding a
million rows takes minutes): `python -m bench.memory [--pending N] [--seconds S]`.

The backlog is committed through the store protocol (`Store.ingest`), as events of
`ROWS_PER_EVENT` deliveries each so that seeding stays quick; each delivery is a real,
sendable webhook of the OXXO slip to the bench sink. Then `relay serve` starts against
it and its resident set size is sampled from /proc while it drains for `--seconds`.
Nothing may hold the backlog in memory: the claim reads a bounded number of rows.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.common import (
    HOST,
    SECRET,
    EventBodies,
    free_port,
    peer_process,
    relay_config,
    relay_process,
    relay_store,
    settled_count,
    tree_pids,
    write_relay_config,
)
from relay.config import load_config
from relay.decide import decide
from relay.hotmart import parse_json_event
from relay.outbox import decided_rows, new_event
from relay.records import NewEvent
from relay.store.backend import open_store

PENDING = 1_000_000
SECONDS = 30.0
ROWS_PER_EVENT = 100
CONCURRENT_INGESTS = 20  # events committed together by the group commit
SAMPLE_EVERY_S = 0.5
TARGET_MB = 150


def _status_mb(path: str, field: str) -> float | None:
    """One `kB` field of a /proc file (Linux), in MB; None once the process is gone."""
    try:
        text = Path(path).read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(field):
            return int(line.split()[1]) / 1024
    return None


def memory_mb(pid: int) -> tuple[float, float] | None:
    """The largest resident set of any process of the relay's tree (the parent, its
    ingest and dispatcher processes), and the tree's proportional set size in all (PSS:
    pages shared between them counted once), in MB."""
    pids = tree_pids(pid)
    rss = [mb for one in pids if (mb := _status_mb(f"/proc/{one}/status", "VmRSS:")) is not None]
    pss = [_status_mb(f"/proc/{one}/smaps_rollup", "Pss:") or 0.0 for one in pids]
    return (max(rss), sum(pss)) if rss else None


async def seed_backlog(config_path: Path, pending: int) -> float:
    """Commit `pending` deliveries through the store protocol; seconds it took."""
    config = load_config(config_path, {})
    producer = config.producers[0]
    bodies = EventBodies()

    def one_event(rows: int) -> NewEvent:
        event = parse_json_event(json.loads(bodies.next()[1]))
        (row,) = decided_rows(decide(producer, event))
        copies = tuple(replace(row, message_id=f"msg_{uuid.uuid4().hex}") for _ in range(rows))
        return new_event(producer.id, event, copies)

    started = time.perf_counter()
    async with open_store(config) as store:
        now_ms = time.time_ns() // 1_000_000
        left = pending
        while left > 0:
            sizes: list[int] = []
            while left > 0 and len(sizes) < CONCURRENT_INGESTS:
                sizes.append(min(ROWS_PER_EVENT, left))
                left -= sizes[-1]
            await asyncio.gather(*(store.ingest(one_event(n), now_ms) for n in sizes))
    return time.perf_counter() - started


async def run(pending: int, seconds: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="relay-bench-memory-") as tmp:
        workdir = Path(tmp)
        sink_port, port = free_port(), free_port()
        url = f"http://{HOST}:{sink_port}/hooks/bench"
        destination = {"kind": "webhook", "url": url, "secret": SECRET}
        config = write_relay_config(
            workdir, relay_config(workdir, port, [destination], allow_private_networks=True)
        )
        print(f"seeding {pending:,} pending deliveries through the store protocol...")
        seed_s = await seed_backlog(config, pending)
        db_mb = sum(p.stat().st_size for p in workdir.glob("relay.sqlite3*")) / 1e6
        print(f"    seeded in {seed_s:.0f}s; the store is {db_mb:.0f} MB on disk")
        samples: list[tuple[float, float, float]] = []
        async with (
            peer_process("sink", sink_port, workdir),
            relay_process(config, port, workdir) as relay,
            relay_store(config) as store,
        ):
            delivered_before, _ = await settled_count(store)
            started = time.monotonic()
            while (elapsed := time.monotonic() - started) < seconds:
                sample = memory_mb(relay.process.pid)
                if sample is not None:
                    samples.append((round(elapsed, 1), round(sample[0], 1), round(sample[1], 1)))
                await asyncio.sleep(SAMPLE_EVERY_S)
            delivered_after, _ = await settled_count(store)
    values = [rss for _, rss, _ in samples]
    tree = [pss for _, _, pss in samples]
    second_half = values[len(values) // 2 :]
    result = {
        "pending": pending,
        "seconds": seconds,
        "seed_s": round(seed_s, 1),
        "store_mb_on_disk": round(db_mb, 1),
        "delivered_while_sampled": delivered_after - delivered_before,
        "rss_mb_first": values[0] if values else None,
        "rss_mb_max": max(values, default=None),
        "rss_mb_last": values[-1] if values else None,
        # Flat: the second half of the run grows by no more than this.
        "rss_mb_growth_second_half": (
            round(second_half[-1] - second_half[0], 1) if len(second_half) > 1 else None
        ),
        "tree_pss_mb_max": max(tree, default=None),
        "tree_pss_mb_last": tree[-1] if tree else None,
        "target_mb": TARGET_MB,
        "samples": samples,
    }
    print(
        f"    relay serve, largest process RSS: first {result['rss_mb_first']} MB, max"
        f" {result['rss_mb_max']} MB, last {result['rss_mb_last']} MB over {seconds:g}s (target"
        f" <= {TARGET_MB} MB); all its processes (PSS) at most {result['tree_pss_mb_max']} MB;"
        f" {result['delivered_while_sampled']:,} delivered meanwhile"
    )
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__)
    parser.add_argument("--pending", type=int, default=PENDING)
    parser.add_argument("--seconds", type=float, default=SECONDS)
    parser.add_argument("--out", type=Path, help="write the result as JSON here too")
    args = parser.parse_args(argv)
    result = asyncio.run(run(args.pending, args.seconds))
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
