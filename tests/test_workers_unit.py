"""The pieces of a multi-process serve, in this process: config keys, wake-up sockets, the
dispatcher board readiness reads, metrics summed across processes, and the serving
parent itself with real child processes (tests/acceptance/test_workers.py runs `relay
serve` whole)."""

from __future__ import annotations

import asyncio
import copy
import logging
import os
import signal
import socket
import threading
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from relay.clock import SystemClock
from relay.config import Config, ConfigError, parse_config
from relay.cross_process import (
    DispatcherBoard,
    RemoteDispatchers,
    WakeBus,
    WakeSender,
    send_wake,
    wake_listener,
)
from relay.event_loop import choose_loop
from relay.metrics import Metrics
from relay.metrics_peers import answering, gather, peer_address
from relay.records import Channel, QueueGauges, dispatcher_lease_owner
from relay.service import serve
from relay.supervisor import Supervisor, TaskState
from relay.worker_children import (
    DispatcherChild,
    IngestChild,
    Logging,
    dispatch_until,
    serve_ingest,
)
from relay.worker_pool import WorkerPool, bind, exit_words
from tests.acceptance.harness import http_request, wait_for
from tests.conftest import HOTTOK, base_config_dict, fixture_json
from tests.peers import free_port


def config_with(tmp_path: Path, server: dict[str, Any], delivery: dict[str, Any]) -> Config:
    raw = copy.deepcopy(base_config_dict(tmp_path))
    raw["server"] = server
    raw["delivery"].update(delivery)
    return parse_config(raw, {}, base_dir=tmp_path)


# -- config ---------------------------------------------------------------------------


def test_one_process_is_delivery_workers_0_and_the_default_is_a_dispatcher_of_its_own(
    tmp_path: Path,
) -> None:
    assert not config_with(tmp_path, {}, {}).single_process
    assert config_with(tmp_path, {}, {"workers": 0}).single_process
    assert config_with(tmp_path, {"workers": 3}, {"workers": 2}).server.workers == 3


