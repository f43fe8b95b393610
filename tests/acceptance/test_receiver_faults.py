"""Receiver faults, one test each, against the real `relay serve` and a sink in its own process.

One relay serves the whole module; each fault has its own affiliate and sink path, so
the tests do not see each other's deliveries. Each asserts what the store recorded (read
through `relay show --json`, as an operator would) and that the relay's peak memory
grew by less than a fixed bound while it handled the fault.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from relay.channels.base import MAX_RESPONSE_EXCERPT_BYTES
from tests.acceptance.conftest import Figures
from tests.acceptance.harness import (
    Relay,
    outcome_line,
    relay_config,
    running,
    slip_event,
    wait_for,
    webhook_affiliate,
)
from tests.acceptance.peer_control import Sink

TIMEOUT_S = 1.0  # delivery.timeout of this relay: the slow faults take longer than this
RETRY_AFTER_S = 1
ATTEMPTS = 2  # retry_delays has one entry: one try and one retry
SETTLE_S = 30.0
# A fault may cost the relay some memory, but far less than the 10 MB reply it must not read.
PEAK_GROWTH_BOUND_KB = 6 * 1024

FAULTS = (
    "status-500",
    "status-503",
    "status-429",
    "status-410",
    "status-301",
    "status-302",
    "timeout",
    "reset",
    "no-answer",
    "slow-drip",
    "huge-reply",
    "bad-utf8",
    "bad-tls",
)


def _url(sink: Sink, fault: str) -> str:
    if fault == "no-answer":
        return sink.hang_url
    return sink.url(f"/hook/{fault}", tls=fault == "bad-tls")


@pytest.fixture(scope="module")
def relay(workdir: Path, sink: Sink) -> Iterator[Relay]:
    raw = relay_config(workdir, timeout=f"{TIMEOUT_S:g}s", retry_delays=["100ms"])
    raw["producers"][0]["affiliates"] = [
        webhook_affiliate(fault, _url(sink, fault)) for fault in FAULTS
    ]
    with running(Relay.from_config(raw, workdir)) as started:
        yield started


def deliver(
    relay: Relay, fault: str, figures: Figures
) -> tuple[dict[str, Any], dict[str, Any], dict[str, int]]:
    """Post one slip for the fault's affiliate; return its delivery once settled, the
    detail `relay show --json` gives, and the relay's memory before and at its peak."""
    relay.reset_peak_memory()
    before = relay.memory_kb()["VmRSS"]
    event = slip_event(fault)
    reply = relay.post(event)
    assert reply.status == 200, reply
    row = wait_for(
        lambda: relay.settled(event["id"]), timeout_s=SETTLE_S, what=f"{fault} delivery settled"
    )
    detail = relay.show(row["id"])
    peak = relay.memory_kb()["VmHWM"]
    figures.add(outcome_line(fault, row, detail))
    return dict(row), detail, {"before_kb": before, "peak_kb": peak}


def assert_memory_bounded(memory: dict[str, int], figures: Figures) -> None:
    growth = memory["peak_kb"] - memory["before_kb"]
    figures.add(f"RSS {memory['before_kb']} kB, peak {memory['peak_kb']} kB (+{growth} kB)")
    assert growth < PEAK_GROWTH_BOUND_KB, memory


def outcomes(detail: dict[str, Any]) -> list[tuple[str, int | None]]:
    return [(a["outcome"], a["status_code"]) for a in detail["attempts"]]


def test_500_is_retried_then_failed(relay: Relay, sink: Sink, figures: Figures) -> None:
    sink.script("/hook/status-500", default={"status": 500, "body": "boom"})

    row, detail, memory = deliver(relay, "status-500", figures)

    assert row["status"] == "failed"
    assert outcomes(detail) == [("transient", 500)] * ATTEMPTS
    assert detail["attempts"][0]["response_excerpt"] == "boom"
    assert row["last_error"].startswith(f"gave up after {ATTEMPTS} attempts: HTTP 500")
    assert_memory_bounded(memory, figures)


def test_503_with_retry_after_is_honoured(relay: Relay, sink: Sink, figures: Figures) -> None:
    sink.script(
        "/hook/status-503",
        {"status": 503, "headers": {"Retry-After": str(RETRY_AFTER_S)}},
        default={"status": 200},
    )

    row, detail, memory = deliver(relay, "status-503", figures)

    assert row["status"] == "delivered"
    assert outcomes(detail) == [("transient", 503), ("success", 200)]
    first, second = detail["attempts"]
    assert first["response_headers"]["retry-after"] == str(RETRY_AFTER_S)
    # The retry waited for the receiver's Retry-After, not for the 100 ms schedule.
    assert second["started_at_ms"] >= first["started_at_ms"] + RETRY_AFTER_S * 1000
    assert_memory_bounded(memory, figures)


def test_429_is_retried(relay: Relay, sink: Sink, figures: Figures) -> None:
    sink.script("/hook/status-429", {"status": 429}, default={"status": 200})

    row, detail, memory = deliver(relay, "status-429", figures)

    assert row["status"] == "delivered"
    assert outcomes(detail) == [("transient", 429), ("success", 200)]
    assert_memory_bounded(memory, figures)


def test_410_fails_at_once_and_disables_the_destination(
    relay: Relay, sink: Sink, figures: Figures
) -> None:
    sink.script("/hook/status-410", default={"status": 410})

    row, detail, memory = deliver(relay, "status-410", figures)

    assert row["status"] == "failed"
    assert outcomes(detail) == [("permanent", 410)]
    listed = relay.cli("destinations", "--json")
    health = {d["key"]: d for d in json.loads(listed.stdout)}[row["destination_key"]]
    assert row["destination_key"].startswith("acme/status-410/webhook-")
    assert health["enabled"] is False
    assert "410" in health["disabled_reason"]
    assert_memory_bounded(memory, figures)


