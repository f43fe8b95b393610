"""At most one attempt of a delivery is in flight at any moment.

The sink holds the first attempt open and records when each request arrived and when
it ended (answered, or the client went away). Two requests with one webhook-id whose
times overlap are two attempts of one delivery in flight at once.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.acceptance.harness import (
    REPO,
    Relay,
    relay_config,
    running,
    slip_event,
    wait_for,
    webhook_affiliate,
)
from tests.acceptance.peer_control import Sink

SETTLE_S = 60.0
HOLD_S = 40.0  # the sink answers a held request after this, if the test never releases it
# How long a second attempt gets to show itself while the first is held. A relay that
# sends one needs a second or two; a correct one sends none, and only then is this waited.
SECOND_ATTEMPT_WINDOW_S = 20.0


@pytest.fixture(scope="module")
def relay(workdir: Path, sink: Sink) -> Iterator[Relay]:
    # The attempt may take as long as the sink holds it: the timeout is not what ends it.
    raw = relay_config(workdir, timeout="90s")
    raw["producers"][0]["affiliates"] = [
        webhook_affiliate(code, sink.url(f"/{code}")) for code in ("replayed", "outleased")
    ]
    started = Relay.from_config(raw, workdir)
    started.module = "tests.acceptance.clock_shift"
    with running(started):
        yield started


def overlaps(hits: list[dict[str, Any]]) -> list[tuple[int, int]]:
    """Pairs of requests with one webhook-id that were in flight at the same time."""
    found = []
    ordered = sorted(hits, key=lambda h: h["arrived"])
    for index, earlier in enumerate(ordered):
        ended = earlier["finished"] if earlier["finished"] is not None else float("inf")
        for later in ordered[index + 1 :]:
            same = later["headers"]["webhook-id"] == earlier["headers"]["webhook-id"]
            if same and later["arrived"] < ended:
                found.append((earlier["seq"], later["seq"]))
    return found


def at_most_one_in_flight(
    relay: Relay, sink: Sink, code: str, meddle: Callable[[dict[str, Any]], Callable[[], bool]]
) -> None:
    """Hold a slip's first attempt open, let `meddle` try to start a second, then check
    the sink's timeline. `meddle` returns a predicate: true once it can do no more."""
    sink.script(f"/{code}", {"hold": True, "hold_max_s": HOLD_S}, default={"status": 200})
    event = slip_event(code)
    assert relay.post(event).status == 200
    wait_for(lambda: len(sink.hits(f"/{code}")) == 1, timeout_s=SETTLE_S, what="first attempt")
    (row,) = relay.deliveries_of(event["id"])
    gave_up = meddle(dict(row))
    # A relay that sends a second attempt does so within a second or two; only a correct
    # one makes this wait out the window.
    deadline = time.monotonic() + SECOND_ATTEMPT_WINDOW_S
    while time.monotonic() < deadline and len(sink.hits(f"/{code}")) < 2 and not gave_up():
        time.sleep(0.05)
    sink.release(f"/{code}")
    wait_for(lambda: relay.settled(event["id"], ("delivered",)), timeout_s=SETTLE_S, what="done")
    hits = sink.hits(f"/{code}")
    timeline = [(h["seq"], h["headers"]["webhook-id"], h["arrived"], h["finished"]) for h in hits]
    assert overlaps(hits) == [], timeline


@pytest.mark.timeout(3 * SETTLE_S)
def test_replaying_a_delivery_in_flight_never_sends_it_twice_at_once(
    relay: Relay, sink: Sink
) -> None:
    replays: list[subprocess.Popen[bytes]] = []

    def replay(row: dict[str, Any]) -> Callable[[], bool]:
        # The CLI may refuse, or wait for the attempt in flight; it must not send beside it.
        command = ["replay", str(row["id"])]
        replays.append(
            subprocess.Popen(
                [sys.executable, "-m", "relay", "--config", str(relay.config_path), *command],
                cwd=REPO,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        return lambda: replays[0].poll() is not None

    try:
        at_most_one_in_flight(relay, sink, "replayed", replay)
        assert replays[0].wait(timeout=SETTLE_S) in (0, 1)
    finally:
        for process in replays:
            if process.poll() is None:
                process.kill()
                process.wait()


@pytest.mark.timeout(3 * SETTLE_S)
def test_a_lease_shorter_than_the_attempt_never_sends_it_twice_at_once(
    relay: Relay, sink: Sink
) -> None:
    def outlive_the_lease(row: dict[str, Any]) -> Callable[[], bool]:
        assert relay.proc is not None
        marks = relay.log().count("clock shifted")
        relay.proc.send_signal(signal.SIGUSR2)  # an hour passes on the relay's wall clock...
        wait_for(
            lambda: relay.log().count("clock shifted") > marks, timeout_s=SETTLE_S, what="jump"
        )
        relay.proc.send_signal(signal.SIGUSR1)  # ...and the dispatcher looks at its rows again
        return lambda: False

    at_most_one_in_flight(relay, sink, "outleased", outlive_the_lease)
