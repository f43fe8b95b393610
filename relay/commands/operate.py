"""`relay replay`, `relay send-test` and `relay destinations`: the CLI's words for what
`relay.operations` does to the outbox. Nothing here decides; it parses and prints."""

from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import nullcontext

from relay.commands.history import when
from relay.commands.progress import ProgressBar
from relay.config import Config
from relay.durations import parse_since_ms
from relay.operations import (
    Queued,
    Refused,
    Settled,
    deliver_now,
    queue_replay,
    queue_send_test,
    set_destination_enabled,
)
from relay.operations import (
    destinations as destination_states,
)
from relay.store import Store
from relay.store.backend import open_store

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


async def replay(config: Config, args: argparse.Namespace) -> int:
    chosen = sum((bool(args.ids), args.failed, args.withheld))
    if chosen != 1 or (args.since and args.ids) or (args.affiliate and not args.withheld):
        print(
            "give delivery ids, --failed [--since WHEN] or --withheld [--since WHEN] "
            "[--affiliate CODE]",
            file=sys.stderr,
        )
        return EXIT_USAGE
    since_ms = parse_since_ms(args.since, time.time_ns() // 1_000_000) if args.since else None
    async with open_store(config) as store:
        queued = await queue_replay(
            config,
            store,
            ids=args.ids,
            failed=args.failed,
            withheld=args.withheld,
            since_ms=since_ms,
            affiliate_code=args.affiliate,
        )
        _print_queued(queued)
        if not queued.to_send:
            refused = bool(args.ids) and not args.failed
            return EXIT_FAILED if refused else EXIT_OK
        return await _send_now(config, store, queued.to_send, ProgressBar(len(queued.to_send)))


def _print_queued(queued: Queued) -> None:
    for delivery_id, reason in queued.regranted.withheld:
        print(f"delivery {delivery_id}: still withheld: {reason}")
    for old_id, new_ids in queued.regranted.replaced:
        listed = ", ".join(str(i) for i in new_ids)
        print(f"delivery {old_id}: decided again, replaced by deliveries {listed}")
    for refused in sorted([*queued.in_flight, *queued.not_replayable]):
        if refused in queued.in_flight:
            print(f"delivery {refused} is being sent right now; try again in a moment")
        else:
            print(
                f"delivery {refused}: not replayable (unknown, ignored, skipped or superseded, "
                "or its buyer data was purged past storage.retention)"
            )


async def send_test(config: Config, args: argparse.Namespace) -> int:
    async with open_store(config) as store:
        queued = await queue_send_test(
            config,
            store,
            affiliate_code=args.affiliate,
            producer_id=args.producer,
            destination_id=args.destination,
        )
        if isinstance(queued, Refused):
            print(queued.reason, file=sys.stderr)
            return EXIT_USAGE
        return await _send_now(config, store, queued.to_send, None)


async def _send_now(
    config: Config, store: Store, ids: list[int], progress: ProgressBar | None
) -> int:
    """Send `ids` (through the running server, if one runs) and report each outcome."""
    beside_logs = progress.beside_logs() if progress is not None else nullcontext()
    with beside_logs:
        settled = await deliver_now(
            config, store, ids, on_settled=progress.advance if progress else None
        )
    return _report(settled)


def _report(settled: list[Settled]) -> int:
    failed = 0
    for outcome in settled:
        row = outcome.row
        note = row.last_error if row.status != "delivered" else ""
        if outcome.waiting:
            note = "queued: the running server sends it (see `relay show`)"
        elif row.status == "pending":
            note = f"retry at {when(row.next_attempt_at_ms)}: {row.last_error}"
        elif row.status in ("withheld", "skipped"):
            # The gate said no when it came to send: the sender's config, which a running
            # server read when it started, is not the one this command read.
            note = f"{row.reason} (a running relay reads its config when it starts)"
        failed += row.status != "delivered"
        print(f"delivery {row.id} -> {row.destination_key}: {row.status} {note}".rstrip())
    return EXIT_OK if failed == 0 else EXIT_FAILED


async def destinations(config: Config, args: argparse.Namespace) -> int:
    key = args.enable or args.disable
    async with open_store(config) as store:
        if key:
            enable = bool(args.enable)
            refused = await set_destination_enabled(config, store, key, enable)
            if refused is not None:
                print(refused.reason, file=sys.stderr)
                return EXIT_USAGE
            print(f"{key}: {'enabled' if enable else 'disabled'}")
            return EXIT_OK
        states = await destination_states(config, store)
    rows = [
        {
            "key": s.key,
            "target": s.target,
            "enabled": s.enabled,
            "disabled_reason": s.disabled_reason,
            "consecutive_failures": s.health.consecutive_failures if s.health else 0,
            "last_success": when(s.health.last_success_at_ms) if s.health else "-",
            "last_error": s.health.last_error if s.health else "",
            "last_error_at": when(s.health.last_error_at_ms) if s.health else "-",
        }
        for s in states
    ]
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
