"""What only the PostgreSQL store has: several instances on one store, its migrations,
its wake-ups, its DSN as a secret, and losing the database. The Store contract itself
is tested on both backends (tests/store_backends.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from relay.cli import main
from relay.config import ConfigError
from relay.records import (
    AttemptResolution,
    DeliveryStatus,
    HealthEffect,
    NewAlert,
    dispatcher_lease_owner,
)
from relay.store import StoreUnavailable
from relay.store.postgres import PostgresStore, open_postgres_store
from relay.store.postgres_connection import NotMigrated, mask_dsn, migrate, scrub_secret
from relay.store.postgres_listen import listen_for_work
from tests.conftest import build_config
from tests.test_cli import write_toml
from tests.test_leases import attempt
from tests.test_store import KEY, new_event


@pytest.fixture
async def two(postgres_dsn: str) -> AsyncIterator[tuple[PostgresStore, PostgresStore]]:
    """Two instances' stores on one database, as two `relay serve` processes have."""
    async with (
        open_postgres_store(postgres_dsn, migrate_first=True, instance="serve:a:1") as first,
        open_postgres_store(postgres_dsn, instance="serve:b:1") as second,
    ):
        yield first, second


def pg_config(raw: dict[str, Any], dsn: str) -> dict[str, Any]:
    raw = {**raw, "storage": {"postgres_dsn": dsn}}
    return raw


# -- config --------------------------------------------------------------------------------


def test_sqlite_path_and_postgres_dsn_together_are_a_config_error(
    config_dict: dict[str, Any], tmp_path: Path
) -> None:
    config_dict["storage"] = {"sqlite_path": "x.db", "postgres_dsn": "postgresql://h/db"}
    with pytest.raises(ConfigError) as raised:
        build_config(config_dict, tmp_path)
    assert [path for path, _ in raised.value.problems] == ["storage.postgres_dsn"]
    assert "sqlite_path" in raised.value.problems[0][1]


def test_the_dsn_comes_from_the_environment_and_is_never_shown(
    config_dict: dict[str, Any], tmp_path: Path
) -> None:
    from relay.config import parse_config

    config_dict["storage"] = {"postgres_dsn": "env:RELAY_PG"}
    secret = "postgresql://relay:s3cr3t-pw@db.internal:5433/relay"
    config = parse_config(config_dict, {"RELAY_PG": secret}, base_dir=tmp_path)
    assert config.storage.postgres_dsn is not None
    assert config.storage.postgres_dsn.get_secret_value() == secret
    assert "s3cr3t-pw" not in repr(config) and "s3cr3t-pw" not in str(config.storage)
    assert mask_dsn(secret) == "postgresql://relay:***@db.internal:5433/relay"
    assert scrub_secret("auth failed for s3cr3t-pw", secret) == "auth failed for ***"
    with pytest.raises(ConfigError) as raised:
        parse_config(config_dict, {}, base_dir=tmp_path)
    assert raised.value.problems == [
        ("storage.postgres_dsn", "environment variable RELAY_PG is not set")
    ]


async def test_an_unreachable_database_is_store_unavailable_with_the_password_masked() -> None:
    dsn = "postgresql://relay:s3cr3t-pw@127.0.0.1:1/relay"
    with pytest.raises(StoreUnavailable) as raised:
        async with open_postgres_store(dsn):
            pass
    assert "s3cr3t-pw" not in str(raised.value)
    assert "relay:***@127.0.0.1:1" in str(raised.value)


# -- migrations ------------------------------------------------------------------------------


async def test_two_relays_migrating_at_once_apply_each_migration_once(postgres_dsn: str) -> None:
    conns = [await asyncpg.connect(postgres_dsn) for _ in range(2)]
    try:
        applied = await asyncio.gather(*(migrate(conn) for conn in conns))
        assert sorted(applied, key=len) == [[], [1]]  # one waited on the lock, then had none
        versions = await conns[0].fetch("SELECT version FROM schema_version")
        assert [row["version"] for row in versions] == [1]
    finally:
        for conn in conns:
            await conn.close()


async def test_an_unmigrated_store_is_refused_until_relay_migrate(
    postgres_dsn: str, config_dict: dict[str, Any], tmp_path: Path, capsys: Any
) -> None:
    with pytest.raises(NotMigrated):
        async with open_postgres_store(postgres_dsn):
            pass
    path = write_toml(pg_config(config_dict, postgres_dsn), tmp_path / "relay.toml")
    assert await asyncio.to_thread(main, ["--config", str(path), "serve"]) == 2
    assert "relay migrate" in capsys.readouterr().err
    assert await asyncio.to_thread(main, ["--config", str(path), "migrate"]) == 0
    assert "migrated" in capsys.readouterr().out
    assert await asyncio.to_thread(main, ["--config", str(path), "history"]) == 0
    assert await asyncio.to_thread(main, ["--config", str(path), "backup", "x.db"]) == 2
    assert "pg_dump" in capsys.readouterr().err