def test_several_ingest_processes_need_a_dispatcher_process(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        config_with(tmp_path, {"workers": 2}, {"workers": 0})
    assert [path for path, _ in caught.value.problems] == ["delivery.workers"]
    with pytest.raises(ConfigError):
        config_with(tmp_path, {"workers": 0}, {})


# -- wake-ups and the board -------------------------------------------------------------


async def test_a_wake_sent_in_one_place_wakes_the_listener_once_per_burst() -> None:
    bus = WakeBus(2)
    try:
        woken = [asyncio.Event(), asyncio.Event()]
        calls = [0, 0]

        def waker(slot: int) -> Any:
            def wake() -> None:
                calls[slot] += 1
                woken[slot].set()

            return wake

        with wake_listener(bus.receiver(0), waker(0)), wake_listener(bus.receiver(1), waker(1)):
            sender = WakeSender(bus.senders)
            for _ in range(100):  # one event-loop turn: one send per slot
                sender.notify()
            await asyncio.wait_for(asyncio.gather(woken[0].wait(), woken[1].wait()), 10)
        assert calls == [1, 1]
    finally:
        bus.close()


def test_a_full_wake_socket_already_holds_a_wake_up() -> None:
    bus = WakeBus(1)
    try:
        for _ in range(10_000):  # far past the socket's buffer: no error, no block
            send_wake(bus.senders)
        assert bus.receiver(0).recv(16)
    finally:
        bus.close()


def test_readiness_sees_a_dispatcher_in_another_slot_through_the_board() -> None:
    import multiprocessing

    board = DispatcherBoard(multiprocessing.get_context("spawn"), 2)
    remote = RemoteDispatchers(board)
    assert remote.state == TaskState.STOPPED
    report = board.reporter(1)
    report(TaskState.RUNNING)
    assert remote.state == TaskState.RUNNING
    report(TaskState.RESTARTING)
    assert remote.state == TaskState.STOPPED


async def test_a_supervisor_tells_its_listener_each_state() -> None:
    seen: list[TaskState] = []

    async def body() -> None:
        return

    await Supervisor("x", body, on_state=seen.append).run()
    assert seen == [TaskState.RUNNING, TaskState.STOPPED]


def test_each_dispatcher_slot_leases_as_its_own_owner() -> None:
    assert dispatcher_lease_owner(0) == "serve"
    assert len({dispatcher_lease_owner(n) for n in range(4)}) == 4


def test_exit_words_name_the_code_or_the_signal() -> None:
    assert exit_words(3) == "exited with code 3"
    assert exit_words(-signal.SIGKILL) == "was killed by SIGKILL"
    assert exit_words(-200) == "was killed by signal 200"
    assert exit_words(None) == "ended"


# -- metrics across processes ------------------------------------------------------------


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


async def no_gauges() -> QueueGauges:
    return QueueGauges(pending=0, earliest_due_at_ms=None, destinations_disabled=0)


async def test_a_scrape_adds_up_every_process_and_says_who_did_not_answer() -> None:
    here, there = Metrics(SystemClock()), Metrics(SystemClock())
    here.ingest_rejected(401)
    there.ingest_rejected(401)
    there.attempt_made(Channel.EMAIL, 0.01)
    there.attempt_made(Channel.EMAIL, 0.02)
    address = peer_address(os.getpid(), "dispatcher 9")
    absent = peer_address(os.getpid(), "dispatcher 10")
    async with answering(address, there.snapshot):
        body, _ = await here.exposition(no_gauges, "", lambda: gather([address, absent]))
    found = samples(body.decode())
    assert found[("relay_ingest_rejections_total", (("status", "401"),))] == 2
    assert found[("relay_attempt_duration_seconds_count", (("channel", "email"),))] == 2
    assert found[("relay_metrics_processes", (("state", "answered"),))] == 1
    assert found[("relay_metrics_processes", (("state", "missing"),))] == 1
    # Summed for the scrape only: this process's own counts are untouched.
    alone, _ = await here.exposition(no_gauges, "")
    assert samples(alone.decode())[("relay_ingest_rejections_total", (("status", "401"),))] == 1
    assert "relay_metrics_processes" not in alone.decode()


@pytest.mark.parametrize("setting", ["auto", "asyncio"])
def test_processes_exchange_counts_on_either_event_loop(setting: str) -> None:
    # Children run on the loop server.event_loop picks: uvloop refuses an abstract socket
    # name given as a path, so a scrape on uvloop once heard no other process at all.
    async def exchange() -> tuple[list[bytes], int]:
        address = peer_address(os.getpid(), f"loop-{setting}")
        async with answering(address, lambda: b"counts"):
            return await gather([address])

    _, factory = choose_loop(setting)
    with asyncio.Runner(loop_factory=factory) as runner:
        assert runner.run(exchange()) == ([b"counts"], 0)


@pytest.mark.parametrize(
    "snapshot", [b"not json", b'{"counters": 5}', b'{"counters": {}, "histograms": {}}']
)
async def test_a_malformed_snapshot_is_left_out_whole_and_counted_missing(
    snapshot: bytes,
) -> None:
    here = Metrics(SystemClock())
    here.ingest_rejected(401)

    async def peers() -> tuple[list[bytes], int]:
        return [snapshot], 0

    body, _ = await here.exposition(no_gauges, "", peers)
    found = samples(body.decode())
    assert found[("relay_ingest_rejections_total", (("status", "401"),))] == 1
    assert found[("relay_metrics_processes", (("state", "missing"),))] == 1


async def test_histograms_of_other_bounds_are_refused() -> None:
    here = Metrics(SystemClock(), attempt_bounds_s=(1.0, 2.0))
    there = Metrics(SystemClock(), attempt_bounds_s=(1.0,))
    there.attempt_made(Channel.WEBHOOK, 0.5)

    async def peers() -> tuple[list[bytes], int]:
        return [there.snapshot()], 0

    body, _ = await here.exposition(no_gauges, "", peers)
    assert samples(body.decode())[("relay_metrics_processes", (("state", "missing"),))] == 1


# -- the serving parent ----------------------------------------------------------------


def test_binding_a_taken_port_fails_in_the_parent(tmp_path: Path) -> None:
    config = config_with(tmp_path, {"port": 0}, {})
    with bind(config.server) as first:
        port = first.getsockname()[1]
        taken = config_with(tmp_path, {"port": port}, {})
        with pytest.raises(OSError, match="in use"):
            bind(taken.server)


async def test_the_parent_restarts_a_killed_child_and_drains_all_on_stop(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="relay.workers")
    port = free_port()
    config = config_with(tmp_path, {"port": port}, {"workers": 1})
    pool = WorkerPool(config, Logging("text", "warning"), backoff_min_s=0.01)
    listening = bind(config.server)
    running = asyncio.create_task(pool.run(listening))

    def ready() -> bool:
        try:
            return http_request(port, "GET", "/readyz", timeout_s=2).status == 200
        except OSError:
            return False

    def started(name: str) -> list[int]:
        return [
            int(r.getMessage().split("pid ")[1].rstrip(")"))
            for r in caplog.records
            if r.getMessage().startswith(f"{name} process started")
        ]

    try:
        await asyncio.to_thread(wait_for, ready, timeout_s=60, what="ready")
        (first,) = started("dispatcher 0")
        os.kill(first, signal.SIGKILL)
        await asyncio.to_thread(
            wait_for, lambda: len(started("dispatcher 0")) == 2, timeout_s=60, what="restart"
        )
        os.kill(os.getpid(), signal.SIGUSR1)  # a CLI's wake-up: forwarded, not fatal
        await asyncio.to_thread(wait_for, ready, timeout_s=60, what="ready again")
    finally:
        pool.stop()
        await asyncio.wait_for(running, 60)
    messages = [r.getMessage() for r in caplog.records]
    assert f"dispatcher 0 process (pid {first}) was killed by SIGKILL; restarting in 0.0s" in (
        messages
    )
    assert sum("exited with code 0" in m for m in messages) == 2
    assert listening.fileno() == -1  # closed at stop, so no connection waits in its backlog
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


# -- the children, run in this process ----------------------------------------------------


async def test_an_ingest_child_and_a_dispatcher_child_deliver_answer_and_stop(
    tmp_path: Path,
) -> None:
    """What each child runs, without the spawn: ingest wakes the dispatcher over the bus,
    readiness follows the board, a scrape adds the dispatcher's counts to ingest's."""
    import multiprocessing

    config = config_with(tmp_path, {"port": 0}, {"workers": 1})
    bus = WakeBus(1)
    board = DispatcherBoard(multiprocessing.get_context("spawn"), 1)
    ingest_address = peer_address(os.getpid(), "test ingest")
    dispatcher_address = peer_address(os.getpid(), "test dispatcher")
    listening = bind(config.server)
    port = listening.getsockname()[1]
    logs = Logging("text", "info")
    ingest = IngestChild(
        config, logs, listening, bus.senders, board, ingest_address, (dispatcher_address,)
    )
    dispatcher = DispatcherChild(config, logs, 0, bus.receiver(0), board, dispatcher_address)
    stop_dispatching = asyncio.Event()
    dispatching = asyncio.create_task(dispatch_until(dispatcher, stop_dispatching))
    serving = asyncio.create_task(serve_ingest(ingest))
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as client:

            async def status(path: str) -> int:
                try:
                    async with client.get(path) as response:
                        return response.status
                except aiohttp.ClientError:
                    return 0

            await wait_until_async(lambda: status("/readyz"), 200)
            event = fixture_json("billet_printed_oxxo.json")
            headers = {"X-HOTMART-HOTTOK": HOTTOK}
            async with client.post(config.server.path, json=event, headers=headers) as reply:
                assert reply.status == 200
            mail = Path(config.resolve_path(config.email.maildir)) / "new"
            await wait_until_async(lambda: _count(mail), 1)

            async def delivered_in_scrape() -> int:
                async with client.get("/metrics") as response:
                    text = await response.text()
                found = samples(text)
                key = ("relay_deliveries_total", (("channel", "email"), ("status", "delivered")))
                return int(found.get(key, 0))

            await wait_until_async(delivered_in_scrape, 1)
            stop_dispatching.set()
            await asyncio.wait_for(dispatching, 30)
            assert not board.any_running()
            assert await status("/readyz") == 503
        os.kill(os.getpid(), signal.SIGTERM)  # serve_until_stopped's own handler
        await asyncio.wait_for(serving, 30)
    finally:
        stop_dispatching.set()
        for task in (dispatching, serving):
            if not task.done():
                task.cancel()
        await asyncio.gather(dispatching, serving, return_exceptions=True)
        bus.close()


async def _count(folder: Path) -> int:
    return len(list(folder.iterdir())) if folder.exists() else 0


async def wait_until_async(probe: Any, wanted: int, timeout_s: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while (got := await probe()) != wanted:
        assert asyncio.get_running_loop().time() < deadline, f"{got} != {wanted}"
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("dispatchers", [0, 1])
def test_serve_runs_until_sigterm_in_either_layout(tmp_path: Path, dispatchers: int) -> None:
    """`relay.service.serve` as `relay serve` calls it, stopped by a signal to this process."""
    port = free_port()
    config = config_with(tmp_path, {"port": port}, {"workers": dispatchers})
    seen: list[int] = []

    def stop_once_ready() -> None:
        def ready() -> bool:
            try:
                return http_request(port, "GET", "/readyz", timeout_s=2).status == 200
            except OSError:
                return False

        wait_for(ready, timeout_s=60, what="ready")
        seen.append(200)
        os.kill(os.getpid(), signal.SIGTERM)

    stopper = threading.Thread(target=stop_once_ready)
    stopper.start()
    try:
        serve(config, Logging("text", "warning"))
    finally:
        stopper.join()
    assert seen == [200]
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
