"""Issue 10's table from one `make bench` run: each row's figure, its target, met or not."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Row:
    measure: str
    section: str  # the benchmark whose results hold the figure
    figure: Callable[[dict[str, Any]], float | None]
    target: str
    met: Callable[[float, dict[str, Any]], bool]  # the figure, and the section it came from
    detail: Callable[[dict[str, Any]], str] = lambda _: ""


def _at_500(latency: dict[str, Any]) -> dict[str, Any]:
    end_to_end: dict[str, Any] = (latency.get("steady 500/s") or {}).get("end_to_end", {})
    return end_to_end


def _p99_at_500(latency: dict[str, Any]) -> float | None:
    value = _at_500(latency).get("p99_ms")
    return None if value is None else float(value)


def _ratio_to_raw(result: dict[str, Any]) -> float | None:
    value = result["ratio_relay_to_raw"]
    return None if value is None else float(value)


def _relay_vs_raw(unit: str) -> Callable[[dict[str, Any]], str]:
    return lambda r: f"{r['relay']['median_per_s']:.0f} vs {r['raw']['median_per_s']:.0f}{unit}"


def _at_least(bound: float) -> Callable[[float, dict[str, Any]], bool]:
    return lambda value, _: value >= bound


def _at_most(bound: float) -> Callable[[float, dict[str, Any]], bool]:
    return lambda value, _: value <= bound


ROWS = (
    Row(
        "ingest, nothing to dispatch (affiliate withheld) / bare aiohttp",
        "ingest",
        lambda r: r["withheld"]["ratio_relay_to_bare"],
        ">= 0.50",
        _at_least(0.5),
        lambda r: (
            f"{r['withheld']['requests_per_s']:.0f} vs {r['bare']['requests_per_s']:.0f} req/s"
        ),
    ),
    Row(
        "ingest while delivering each event by email and webhook / bare",
        "ingest",
        lambda r: r["delivering"]["ratio_relay_to_bare"],
        ">= 0.30 while delivering >= 700/s",
        lambda v, r: v >= 0.3 and r["delivered_per_s"] >= 700,
        lambda r: f"delivering {r['delivered_per_s']}/s",
    ),
    Row(
        "end to end at a steady 500 events/s, p99 (ms)",
        "latency",
        _p99_at_500,
        "<= 50 ms",
        _at_most(50),
        lambda r: f"median {_at_500(r).get('median_ms')} ms",
    ),
    Row(
        "drain of 30k pending webhooks / raw aiohttp client",
        "webhook",
        _ratio_to_raw,
        ">= 0.50",
        _at_least(0.5),
        _relay_vs_raw("/s"),
    ),
    Row(
        "one claim with 200k pending (ms)",
        "claim",
        lambda r: r["median_ms_at_largest"],
        "<= 2 ms at any backlog",
        _at_most(2),
        lambda r: ", ".join(
            f"{int(k):,}: {v['median_ms']} ms" for k, v in r.items() if k.isdigit()
        ),
    ),
    Row(
        "email / raw pooled aiosmtplib",
        "email",
        _ratio_to_raw,
        ">= 0.70",
        _at_least(0.7),
        _relay_vs_raw(" msg/s"),
    ),
)


def table(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows whose benchmark ran, each with its figure, target and whether it is met."""
    rows = []
    for row in ROWS:
        section = results.get(row.section)
        if section is None:
            continue
        figure = row.figure(section)
        rows.append(
            {
                "measure": row.measure,
                "figure": figure,
                "target": row.target,
                "met": None if figure is None else row.met(figure, section),
                "detail": row.detail(section),
            }
        )
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| measure | now | target | met | detail |", "|---|---|---|---|---|"]
    for row in rows:
        met = {True: "yes", False: "**no**", None: "?"}[row["met"]]
        lines.append(
            f"| {row['measure']} | {row['figure']} | {row['target']} | {met} | {row['detail']} |"
        )
    return "\n".join(lines)
