"""`relay recovery`: what sale recovery achieved, per producer and affiliate."""

from __future__ import annotations

import argparse
import json
import time

from relay.commands.history import when
from relay.config import Config
from relay.durations import glance_text, parse_since_ms
from relay.records import RecoveryFigures
from relay.recovery_report import RecoveryReport, recovery_report
from relay.store.backend import open_store

EXIT_OK = 0
_COLUMNS = ("PRODUCER", "AFFILIATE", "NOTIFIED", "PAID", "EXPIRED", "OPEN", "MEDIAN TIME TO PAY")


async def recovery(config: Config, args: argparse.Namespace) -> int:
    now_ms = time.time_ns() // 1_000_000
    since_ms = parse_since_ms(args.since, now_ms) if args.since else None
    async with open_store(config) as store:
        report = await recovery_report(
            store,
            now_ms,
            since_ms=since_ms,
            producer_id=args.producer,
            affiliate_code=args.affiliate,
        )
    if args.json:
        print(json.dumps(as_json(report), indent=2))
        return EXIT_OK
    print(f"slips notified since {when(report.since_ms)} UTC")
    if not report.rows:
        print("none" + ("" if config.recovery else " (sale recovery is off: no [recovery])"))
        return EXIT_OK
    print(format_table(report))
    return EXIT_OK


def as_json(report: RecoveryReport) -> dict[str, object]:
    return {
        "since_ms": report.since_ms,
        "rows": [
            {
                "producer_id": row.producer_id,
                "affiliate_code": row.affiliate_code,
                "notified": row.notified,
                "paid": row.paid,
                "expired": row.expired,
                "open": row.open,
                "median_s_to_pay": None
                if row.median_ms_to_pay is None
                else round(row.median_ms_to_pay / 1000, 3),
            }
            for row in report.rows
        ],
    }


def format_table(report: RecoveryReport) -> str:
    cells = [_cells(row) for row in report.rows]
    widths = [max(len(col), *(len(c[i]) for c in cells)) for i, col in enumerate(_COLUMNS)]
    lines = [_line(_COLUMNS, widths)] + [_line(cell, widths) for cell in cells]
    return "\n".join(lines)


def _cells(row: RecoveryFigures) -> tuple[str, ...]:
    return (
        row.producer_id,
        row.affiliate_code or "(all)",
        str(row.notified),
        str(row.paid),
        str(row.expired),
        str(row.open),
        "-" if row.median_ms_to_pay is None else glance_text(row.median_ms_to_pay / 1000),
    )


def _line(cells: tuple[str, ...], widths: list[int]) -> str:
    # Names to the left, figures to the right, as a table of numbers reads.
    parts = [
        c.ljust(w) if i < 2 else c.rjust(w)
        for i, (c, w) in enumerate(zip(cells, widths, strict=True))
    ]
    return "  ".join(parts).rstrip()
