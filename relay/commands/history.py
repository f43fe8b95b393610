"""`relay history` and `relay show`: what happened to each event, and why."""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from datetime import UTC, datetime

from relay.config import Config
from relay.durations import parse_since_ms
from relay.operations import history as history_page
from relay.operations import show as show_delivery
from relay.records import DeliveryRow, HistoryFilter
from relay.store.backend import open_store

EXIT_OK = 0
EXIT_NOT_FOUND = 1
_COLUMNS = (
    "ID",
    "WHEN (UTC)",
    "STATUS",
    "EVENT",
    "NOTICE",
    "AFFILIATE",
    "CHANNEL",
    "TRIES",
    "REASON",
)


def when(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


async def history(config: Config, args: argparse.Namespace) -> int:
    since_ms = parse_since_ms(args.since, time.time_ns() // 1_000_000) if args.since else None
    query = HistoryFilter(
        status=args.status,
        affiliate_code=args.affiliate,
        event_name=args.event,
        channel=args.channel,
        since_ms=since_ms,
        before_id=args.before,
        limit=args.limit,
        transaction_code=args.transaction,
        hotmart_id=args.hotmart_id,
        notification=args.notification,
    )
    async with open_store(config) as store:
        page = await history_page(store, query)
    rows = page.rows
    if args.json:
        print(json.dumps([asdict(row) for row in rows], indent=2))
    elif not rows:
        print("no deliveries yet" if page.store_empty else "no deliveries match these filters")
    else:
        print(format_table(rows))
        if len(rows) == query.limit:
            print(f"(more: relay history --before {rows[-1].id})")
    return EXIT_OK


def format_table(rows: list[DeliveryRow]) -> str:
    cells = [
        (
            str(r.id),
            when(r.created_at_ms),
            r.status,
            r.event_name,
            r.notification or "-",
            r.affiliate_code or "-",
            r.channel or "-",
            str(r.attempts),
            _reason(r),
        )
        for r in rows
    ]
    widths = [max(len(col), *(len(c[i]) for c in cells)) for i, col in enumerate(_COLUMNS[:-1])]
    lines = ["  ".join(col.ljust(w) for col, w in zip(_COLUMNS, [*widths, 0], strict=True))]
    lines += [
        "  ".join(c.ljust(w) for c, w in zip(cell, [*widths, 0], strict=True)) for cell in cells
    ]
    return "\n".join(line.rstrip() for line in lines)


def _reason(row: DeliveryRow) -> str:
    if row.status == "pending" and row.last_error:
        return f"retry at {when(row.next_attempt_at_ms)}: {row.last_error}"
    if row.status == "failed":
        return row.last_error or row.reason
    return row.reason


async def show(config: Config, args: argparse.Namespace) -> int:
    async with open_store(config) as store:
        detail = await show_delivery(store, args.id)
    if detail is None:
        print(f"no delivery {args.id}")
        return EXIT_NOT_FOUND
    if args.json:
        print(json.dumps(asdict(detail), indent=2))
        return EXIT_OK
    d = detail.delivery
    says = f", {d.notification}" if d.notification else ""
    print(f"delivery {d.id} ({d.kind}{says}): {d.status}")
    print(f"  reason:       {_reason(d)}")
    print(
        f"  event:        {d.event_name} {d.hotmart_id} (transaction {d.transaction_code or '-'})"
    )
    print(f"  producer:     {d.producer_id}   affiliate: {d.affiliate_code or '-'}")
    print(f"  destination:  {d.destination_key or '-'} ({d.channel or '-'})")
    print(f"  message id:   {d.message_id}")
    print(f"  created:      {when(d.created_at_ms)}   updated: {when(d.updated_at_ms)}")
    if d.status == "pending":
        print(f"  next attempt: {when(d.next_attempt_at_ms)}")
    if not detail.attempts:
        print("  attempts:     none")
    for a in detail.attempts:
        code = a.status_code if a.status_code is not None else "-"
        print(
            f"\n  attempt {a.attempt_no} at {when(a.started_at_ms)}: {a.outcome}, "
            f"status {code}, {a.latency_ms:.1f} ms"
        )
        if a.detail:
            print(f"    detail:   {a.detail}")
        if a.response_headers:
            print(f"    headers:  {json.dumps(a.response_headers)}")
        if a.response_excerpt:
            print("    response: " + a.response_excerpt[:2000].replace("\n", "\n              "))
        if a.request_payload:
            print("    sent:")
            print("      " + a.request_payload.replace("\n", "\n      "))
    return EXIT_OK
