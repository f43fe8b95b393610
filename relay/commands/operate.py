"""`relay replay`, `relay send-test` and `relay destinations`: an operator's hands on the outbox.

Replays and tests are sent from this process, through the real channels, with the
same leases the server's dispatcher uses, so a running server never sends them twice.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import TextIO

from relay.commands.history import when
from relay.config import Config, destination_key
from relay.durations import parse_since_ms
from relay.ingest import new_message_id
from relay.samples import sample_slip_event
from relay.service import open_service, open_store, wake_server
from relay.store import Store
from relay.store.records import DeliveryKind, DeliveryStatus, NewDelivery, NewEvent
from relay.targets import describe, find_destination

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class ProgressBar:
    """A one-line bar on stderr, so a long replay shows it is moving."""

    def __init__(self, total: int, out: TextIO | None = None, width: int = 30) -> None:
        self.total, self.done, self._width = total, 0, width
        self._out = out or sys.stderr

    def advance(self, count: int = 1) -> None:
        self.done += count
        filled = self._width * self.done // max(self.total, 1)
        bar = "#" * filled + "." * (self._width - filled)
        self._out.write(f"\r[{bar}] {self.done}/{self.total}")
        if self.done >= self.total:
            self._out.write("\n")
        self._out.flush()


async def replay(config: Config, args: argparse.Namespace) -> int:
    if bool(args.ids) == bool(args.failed):
        print("give delivery ids, or --failed [--since WHEN]", file=sys.stderr)
        return EXIT_USAGE
    async with open_service(config) as service:
        store = service.store
        ids = list(args.ids)
        if args.failed:
            since_ms = parse_since_ms(args.since, _now_ms()) if args.since else None
            ids = await store.failed_since(since_ms)
        requeued = await store.requeue(ids, _now_ms())
        for missing in sorted(set(ids) - set(requeued)):
            print(f"delivery {missing}: not replayable (unknown, withheld, ignored or skipped)")
        if not requeued:
            return EXIT_FAILED if ids else EXIT_OK
        progress = ProgressBar(len(requeued))
        await service.dispatcher.run_burst(only_ids=requeued, on_done=progress.advance)
        _hand_over_retries(config)
        return await _report(store, requeued)


async def send_test(config: Config, args: argparse.Namespace) -> int:
    matches = [
        (p, a)
        for p in config.producers
        if args.producer in (None, p.id)
        for a in p.affiliates
        if a.code == args.affiliate
    ]
    if len(matches) != 1:
        found = "no" if not matches else "several"
        print(f"{found} affiliate {args.affiliate} in the config; use --producer", file=sys.stderr)
        return EXIT_USAGE
    producer, affiliate = matches[0]
    indexes = range(len(affiliate.destinations))
    if args.destination is not None:
        if args.destination not in indexes:
            print(
                f"affiliate {affiliate.code} has no destination {args.destination}", file=sys.stderr
            )
            return EXIT_USAGE
        indexes = range(args.destination, args.destination + 1)
    now_ms = _now_ms()
    event = sample_slip_event(affiliate.code, affiliate.name, affiliate.locale, now_ms)
    deliveries = tuple(
        NewDelivery(
            status=DeliveryStatus.PENDING,
            reason="test notification (relay send-test)",
            message_id=new_message_id(),
            affiliate_code=affiliate.code,
            destination_key=destination_key(producer.id, affiliate.code, i),
            channel=affiliate.destinations[i].kind,
            kind=DeliveryKind.TEST,
        )
        for i in indexes
    )
    if not deliveries:
        print(f"affiliate {affiliate.code} has no destinations", file=sys.stderr)
        return EXIT_USAGE
    new_event = NewEvent(
        producer_id=producer.id,
        hotmart_id=event.id,
        event_name=event.event,
        source="send-test",
        transaction_code=event.purchase.transaction,
        product_id=event.product.id,
        payload_json=event.model_dump_json(),
        deliveries=deliveries,
    )
    async with open_service(config) as service:
        result = await service.store.ingest(new_event, now_ms)
        ids = await service.store.delivery_ids_of_event(result.event_row_id)
        await service.dispatcher.run_burst(only_ids=ids)
        _hand_over_retries(config)
        return await _report(service.store, ids)


def _hand_over_retries(config: Config) -> None:
    """A failed attempt here left a retry in the outbox; wake the server to schedule it."""
    wake_server(config.resolve_path(config.storage.sqlite_path))


async def _report(store: Store, ids: list[int]) -> int:

    failed = 0
    for delivery_id in ids:
        detail = await store.delivery(delivery_id)
        if detail is None:
            continue
        row = detail.delivery
        note = row.last_error if row.status != "delivered" else ""
        if row.status == "pending":
            note = f"retry at {when(row.next_attempt_at_ms)}: {row.last_error}"
        failed += row.status != "delivered"
        print(f"delivery {row.id} -> {row.destination_key}: {row.status} {note}".rstrip())
    return EXIT_OK if failed == 0 else EXIT_FAILED


async def destinations(config: Config, args: argparse.Namespace) -> int:
    key = args.enable or args.disable
    async with open_store(config) as store:
        if key:
            if find_destination(config, key) is None:
                print(
                    f"no destination {key}; run `relay destinations` for the keys", file=sys.stderr
                )
                return EXIT_USAGE
            enable = bool(args.enable)
            reason = "" if enable else "disabled by an operator"
            await store.set_destination_enabled(key, enable, reason, _now_ms())
            print(f"{key}: {'enabled' if enable else 'disabled'}")
            return EXIT_OK
        health = await store.destination_health()
    rows = []
    for producer in config.producers:
        for affiliate in producer.affiliates:
            for index, destination in enumerate(affiliate.destinations):
                k = destination_key(producer.id, affiliate.code, index)
                h = health.get(k)
                enabled = destination.enabled and (h.enabled if h else True)
                rows.append(
                    {
                        "key": k,
                        "target": describe(destination),
                        "enabled": enabled,
                        "disabled_reason": (h.disabled_reason if h else "")
                        or ("" if destination.enabled else "enabled = false in config"),
                        "consecutive_failures": h.consecutive_failures if h else 0,
                        "last_success": when(h.last_success_at_ms) if h else "-",
                        "last_error": h.last_error if h else "",
                        "last_error_at": when(h.last_error_at_ms) if h else "-",
                    }
                )
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    for row in rows:
        state = "enabled" if row["enabled"] else f"DISABLED ({row['disabled_reason']})"
        print(f"{row['key']}  {row['target']}  {state}")
        print(
            f"    failures in a row: {row['consecutive_failures']}  "
            f"last success: {row['last_success']}  "
            f"last error: {row['last_error_at']} {row['last_error'] or '-'}"
        )
    return EXIT_OK
