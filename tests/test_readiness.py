"""Readiness from state (issue 6, defect 9), and the supervisor behind it (defect 3).

`/readyz` answers from what is already known, so it never waits behind a write that
waits on another process's lock. A real second sqlite3 connection holds the lock; a
full disk is injected at the connection seam (the acceptance suite fills a real tmpfs).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from relay import supervisor as supervisor_module
from relay.app import init_app
from relay.config import Config
from relay.engine import Relay
from relay.store import StoreUnavailable
from relay.store.sqlite import open_sqlite_store
from relay.store.sqlite_connection import UnitConnection
from relay.supervisor import Supervisor, TaskState
from tests.conftest import build_config, fixture_json, relay_of
from tests.peers import wait_until
from tests.test_delivery import settled
from tests.test_ingest import post_json
from tests.test_store import new_event

PROBE_INTERVAL_S = 0.05  # the test's probe: a recovered store is seen at once


def app_starter(aiohttp_client: Callable[..., Any], **options: Any) -> Callable[[Config], Any]:
    """Start the real app for a config, with `init_app` options."""

    async def started(config: Config) -> TestClient[Any, Any]:
        client: TestClient[Any, Any] = await aiohttp_client(init_app(config, **options))
        return client

    return started


@pytest.fixture
def start(aiohttp_client: Callable[..., Any]) -> Callable[[Config], Any]:
    """The real app, with a quick write probe."""
    return app_starter(aiohttp_client, probe_interval_s=PROBE_INTERVAL_S)


async def readiness(client: TestClient[Any, Any], path: str = "/readyz") -> tuple[int, Any]:
    resp = await client.get(path)
    return resp.status, await resp.json()


@contextmanager
def write_lock_held(db: Path) -> Iterator[None]:
    """Another process's write transaction, as a CLI command or a backup would hold it."""
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()


async def test_livez_readyz_and_healthz(
    start: Any, config_dict: dict[str, Any], tmp_path: Path
) -> None:
    client = await start(build_config(config_dict, tmp_path))
    assert (await client.get("/livez")).status == 200
    for path in ("/readyz", "/healthz"):
        status, body = await readiness(client, path)
        assert status == 200
        assert body == {
            "status": "ok",
            "checks": {"store": "ok", "dispatcher": "running", "draining": "no"},
        }


async def test_readyz_answers_while_a_write_waits_on_a_lock_and_says_so(
    start: Any, config_dict: dict[str, Any], tmp_path: Path
) -> None:
    config_dict["storage"]["busy_timeout"] = "5s"
    client = await start(build_config(config_dict, tmp_path))
    runtime = relay_of(client)
    runtime.readiness.stuck_after_s = 0.2
    with write_lock_held(tmp_path / "relay.sqlite3"):
        ingest = asyncio.create_task(post_json(client, fixture_json("billet_printed_oxxo.json")))
        await wait_until(lambda: runtime.store.write_health().stuck_for_s > 0.2)
        status, body = await readiness(client)
        assert not ingest.done()  # readiness did not wait behind the write
        assert status == 503
        assert body["failed"] == ["store"]
        assert body["checks"]["store"] == "write stuck"
        assert (await client.get("/livez")).status == 200  # the process still answers
    assert (await ingest).status == 200  # the lock went in time: the event is committed
    await wait_until(lambda: readiness_is(client, 200))


async def readiness_is(client: TestClient[Any, Any], expected: int) -> bool:
    return (await client.get("/readyz")).status == expected


class FullDisk:
    """Fault injection at the connection seam: while `full`, every write statement fails
    as SQLite fails on a full disk."""

    full = False
    _execute = UnitConnection.execute

    @staticmethod
    def execute(conn: UnitConnection, sql: str, parameters: Any = (), /) -> Any:
        if FullDisk.full and any(verb in sql.upper() for verb in ("INSERT", "UPDATE", "DELETE")):
            error = sqlite3.OperationalError("database or disk is full")
            error.sqlite_errorname = "SQLITE_FULL"  # as sqlite3 names it on a real one
            raise error
        return FullDisk._execute(conn, sql, parameters)