# -- several instances on one store -------------------------------------------------------


async def test_one_resend_received_by_two_instances_at_once_is_one_event(
    two: tuple[PostgresStore, PostgresStore],
) -> None:
    first, second = two
    results = await asyncio.gather(
        *(store.ingest(new_event("resent"), now_ms=1) for store in (first, second) * 4)
    )
    assert sorted(r.status for r in results) == ["accepted"] + ["duplicate"] * 7
    assert len({r.event_row_id for r in results}) == 1
    assert await first.count_by_status() == {"pending": 1}


async def test_concurrent_claims_of_two_instances_are_disjoint(
    two: tuple[PostgresStore, PostgresStore],
) -> None:
    first, second = two
    for i in range(40):
        await first.ingest(new_event(f"e{i}", key=f"acme/K1/{i % 4}"), now_ms=1)
    claims = await asyncio.gather(
        *(store.claim_due(1, 10_000, 5, 100) for store in (first, second) * 4)
    )
    ids = [d.id for claim in claims for d in claim.deliveries]
    assert ids and len(set(ids)) == len(ids)  # no row twice (SKIP LOCKED: some may wait)
    while rest := (await second.claim_due(1, 10_000, 5, 100)).deliveries:
        ids.extend(d.id for d in rest)
    assert sorted(ids) == list(range(1, 41))  # every row once


async def test_two_instances_failing_at_once_disable_once_and_store_one_alert(
    two: tuple[PostgresStore, PostgresStore],
) -> None:
    first, second = two
    for i in range(6):
        await first.ingest(new_event(f"e{i}"), now_ms=1)
    claimed = (await first.claim_due(1, 10_000, 10, 100)).deliveries
    failed = AttemptResolution(DeliveryStatus.FAILED, None, "HTTP 500", HealthEffect.FAILED)

    def alert(n: int) -> NewAlert:
        return NewAlert("acme", f"alert{n}", "DESTINATION_DISABLED", KEY, f"m{n}", "off", "{}")

    changes = await asyncio.gather(
        *(
            (first, second)[n % 2].record_attempt(
                attempt(d.id, 1), failed, KEY, 2, alert(n), 2, lease_token=d.lease_token
            )
            for n, d in enumerate(claimed)
        )
    )
    assert sum(change.disabled_now for change in changes) == 1
    assert sorted(change.consecutive_failures for change in changes) == [1, 2, 3, 4, 5, 6]
    health = (await second.destination_health())[KEY]
    assert (health.enabled, health.consecutive_failures) == (False, 6)
    assert (await first.count_by_status()).get("pending") == 1  # the one alert


async def test_a_restarted_instance_takes_back_only_its_own_leases_and_only_once_dead(
    postgres_dsn: str,
) -> None:
    async with open_postgres_store(postgres_dsn, migrate_first=True, instance="serve:a:1") as a:
        await a.ingest(new_event("a"), now_ms=1)
        await a.ingest(new_event("b"), now_ms=1)
        assert await a.release_leases("serve") == 0  # holds its owner lock from now on
        (mine,) = (await a.claim_due(1, 10**12, 1, 100)).deliveries
        async with open_postgres_store(postgres_dsn, instance="serve:b:1") as b:
            (theirs,) = (await b.claim_due(1, 10**12, 1, 100)).deliveries
            async with open_postgres_store(postgres_dsn, instance="serve:a:1") as twin:
                # A second process calling itself serve:a:1 while the first lives: nothing.
                assert await twin.release_leases("serve") == 0
    async with open_postgres_store(postgres_dsn, instance="serve:a:1") as restarted:
        assert await restarted.release_leases("serve") == 1  # a is gone: its lease, not b's
        again = (await restarted.claim_due(2, 3, 10, 100)).deliveries
        assert [d.id for d in again] == [mine.id] and theirs.id != mine.id


