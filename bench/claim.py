"""Row 5: what one claim costs as the backlog grows, through the store protocol.

A backlog of pending webhooks spread over a few destinations is committed through
`Store.ingest` (events of many rows each, so seeding 200k stays quick); then the
dispatcher's pattern is replayed: claim the free slots while some rows are in flight
(their ids excluded), settle what was claimed, claim again. Only `claim_due` is timed.
The target is a claim that costs the same at any backlog (issue 10: at most 2 ms).
"""

from __future__ import annotations

import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench.common import relay_config, relay_store, write_relay_config
from relay.records import DeliveryKind, DeliveryStatus, NewDelivery, NewEvent

BACKLOGS = (1_000, 20_000, 200_000)
QUICK_BACKLOGS = (1_000, 5_000)  # the smoke test's: the pattern, not the scale
DESTINATIONS = 16  # affiliates with work waiting during a launch
ROWS_PER_EVENT = 200  # seeding only: many rows per commit
CONCURRENCY = 64  # delivery.concurrency's default: the claim's `limit` when idle
PER_DESTINATION = 4  # delivery.per_destination_concurrency's default
CLAIMS = 200  # timed claims per backlog
LEASE_MS = 60_000


async def run(seconds: float | None = None) -> dict[str, Any]:
    backlogs = QUICK_BACKLOGS if seconds is not None else BACKLOGS
    claims = 20 if seconds is not None else CLAIMS
    print(f"[5] claim: one claim_due with {', '.join(f'{b:,}' for b in backlogs)} pending")
    result: dict[str, Any] = {"claims_per_backlog": claims}
    for backlog in backlogs:
        # Never more claims than the backlog feeds: an empty queue is cheap to claim from.
        timings = await _claims_at(backlog, min(claims, backlog // CONCURRENCY))
        result[str(backlog)] = timings
        print(
            f"    {backlog:>8,} pending: median {timings['median_ms']} ms, "
            f"p95 {timings['p95_ms']} ms per claim"
        )
    first, last = (result[str(b)]["median_ms"] for b in (backlogs[0], backlogs[-1]))
    result["largest_backlog"] = backlogs[-1]
    result["median_ms_at_largest"] = last
    result["growth_largest_to_smallest"] = round(last / first, 2) if first else None
    return result


async def _claims_at(backlog: int, claims: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="relay-bench-claim-") as tmp:
        workdir = Path(tmp)
        url = "http://127.0.0.1:9/hook"  # never sent to: only claimed
        config = write_relay_config(
            workdir,
            relay_config(
                workdir,
                0,
                [{"kind": "webhook", "url": url, "secret": "whsec_" + "A" * 32}],
                allow_private_networks=True,
            ),
        )
        async with relay_store(config) as store:
            now_ms = time.time_ns() // 1_000_000
            for start in range(0, backlog, ROWS_PER_EVENT):
                rows = min(ROWS_PER_EVENT, backlog - start)
                await store.ingest(_event(rows), now_ms)
            held: dict[int, str] = {}  # in flight: id -> lease token, oldest first
            samples_s = []
            for _ in range(claims):
                now_ms += 1
                started = time.perf_counter()
                claim = await store.claim_due(
                    now_ms,
                    now_ms + LEASE_MS,
                    CONCURRENCY - len(held),
                    PER_DESTINATION,
                    exclude_ids=list(held),
                )
                samples_s.append(time.perf_counter() - started)
                held.update((d.id, d.lease_token) for d in claim.deliveries)
                # Half of what is in flight finishes before the next claim, oldest first.
                for delivery_id in list(held)[: len(held) // 2]:
                    await store.resolve_without_attempt(
                        delivery_id,
                        DeliveryStatus.DELIVERED,
                        "bench",
                        now_ms,
                        lease_token=held.pop(delivery_id),
                    )
    ordered = sorted(samples_s)
    return {
        "median_ms": round(statistics.median(ordered) * 1000, 3),
        "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))] * 1000, 3),
    }


def _event(rows: int) -> NewEvent:
    """One stored event with `rows` pending webhooks, round-robin over the destinations."""
    return NewEvent(
        producer_id="bench",
        hotmart_id=str(uuid.uuid4()),
        event_name="PURCHASE_BILLET_PRINTED",
        source="2.0.0",
        transaction_code="",
        product_id="",
        payload_json="{}",
        deliveries=tuple(
            NewDelivery(
                status=DeliveryStatus.PENDING,
                reason="",
                message_id=f"msg_{uuid.uuid4().hex}",
                affiliate_code="K12345678M",
                destination_key=f"bench/K12345678M/hook-{n % DESTINATIONS}",
                channel="webhook",
                kind=DeliveryKind.NOTIFICATION,
            )
            for n in range(rows)
        ),
    )