@pytest.mark.parametrize("code", [301, 302])
def test_redirect_is_a_failure_and_never_followed(
    relay: Relay, sink: Sink, figures: Figures, code: int
) -> None:
    fault = f"status-{code}"
    elsewhere = sink.url(f"/followed/{code}")
    sink.script(f"/hook/{fault}", default={"status": code, "headers": {"Location": elsewhere}})

    row, detail, memory = deliver(relay, fault, figures)

    assert row["status"] == "failed"
    assert [outcome for outcome, _ in outcomes(detail)] == ["transient"] * ATTEMPTS
    assert {a["status_code"] for a in detail["attempts"]} == {code}
    assert detail["attempts"][0]["detail"] == f"redirect not followed ({code} to {elsewhere})"
    assert sink.hits(f"/followed/{code}") == []
    assert_memory_bounded(memory, figures)


def test_a_reply_slower_than_the_timeout_is_a_timeout(
    relay: Relay, sink: Sink, figures: Figures
) -> None:
    sink.script("/hook/timeout", default={"delay_s": 3 * TIMEOUT_S})

    row, detail, memory = deliver(relay, "timeout", figures)

    assert row["status"] == "failed"
    assert outcomes(detail) == [("transient", None)] * ATTEMPTS
    assert detail["attempts"][0]["detail"] == f"timed out after {TIMEOUT_S:g}s"
    assert_memory_bounded(memory, figures)


def test_a_connection_reset_is_retried(relay: Relay, sink: Sink, figures: Figures) -> None:
    sink.script("/hook/reset", {"reset": True}, default={"status": 200})

    row, detail, memory = deliver(relay, "reset", figures)

    assert row["status"] == "delivered"
    assert outcomes(detail) == [("transient", None), ("success", 200)]
    assert detail["attempts"][0]["detail"].startswith("connection failed: ")
    assert_memory_bounded(memory, figures)


def test_a_receiver_that_accepts_and_never_answers_times_out(
    relay: Relay, sink: Sink, figures: Figures
) -> None:
    accepted_before = sink.hang_counts()["accepted"]

    row, detail, memory = deliver(relay, "no-answer", figures)

    assert row["status"] == "failed"
    assert outcomes(detail) == [("transient", None)] * ATTEMPTS
    assert detail["attempts"][0]["detail"] == f"timed out after {TIMEOUT_S:g}s"
    counts = sink.hang_counts()
    assert counts["accepted"] - accepted_before == ATTEMPTS
    # The relay hung up each time: it holds no socket for a receiver that never answers.
    wait_for(
        lambda: sink.hang_counts()["closed"] == sink.hang_counts()["accepted"],
        timeout_s=SETTLE_S,
        what="the relay closed its connections to the silent receiver",
    )
    assert_memory_bounded(memory, figures)


def test_a_slow_drip_reply_is_cut_at_the_timeout(
    relay: Relay, sink: Sink, figures: Figures
) -> None:
    """Headers at once, then one byte every 100 ms for 1,000 s: the attempt still ends."""
    sink.script("/hook/slow-drip", default={"drip": {"interval_s": 0.1, "chunks": 10_000}})

    row, detail, memory = deliver(relay, "slow-drip", figures)

    assert row["status"] == "failed"
    assert [outcome for outcome, _ in outcomes(detail)] == ["transient"] * ATTEMPTS
    assert detail["attempts"][0]["detail"] == f"timed out after {TIMEOUT_S:g}s"
    assert_memory_bounded(memory, figures)


def test_a_10_mb_reply_is_read_only_up_to_the_excerpt(
    relay: Relay, sink: Sink, figures: Figures
) -> None:
    sink.script("/hook/huge-reply", default={"status": 200, "big_bytes": 10 * 1024 * 1024})

    row, detail, memory = deliver(relay, "huge-reply", figures)

    assert row["status"] == "delivered"
    (attempt,) = detail["attempts"]
    stored = len(attempt["response_excerpt"].encode())
    assert stored == MAX_RESPONSE_EXCERPT_BYTES
    figures.add(f"10 MB reply: {stored} bytes stored")
    assert_memory_bounded(memory, figures)


def test_a_reply_that_is_not_utf8_is_stored_readably(
    relay: Relay, sink: Sink, figures: Figures
) -> None:
    sink.script(
        "/hook/bad-utf8",
        default={
            "status": 200,
            "headers": {"Content-Type": "text/plain; charset=utf-8"},
            "body_hex": "6f6bff fe80c0 00".replace(" ", ""),
        },
    )

    row, detail, memory = deliver(relay, "bad-utf8", figures)

    assert row["status"] == "delivered"
    (attempt,) = detail["attempts"]
    assert attempt["response_excerpt"].startswith("ok\ufffd")
    assert_memory_bounded(memory, figures)


def test_a_tls_certificate_nobody_vouches_for_is_refused(
    relay: Relay, sink: Sink, figures: Figures
) -> None:
    row, detail, memory = deliver(relay, "bad-tls", figures)

    assert row["status"] == "failed"
    assert outcomes(detail) == [("transient", None)] * ATTEMPTS
    assert "certificate verify failed" in detail["attempts"][0]["detail"]
    assert sink.hits("/hook/bad-tls") == []  # nothing was sent over the untrusted channel
    assert_memory_bounded(memory, figures)