async def test_a_dispatcher_slot_of_one_instance_never_takes_anothers_leases(
    postgres_dsn: str,
) -> None:
    # A multi-process serve leases as "serve-1" in its second dispatcher process; two
    # instances each have one, so the name must be the instance's, or a restarted slot of
    # one would hand back what the other's slot holds.
    slot = dispatcher_lease_owner(1)
    async with open_postgres_store(postgres_dsn, migrate_first=True, instance="serve:a:1") as a:
        await a.ingest(new_event("a"), now_ms=1)
        await a.ingest(new_event("b"), now_ms=1)
        (mine,) = (await a.claim_due(1, 10**12, 1, 100, owner=slot)).deliveries
        async with open_postgres_store(postgres_dsn, instance="serve:b:1") as b:
            (theirs,) = (await b.claim_due(1, 10**12, 1, 100, owner=slot)).deliveries
        async with open_postgres_store(postgres_dsn, instance="serve:b:1") as b_restarted:
            assert await b_restarted.release_leases(slot) == 1  # b's slot 1: its own only
            again = (await b_restarted.claim_due(2, 3, 10, 100)).deliveries
            assert [d.id for d in again] == [theirs.id] and theirs.id != mine.id


# -- wake-ups ------------------------------------------------------------------------------


@asynccontextmanager
async def listening(dsn: str, fallback_s: float) -> AsyncIterator[asyncio.Queue[str]]:
    """A dispatcher's wake-ups, as a queue: one item per wake."""
    woken = asyncio.Queue[str]()
    listener = asyncio.create_task(
        listen_for_work(dsn, lambda: woken.put_nowait("wake"), fallback_s=fallback_s)
    )
    try:
        await asyncio.wait_for(woken.get(), timeout=10)  # listening: it looks once at start
        yield woken
    finally:
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)


async def test_an_ingest_on_one_instance_wakes_the_dispatcher_of_another(
    two: tuple[PostgresStore, PostgresStore], postgres_dsn: str
) -> None:
    first, _ = two
    async with listening(postgres_dsn, fallback_s=3600) as woken:
        await first.ingest(new_event("a"), now_ms=1)
        await asyncio.wait_for(woken.get(), timeout=10)
        await first.ingest(new_event("a"), now_ms=1)  # a duplicate makes nothing due
        await first.requeue([1], now_ms=2)  # queued, not yet attempted: a wake all the same
        await asyncio.wait_for(woken.get(), timeout=10)
        assert woken.empty()


async def terminate_others(dsn: str, application_name: str | None = None) -> int:
    """pg_terminate_backend on the connections of this test's store (its schema's name
    is their application_name), or on those named `application_name`."""
    conn = await asyncpg.connect(dsn)
    try:
        name = application_name or await conn.fetchval("SELECT current_schema()")
        return int(
            await conn.fetchval(
                "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE pid != pg_backend_pid() AND application_name = $1",
                name,
            )
        )
    finally:
        await conn.close()


async def test_a_dropped_listen_connection_is_reconnected_and_wakes_again(
    two: tuple[PostgresStore, PostgresStore], postgres_dsn: str
) -> None:
    first, _ = two
    admin = await asyncpg.connect(postgres_dsn)

    async def listener_pids() -> set[int]:
        found = await admin.fetch(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'relay listen'"
        )
        return {row["pid"] for row in found}

    try:
        async with listening(postgres_dsn, fallback_s=0.2) as woken:
            (before,) = await listener_pids()
            assert await terminate_others(postgres_dsn, "relay listen") == 1
            for _ in range(200):  # the fallback notices within 0.2 s, then it reconnects
                now = await listener_pids()
                if now and before not in now:
                    break
                await asyncio.sleep(0.05)
            assert len(now) == 1 and before not in now  # listening again, on a new connection
            await first.ingest(new_event("after"), now_ms=1)
            await asyncio.wait_for(woken.get(), timeout=10)
    finally:
        await admin.close()


# -- losing the database ------------------------------------------------------------------


async def test_terminated_connections_are_store_unavailable_then_it_resumes(
    two: tuple[PostgresStore, PostgresStore], postgres_dsn: str
) -> None:
    first, _ = two
    await first.ingest(new_event("before"), now_ms=1)
    admin = await asyncpg.connect(postgres_dsn)

    async def cut_mid_transaction(conn: asyncpg.Connection) -> None:
        await admin.execute("SELECT pg_terminate_backend($1)", conn.get_server_pid())
        await conn.execute("SELECT 1")

    try:
        with pytest.raises(StoreUnavailable) as raised:
            await first.transaction(cut_mid_transaction)
        lost = first.write_health().last_failure
        assert lost in ("shutting down", "connection lost") and lost in str(raised.value)
        assert await terminate_others(postgres_dsn) >= 1  # the rest of both pools too
    finally:
        await admin.close()
    outcomes: list[str] = []
    for n in range(3):
        try:
            outcomes.append((await first.ingest(new_event(f"during{n}"), now_ms=2)).status)
        except StoreUnavailable as exc:
            outcomes.append(type(exc).__name__)
    assert set(outcomes) <= {"accepted", "StoreUnavailable"} and outcomes[-1] == "accepted"
    assert first.write_health().last_failure is None  # the last write worked again


