"""`python -m bench`: run the benchmarks, print each result and issue 10's table, write
bench/results.json (the table is its "table" entry, and is printed as markdown)."""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import platform
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

from bench import channels, claim, ingest, latency, stores, workers
from bench.common import load_average
from bench.table import markdown, table

RESULTS = Path(__file__).resolve().parent / "results.json"
# Each takes how long its measured parts should last (None: the full, default runs).
Benchmark = Callable[[float | None], Awaitable[dict[str, Any]]]
QUICK_S = 2.0
BENCHMARKS: dict[str, Benchmark] = {
    "ingest": ingest.run,
    "latency": latency.run,
    "webhook": channels.run_webhook,
    "email": channels.run_email,
    "workers": workers.run,
    "stores": stores.run,
    "claim": claim.run,
}


async def run_all(names: list[str], seconds: float | None) -> dict[str, Any]:
    results: dict[str, Any] = {
        "meta": {
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "python": sys.version.split()[0],
            "aiohttp": aiohttp.__version__,
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "load_average_at_start": load_average(),
            "seconds": seconds,
        }
    }
    started = time.perf_counter()
    for name in names:
        section_started = time.perf_counter()
        results[name] = await BENCHMARKS[name](seconds)
        results[name]["load_average_after"] = load_average()
        print(f"    ({time.perf_counter() - section_started:.1f}s)\n")
    results["meta"]["elapsed_s"] = round(time.perf_counter() - started, 1)
    return results


def other_lines(results: dict[str, Any]) -> list[str]:
    """The rows beside issue 10's table: each process layout, and each store."""
    lines = []
    for layout, row in results.get("workers", {}).items():
        if isinstance(row, dict) and "delivered_per_s" in row:
            lines.append(
                f"{'layout ' + layout:<34} ingest/bare {row.get('ratio_relay_to_bare')}, "
                f"delivered {row['delivered_per_s']}/s"
            )
    for name, row in results.get("stores", {}).items():
        if isinstance(row, dict) and "ingest_per_s" in row:
            lines.append(
                f"{'store ' + name:<34} ingest {row['ingest_per_s']}/s, "
                f"delivery {row['delivery_per_s']}/s"
            )
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--only",
        nargs="+",
        choices=list(BENCHMARKS),
        metavar="NAME",
        help=f"run only these: {', '.join(BENCHMARKS)}",
    )
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--quick", action="store_true", help=f"runs of about {QUICK_S:g}s")
    length.add_argument(
        "--seconds", type=float, help="each measured run lasts about this long (a smoke test: 1)"
    )
    parser.add_argument(
        "--store",
        choices=["sqlite", "postgres", "both"],
        default="both",
        help="the rows of the stores benchmark (PostgreSQL: $RELAY_BENCH_POSTGRES)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"default: {RESULTS}")
    args = parser.parse_args(argv)
    chosen = ("sqlite", "postgres") if args.store == "both" else (args.store,)
    BENCHMARKS["stores"] = functools.partial(stores.run, stores=chosen)
    names = [name for name in BENCHMARKS if not args.only or name in args.only]
    seconds = QUICK_S if args.quick else args.seconds
    results = asyncio.run(run_all(names, seconds))
    results["table"] = table(results)
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print("summary (issue 10's table; ratios are medians of alternating rounds)\n")
    print(markdown(results["table"]))
    print("\n".join(["", *other_lines(results)]))
    print(f"results written to {args.out} ({results['meta']['elapsed_s']}s in all)")


if __name__ == "__main__":
    main()