async def test_a_full_disk_turns_readyz_503_and_it_recovers_by_itself(
    start: Any,
    config_dict: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("relay.store.sqlite_connection.UnitConnection.execute", FullDisk.execute)
    client = await start(build_config(config_dict, tmp_path))
    FullDisk.full = True
    try:
        resp = await post_json(client, fixture_json("billet_printed_oxxo.json"))
        assert resp.status == 503  # never 200 for what was not stored
        status, body = await readiness(client)
        assert (status, body["checks"]["store"]) == (503, "disk full")
        assert "database or disk" not in str(body)  # fixed words, never exception text
    finally:
        FullDisk.full = False
    await wait_until(lambda: readiness_is(client, 200))  # the probe saw writes work again
    assert (await post_json(client, fixture_json("billet_printed_oxxo.json"))).status == 200


async def test_only_a_write_that_wrote_clears_a_store_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a full disk a transaction that changes nothing still commits: an empty claim
    must not turn readiness green while every real write fails."""
    monkeypatch.setattr("relay.store.sqlite_connection.UnitConnection.execute", FullDisk.execute)
    async with open_sqlite_store(tmp_path / "relay.sqlite3") as store:
        FullDisk.full = True
        try:
            with pytest.raises(StoreUnavailable):
                await store.probe_write(now_ms=1)
        finally:
            FullDisk.full = False
        assert store.write_health().last_failure == "disk full"
        assert (await store.claim_due(1, 2, 10, 4)).deliveries == []  # wrote nothing
        assert store.write_health().last_failure == "disk full"
        await store.probe_write(now_ms=2)
        assert store.write_health().last_failure is None


async def test_readyz_is_503_while_draining(
    start: Any, config_dict: dict[str, Any], tmp_path: Path
) -> None:
    client = await start(build_config(config_dict, tmp_path))
    relay_of(client).readiness.draining = True
    status, body = await readiness(client)
    assert (status, body["failed"]) == (503, ["draining"])


async def test_a_write_queued_behind_a_locked_one_waits_only_what_its_caller_has_left(
    tmp_path: Path,
) -> None:
    """Ingest answered 503 only after 2x busy_timeout: a batch queued behind one stuck on
    the lock waited for it, then a whole busy_timeout of its own. Each transaction now
    waits only what is left of its oldest caller's deadline."""
    busy_timeout_ms = 2_000
    db = tmp_path / "relay.sqlite3"
    async with open_sqlite_store(db, busy_timeout_ms=busy_timeout_ms) as store:
        waits_ms: list[int] = []

        def trace(statement: str) -> None:
            if statement.startswith("PRAGMA busy_timeout"):
                waits_ms.append(int(statement.rsplit("=", 1)[1]))

        await store.run(lambda c: c.set_trace_callback(trace))
        with write_lock_held(db):
            first = asyncio.create_task(store.ingest(new_event("first"), now_ms=1))
            await wait_until(lambda: store.write_health().stuck_for_s > 0.1)
            second = asyncio.create_task(store.ingest(new_event("second"), now_ms=1))
            results = await asyncio.gather(first, second, return_exceptions=True)
        assert all(isinstance(r, StoreUnavailable) for r in results)
        assert len(waits_ms) == 2
        assert waits_ms[0] > busy_timeout_ms * 0.9  # the first caller's whole wait...
        assert waits_ms[1] < busy_timeout_ms / 2  # ...the second only what it had left
        assert store.write_health().last_failure == "locked"


async def test_supervisor_logs_the_traceback_backs_off_and_restarts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runs: list[int] = []
    naps: list[float] = []
    states: list[TaskState] = []
    buyer = ".".join(("maria", "gonzalez@example", "com"))  # not in the traceback's source

    async def body() -> None:
        runs.append(1)
        if len(runs) <= 3:
            raise ValueError(f"cannot parse {buyer}")

    async def nap(seconds: float) -> None:
        states.append(supervised.state)
        naps.append(seconds)

    supervised = Supervisor("dispatcher", body, backoff_min_s=1.0, backoff_max_s=3.0, sleep=nap)
    await supervised.run()
    assert len(runs) == 4 and supervised.restarts == 3
    assert naps == [1.0, 2.0, 3.0]  # doubling, capped
    assert states == [TaskState.RESTARTING] * 3
    assert supervised.state == TaskState.STOPPED  # it returned: asked to stop
    crashes = [r for r in caplog.records if r.name == "relay.supervisor"]
    assert len(crashes) == 3 and all(r.exc_info for r in crashes)
    assert "in body" in caplog.text  # the traceback is logged...
    assert buyer not in caplog.text  # ...without the exception's text


async def test_a_crashed_dispatcher_is_restarted_and_readiness_follows_it(
    start: Any,
    config_dict: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Defect 3: the dispatcher task died with no log while ingest kept accepting."""
    monkeypatch.setattr(supervisor_module, "RESTART_BACKOFF_MIN_S", 0.01)
    client = await start(build_config(config_dict, tmp_path))
    runtime: Relay = relay_of(client)
    store = runtime.store
    real_claim = store.claim_due
    crashes: list[int] = []

    async def claim_with_a_bug(*args: Any, **kwargs: Any) -> Any:
        if not crashes:
            crashes.append(1)
            raise KeyError("a bug in the claim")
        return await real_claim(*args, **kwargs)

    monkeypatch.setattr(store, "claim_due", claim_with_a_bug)
    caplog.set_level(logging.INFO)
    assert (await post_json(client, fixture_json("billet_printed_oxxo.json"))).status == 200
    await wait_until(lambda: settled(client))  # delivered after the restart
    dispatcher = runtime.readiness.dispatcher
    assert dispatcher is not None and dispatcher.restarts == 1
    assert dispatcher.state == TaskState.RUNNING
    assert any(
        r.name == "relay.supervisor" and r.exc_info and "dispatcher" in r.getMessage()
        for r in caplog.records
    )
    assert (await readiness(client))[0] == 200


async def test_readiness_names_a_dispatcher_that_is_not_running(tmp_path: Path) -> None:
    async with open_sqlite_store(tmp_path / "relay.sqlite3") as store:
        from relay.readiness import Readiness

        async def body() -> None:
            return None

        check = Readiness(store)
        assert check.report()[1]["failed"] == ["dispatcher"]  # not yet supervised
        check.dispatcher = Supervisor("dispatcher", body)
        check.dispatcher.state = TaskState.RESTARTING
        ready, report = check.report()
        assert not ready and report["checks"]["dispatcher"] == "restarting"
