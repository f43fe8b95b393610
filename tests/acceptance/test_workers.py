"""`relay serve` as a parent with ingest and dispatcher processes (server.workers,
delivery.workers): children killed with SIGKILL come back and lose nothing accepted,
SIGTERM stops every process with exit code 0, and an event taken by an ingest process
is delivered by a dispatcher process that nothing but a wake-up could have woken.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.acceptance.harness import (
    Relay,
    http_request,
    relay_config,
    running,
    slip_event,
    wait_for,
)

# Generous: a restarted child is a fresh interpreter on a loaded 2-core machine.
SETTLE_S = 30.0


def workers_config(workdir: Path, ingest: int, dispatchers: int) -> dict[str, Any]:
    # Retries far away: a delivery done within SETTLE_S was woken, not retried on a timer.
    raw = relay_config(workdir, retry_delays=["1h"])
    raw["server"]["workers"] = ingest
    raw["delivery"]["workers"] = dispatchers
    return raw


@pytest.fixture
def relay(workdir: Path, request: pytest.FixtureRequest) -> Iterator[Relay]:
    ingest, dispatchers = getattr(request, "param", (2, 1))
    raw = workers_config(workdir, ingest, dispatchers)
    with running(Relay.from_config(raw, workdir)) as started:
        # /healthz answered from one process; the others may still be starting.
        wait_for(
            lambda: all_up(started.log(), ingest, dispatchers),
            timeout_s=SETTLE_S,
            what="every child up",
        )
        yield started


def all_up(log: str, ingest: int, dispatchers: int) -> bool:
    if dispatchers == 0:
        return True  # one process: /healthz said it all
    running = sum(f"dispatcher process {n} running" in log for n in range(dispatchers))
    return log.count("relay listening on") >= ingest and running == dispatchers


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


def child_pid(relay: Relay, name: str) -> int:
    """The pid of the child the log last said started as `name` ("dispatcher 0")."""
    started = re.findall(rf"{name} process started \(pid (\d+)\)", relay.log())
    assert started, f"no {name} process started:\n{relay.log_tail()}"
    return int(started[-1])


@contextlib.contextmanager
def killed(relay: Relay, name: str) -> Iterator[None]:
    """SIGKILL the child `name`; after the block, see it logged and started again."""
    first = child_pid(relay, name)
    os.kill(first, signal.SIGKILL)
    yield
    wait_for(lambda: child_pid(relay, name) != first, timeout_s=SETTLE_S, what=f"{name} back")
    assert f"{name} process (pid {first}) was killed by SIGKILL; restarting" in relay.log()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A child the parent has not reaped yet is dead too.
    with contextlib.suppress(FileNotFoundError):
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    return False


def delivered(relay: Relay, event_ids: list[str]) -> bool:
    return all(relay.settled(i, ("delivered",)) for i in event_ids)


def post_slips(relay: Relay, count: int) -> list[str]:
    ids = []
    for _ in range(count):
        event = slip_event()
        assert relay.post(event).status == 200
        ids.append(event["id"])
    return ids


def test_an_event_taken_by_an_ingest_process_is_delivered_by_a_dispatcher_process(
    relay: Relay,
) -> None:
    # The dispatcher waits with no timer when nothing is due: only a wake-up sent by
    # the ingest process that committed the event can get it delivered.
    accepted = post_slips(relay, 1)
    wait_for(lambda: delivered(relay, accepted), timeout_s=SETTLE_S, what="sent")
    assert "dispatcher process 0 running" in relay.log()
    assert relay.pid not in {child_pid(relay, "ingest 0"), child_pid(relay, "dispatcher 0")}


def test_a_dispatcher_killed_is_logged_restarted_and_delivers_what_was_accepted(
    relay: Relay,
) -> None:
    with killed(relay, "dispatcher 0"):
        # Accepted while no dispatcher runs: durable, and delivered once one is back.
        accepted = post_slips(relay, 5)
    wait_for(lambda: delivered(relay, accepted), timeout_s=SETTLE_S, what="accepted delivered")


def test_readiness_says_no_dispatcher_while_none_runs_then_ready_again(relay: Relay) -> None:
    seen: list[int] = []
    stop = threading.Event()

    def watch() -> None:  # catch the 503 window between the kill and the restart
        while not stop.is_set():
            with contextlib.suppress(OSError):
                reply = http_request(relay.port, "GET", "/readyz", timeout_s=2)
                if not seen or seen[-1] != reply.status:
                    seen.append(reply.status)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        wait_for(lambda: seen == [200], timeout_s=SETTLE_S, what="ready")
        first = child_pid(relay, "dispatcher 0")
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: 503 in seen, timeout_s=SETTLE_S, what="not ready without a dispatcher")
        wait_for(lambda: seen[-1] == 200, timeout_s=SETTLE_S, what="ready again")
    finally:
        stop.set()
        watcher.join()
    assert seen[:3] == [200, 503, 200]
    body = http_request(relay.port, "GET", "/readyz").json()
    assert body["checks"]["dispatcher"] == "running"


def test_an_ingest_process_killed_is_restarted_while_the_other_keeps_accepting(
    relay: Relay,
) -> None:
    before = post_slips(relay, 3)
    with killed(relay, "ingest 0"):
        # The other ingest process holds the same socket: posts keep landing.
        during = post_slips(relay, 3)
    after = post_slips(relay, 3)
    wait_for(lambda: delivered(relay, before + during + after), timeout_s=SETTLE_S, what="all sent")


def test_sigterm_stops_every_process_with_exit_code_0(relay: Relay) -> None:
    children = [child_pid(relay, n) for n in ("ingest 0", "ingest 1", "dispatcher 0")]
    accepted = post_slips(relay, 3)
    assert relay.terminate() == 0
    assert not any(alive(pid) for pid in children)
    log = relay.log()
    assert "relay stopped on SIGTERM" in log
    assert log.count("exited with code 0") == 3
    # Whatever the stop left undelivered is still there, and the next serve sends it.
    assert all(len(relay.deliveries_of(i)) == 1 for i in accepted)
    relay.start()
    wait_for(lambda: delivered(relay, accepted), timeout_s=SETTLE_S, what="accepted delivered")


def test_replay_reaches_a_dispatcher_process_through_the_parent(relay: Relay) -> None:
    (event_id,) = post_slips(relay, 1)
    wait_for(lambda: delivered(relay, [event_id]), timeout_s=SETTLE_S, what="first send")
    (row,) = relay.deliveries_of(event_id)
    done = relay.cli("replay", str(row["id"]))
    assert done.returncode == 0, done.stderr
    wait_for(
        lambda: (
            relay.query("SELECT count(*) FROM attempts WHERE delivery_id = ?", (row["id"],))[0][0]
            == 2
        ),
        timeout_s=SETTLE_S,
        what="the replayed attempt",
    )


@pytest.mark.parametrize("relay", [(1, 0)], indirect=True)
def test_one_process_mode_starts_no_children(relay: Relay) -> None:
    accepted = post_slips(relay, 1)
    wait_for(lambda: delivered(relay, accepted), timeout_s=SETTLE_S, what="sent")
    assert relay.pids() == [relay.pid]
    assert "process started" not in relay.log()


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample of a Prometheus text exposition; 0 when absent."""
    for line in text.splitlines():
        series, _, value = line.rpartition(" ")
        if series.split("{")[0] == name and all(f'{k}="{v}"' in series for k, v in labels.items()):
            return float(value)
    return 0.0