# -- moving over ------------------------------------------------------------------------------


async def test_copy_store_moves_a_sqlite_history_into_an_empty_postgres_store(
    postgres_dsn: str, config_dict: dict[str, Any], tmp_path: Path, capsys: Any
) -> None:
    from relay.records import HistoryFilter, NewAuditEntry
    from relay.store.sqlite import open_sqlite_store

    async with open_sqlite_store(tmp_path / "relay.sqlite3") as sqlite:
        for name in ("a", "b", "c"):
            await sqlite.ingest(new_event(name, DeliveryStatus.PENDING, DeliveryStatus.WITHHELD), 1)
        (claimed, *_) = (await sqlite.claim_due(1, 10_000, 10, 100)).deliveries
        failed = AttemptResolution(DeliveryStatus.FAILED, None, "HTTP 500", HealthEffect.FAILED)
        await sqlite.record_attempt(
            attempt(claimed.id, 1), failed, KEY, 1, None, 2, lease_token=claimed.lease_token
        )
        await sqlite.record_audit(NewAuditEntry("disable", "api", "::1", target=KEY), 3)
        before = await sqlite.history(HistoryFilter())
        detail = await sqlite.delivery(claimed.id)
        health = await sqlite.destination_health()
        audit = await sqlite.audit_log()
    path = write_toml(config_dict, tmp_path / "relay.toml")

    def copy(to: str) -> int:
        return main(["--config", str(path), "copy-store", "--to", to])

    assert await asyncio.to_thread(copy, postgres_dsn) == 0
    assert "3 events, 6 deliveries, 1 attempts, 1 destinations, 1 audit_log" in (
        capsys.readouterr().out
    )
    async with open_postgres_store(postgres_dsn) as pg:
        assert await pg.history(HistoryFilter()) == before  # ids kept, every column
        assert await pg.delivery(claimed.id) == detail
        assert await pg.destination_health() == health
        assert await pg.audit_log() == audit
        later = await pg.ingest(new_event("d"), 5)
        assert later.event_row_id == 4  # the identities moved past the copied ids
    assert await asyncio.to_thread(copy, postgres_dsn) == 2  # never into a store with rows
    assert "empty" in capsys.readouterr().err


async def test_serve_migrate_applies_the_migrations_before_serving(
    postgres_dsn: str, config_dict: dict[str, Any], tmp_path: Path
) -> None:
    from relay.commands.store_admin import ready_to_serve

    config = build_config(pg_config(config_dict, postgres_dsn), tmp_path)
    assert await ready_to_serve(config, migrate=False) == 2
    assert await ready_to_serve(config, migrate=True) == 0
    assert await ready_to_serve(config, migrate=False) == 0
    unreachable = build_config(pg_config(config_dict, "postgresql://x@127.0.0.1:1/db"), tmp_path)
    assert await ready_to_serve(unreachable, migrate=True) == 1


async def test_a_cli_send_on_a_shared_store_is_sent_and_recorded(
    postgres_dsn: str, config_dict: dict[str, Any], tmp_path: Path, capsys: Any
) -> None:
    from relay.records import HistoryFilter

    path = write_toml(pg_config(config_dict, postgres_dsn), tmp_path / "relay.toml")
    assert await asyncio.to_thread(main, ["--config", str(path), "migrate"]) == 0
    sent = await asyncio.to_thread(
        main, ["--config", str(path), "send-test", "--affiliate", "K12345678M"]
    )
    assert sent == 0, capsys.readouterr().err
    async with open_postgres_store(postgres_dsn) as store:
        (row,) = await store.history(HistoryFilter())
        assert (row.kind, row.status) == ("test", "delivered")
        assert await store.known_statuses() == ["delivered"]
    assert len(list((tmp_path / "mail" / "new").iterdir())) == 1


async def test_a_listener_that_cannot_connect_wakes_the_dispatcher_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret = "postgresql://relay:s3cr3t-pw@127.0.0.1:1/relay"
    woken = asyncio.Queue[str]()
    listener = asyncio.create_task(listen_for_work(secret, lambda: woken.put_nowait("wake")))
    try:
        await asyncio.wait_for(woken.get(), timeout=10)  # it looks by itself meanwhile
    finally:
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)
    assert "cannot listen for work on PostgreSQL (connection lost)" in caplog.text
    assert "s3cr3t-pw" not in caplog.text