def test_metrics_add_up_every_process_counts(relay: Relay) -> None:
    accepted = post_slips(relay, 6)  # a new connection each: both ingest processes take some
    wait_for(lambda: delivered(relay, accepted), timeout_s=SETTLE_S, what="all sent")
    text = http_request(relay.port, "GET", "/metrics").body.decode()
    assert metric(text, "relay_events_total", outcome="accepted") == 6
    # Counted by the dispatcher process, answered by an ingest process.
    assert metric(text, "relay_deliveries_total", channel="email", status="delivered") == 6
    assert metric(text, "relay_attempt_duration_seconds_count", channel="email") == 6
    assert metric(text, "relay_metrics_processes", state="answered") == 2
    assert metric(text, "relay_metrics_processes", state="missing") == 0


def test_children_of_a_parent_killed_with_sigkill_stop_and_a_new_serve_takes_over(
    relay: Relay,
) -> None:
    """No orphan keeps serving the store beside the next `relay serve`."""
    children = [child_pid(relay, n) for n in ("ingest 0", "ingest 1", "dispatcher 0")]
    relay.kill()
    wait_for(
        lambda: not any(alive(pid) for pid in children), timeout_s=SETTLE_S, what="orphans gone"
    )
    assert "the serving parent is gone: stopping" in relay.log()
    relay.start()
    accepted = post_slips(relay, 2)
    wait_for(lambda: delivered(relay, accepted), timeout_s=SETTLE_S, what="sent by the new serve")


@pytest.mark.parametrize("relay", [(1, 2)], indirect=True)
def test_two_dispatcher_processes_woken_together_send_each_delivery_once(relay: Relay) -> None:
    """Every commit wakes both; each claims under the write lock, leased as its own owner."""
    accepted = post_slips(relay, 20)
    wait_for(lambda: delivered(relay, accepted), timeout_s=SETTLE_S, what="all sent")
    attempts = relay.query("SELECT delivery_id, count(*) AS n FROM attempts GROUP BY delivery_id")
    assert len(attempts) == 20
    assert {row["n"] for row in attempts} == {1}
    assert "dispatcher process 1 running" in relay.log()
