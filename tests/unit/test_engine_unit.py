"""The engine's unit tier: Dispatcher, AttemptRunner and GroupCommit built directly over
the in-memory store, a scripted sender and a fake clock. Retries, fences, cancellation
and drain run here without waiting real time; the integration tests (test_dispatch.py,
test_delivery.py) run the same engine against SQLite and real peers."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from relay.alerts import DestinationDisabled
from relay.messages import EmailMessageSpec, WebhookMessage
from relay.outcomes import PermanentError, TransientError
from relay.records import DeliveryKind, DeliveryStatus, cli_lease_owner
from relay.store import StoreRejected, StoreUnavailable
from relay.store.group_commit import GroupCommit, ItemFailed
from tests.peers import wait_until
from tests.unit.engine_kit import FakeClock, ScriptedSender, engine, queue_slip, webhook_config
from tests.unit.memory_store import MemoryStore


async def test_a_burst_makes_its_retries_on_the_schedule_without_waiting(tmp_path: Path) -> None:
    config = webhook_config(tmp_path, retry_delays=["2s", "2s", "2s"])
    store, clock = MemoryStore(), FakeClock()
    sender = ScriptedSender(TransientError("HTTP 503"), TransientError("HTTP 502"), None)
    dispatcher, _ = engine(config, store, sender, clock)
    delivery_id = await queue_slip(store, config, clock, "slip-1")
    started_ms = clock.now
    await dispatcher.run_burst(only_ids=[delivery_id])
    row = store.rows[delivery_id]
    assert (row.status, row.attempts) == (DeliveryStatus.DELIVERED, 3)
    assert [a.outcome for a in store.attempts] == ["transient", "transient", "success"]
    assert {m.message_id for m in sender.sent} == {row.message_id}  # one id on every attempt
    # Two retries of 2 s +/- 20% each were waited for, on the fake clock alone.
    assert 2 * 1600 <= clock.now - started_ms <= 2 * 2400 + 100


async def test_retries_stop_when_the_schedule_runs_out(tmp_path: Path) -> None:
    config = webhook_config(tmp_path, retry_delays=["1s"])
    store, clock = MemoryStore(), FakeClock()
    sender = ScriptedSender(*(TransientError("HTTP 500") for _ in range(5)))
    dispatcher, _ = engine(config, store, sender, clock)
    delivery_id = await queue_slip(store, config, clock, "slip-1")
    await dispatcher.run_burst(only_ids=[delivery_id])
    row = store.rows[delivery_id]
    assert (row.status, row.attempts) == (DeliveryStatus.FAILED, 2)
    assert row.reason == "gave up after 2 attempts: HTTP 500"
    assert len(sender.sent) == 2


async def test_a_410_disables_the_destination_and_queues_one_honest_alert(tmp_path: Path) -> None:
    config = webhook_config(tmp_path)
    store, clock = MemoryStore(), FakeClock()
    sender = ScriptedSender(PermanentError("410 Gone", disable_destination=True))
    dispatcher, _ = engine(config, store, sender, clock)
    delivery_id = await queue_slip(store, config, clock, "slip-1")
    await dispatcher.run_burst(only_ids=[delivery_id])
    key = store.rows[delivery_id].destination_key
    assert store.rows[delivery_id].status == DeliveryStatus.FAILED
    assert not store.health[key].enabled
    (alert,) = [r for r in store.rows.values() if r.kind == DeliveryKind.ALERT]
    assert alert.destination_key == key  # keyed by what it is about: no "alert:" prefix
    assert DestinationDisabled.model_validate_json(alert.payload_json).destination_key == key

    await dispatcher.run_burst(only_ids=[alert.id])
    assert store.rows[alert.id].status == DeliveryStatus.DELIVERED
    mail = sender.sent[-1]
    assert isinstance(mail, EmailMessageSpec) and mail.to == "ops@acme.example"
    assert key in mail.text and "410 Gone" in mail.text
    assert store.health[key].consecutive_failures == 0  # an alert judges no health


async def test_the_gate_runs_again_at_send_time(tmp_path: Path) -> None:
    config = webhook_config(tmp_path)
    store, clock = MemoryStore(), FakeClock()
    delivery_id = await queue_slip(store, config, clock, "slip-1")
    revoked = config.model_copy(
        update={
            "producers": (
                config.producers[0].model_copy(
                    update={
                        "affiliates": (
                            config.producers[0]
                            .affiliates[0]
                            .model_copy(update={"buyer_data": False}),
                        )
                    }
                ),
            )
        }
    )
    sender = ScriptedSender()
    dispatcher, _ = engine(revoked, store, sender, clock)
    await dispatcher.run_burst(only_ids=[delivery_id])
    assert store.rows[delivery_id].status == DeliveryStatus.WITHHELD
    assert store.rows[delivery_id].reason.startswith("at send time: ")
    assert sender.sent == []


async def test_a_taken_over_lease_cannot_record(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A serve and a CLI share one store; should a lease run out under a live attempt,
    the fence lets only the new holder record it."""
    config = webhook_config(tmp_path)
    store, clock = MemoryStore(), FakeClock()
    slow = ScriptedSender()
    slow.gate = asyncio.Event()
    serve, _ = engine(config, store, slow, clock, lease_s=60.0)
    delivery_id = await queue_slip(store, config, clock, "slip-1")
    first = asyncio.create_task(serve.run_burst(only_ids=[delivery_id]))
    await wait_until(lambda: len(slow.sent) == 1)
    clock.now += 3_600_000  # the lease ran out while the attempt still runs
    cli, _ = engine(config, store, ScriptedSender(), clock, owner=cli_lease_owner(4242))
    await cli.run_burst(only_ids=[delivery_id])
    slow.gate.set()
    await first
    assert [a.attempt_no for a in store.attempts] == [1]  # never two attempts numbered 1
    assert store.rows[delivery_id].status == DeliveryStatus.DELIVERED
    assert "outcome not recorded, its lease was taken over" in caplog.text


async def test_a_row_in_flight_is_never_claimed_again_even_past_its_lease(
    tmp_path: Path,
) -> None:
    config = webhook_config(tmp_path)
    store, clock = MemoryStore(), FakeClock()
    sender = ScriptedSender()
    sender.gate = asyncio.Event()
    dispatcher, _ = engine(config, store, sender, clock, lease_s=60.0)
    delivery_id = await queue_slip(store, config, clock, "slip-1")
    running = asyncio.create_task(dispatcher.run())
    await wait_until(lambda: len(sender.sent) == 1)
    claims = store.claims
    clock.now += 24 * 3_600_000
    dispatcher._wakeup.set()  # as ingest would after its next commit
    await wait_until(lambda: store.claims > claims)
    assert len(sender.sent) == 1 and dispatcher.in_flight == 1
    sender.gate.set()
    await wait_until(lambda: store.rows[delivery_id].status == DeliveryStatus.DELIVERED)
    dispatcher.stop()
    await running
    assert len(store.attempts) == 1


async def test_a_cancelled_attempt_still_lands_its_outcome_write(tmp_path: Path) -> None:
    """Shutdown cancels attempts; one already writing its outcome finishes the write."""
    config = webhook_config(tmp_path)
    store, clock = MemoryStore(), FakeClock()
    _, runner = engine(config, store, ScriptedSender(), clock)
    delivery_id = await queue_slip(store, config, clock, "slip-1")
    claim = await store.claim_due(clock.now, clock.now + 60_000, 1, 1)
    store.writes_open.clear()  # a slow disk
    attempt = asyncio.create_task(runner.attempt(claim.deliveries[0]))
    await wait_until(lambda: store.writes_waiting == 1)
    attempt.cancel()
    await asyncio.sleep(0)
    store.writes_open.set()
    with pytest.raises(asyncio.CancelledError):
        await attempt
    assert store.rows[delivery_id].status == DeliveryStatus.DELIVERED
    assert len(store.attempts) == 1


async def test_an_attempt_over_its_budget_is_a_transient_failure(tmp_path: Path) -> None:
    config = webhook_config(tmp_path)
    store, clock = MemoryStore(), FakeClock()
    sender = ScriptedSender()
    sender.gate = asyncio.Event()  # never opened: the receiver never answers
    _, runner = engine(config, store, sender, clock, budget_s=0.01)
    delivery_id = await queue_slip(store, config, clock, "slip-1")
    claim = await store.claim_due(clock.now, clock.now + 60_000, 1, 1)
    status = await runner.attempt(claim.deliveries[0])
    assert status == DeliveryStatus.PENDING  # retried on the schedule
    (attempt,) = store.attempts
    assert attempt.outcome == "transient" and "ran over its 0.01s budget" in attempt.detail
    assert isinstance(sender.sent[0], WebhookMessage)
    assert attempt.request_payload  # what was being sent is kept
    assert store.rows[delivery_id].attempts == 1


async def test_drain_waits_for_attempts_in_flight(tmp_path: Path) -> None:
    config = webhook_config(tmp_path)
    store, clock = MemoryStore(), FakeClock()
    sender = ScriptedSender()
    sender.gate = asyncio.Event()
    dispatcher, _ = engine(config, store, sender, clock)
    ids = [await queue_slip(store, config, clock, f"slip-{i}") for i in range(2)]
    burst = asyncio.create_task(dispatcher.run_burst(only_ids=ids))
    await wait_until(lambda: len(sender.sent) == 2)
    drained = asyncio.create_task(dispatcher.drain(grace_s=3600.0))
    await asyncio.sleep(0)
    assert not drained.done() and dispatcher.in_flight == 2
    sender.gate.set()
    await drained
    await burst
    assert [store.rows[i].status for i in ids] == [DeliveryStatus.DELIVERED] * 2


async def test_drain_cancels_what_outlives_its_grace_and_leaves_it_leased(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = webhook_config(tmp_path)
    store, clock = MemoryStore(), FakeClock()
    sender = ScriptedSender()
    sender.gate = asyncio.Event()  # never answers
    dispatcher, _ = engine(config, store, sender, clock)
    delivery_id = await queue_slip(store, config, clock, "slip-1")
    burst = asyncio.create_task(dispatcher.run_burst(only_ids=[delivery_id]))
    await wait_until(lambda: len(sender.sent) == 1)
    await dispatcher.drain(grace_s=0)
    assert dispatcher.in_flight == 0
    row = store.rows[delivery_id]
    assert (row.status, row.attempts) == (DeliveryStatus.PENDING, 0)
    assert row.lease_token is not None  # the next start hands it back and sends again
    assert "stopped 1 attempts in flight" in caplog.text
    burst.cancel()
    with pytest.raises(asyncio.CancelledError):
        await burst


async def test_a_store_error_in_the_loop_backs_off_and_the_dispatcher_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = webhook_config(tmp_path)
    store, clock = MemoryStore(), FakeClock()
    sender = ScriptedSender()
    dispatcher, _ = engine(config, store, sender, clock)
    delivery_id = await queue_slip(store, config, clock, "slip-1")
    real_claim, failures = store.claim_due, [StoreUnavailable("locked")]

    async def flaky_claim(*args: object, **kwargs: object) -> object:
        if failures:
            raise failures.pop()
        return await real_claim(*args, **kwargs)  # type: ignore[arg-type]

    store.claim_due = flaky_claim  # type: ignore[method-assign,assignment]
    running = asyncio.create_task(dispatcher.run())
    await wait_until(lambda: store.rows[delivery_id].status == DeliveryStatus.DELIVERED)
    dispatcher.stop()
    await running
    assert "dispatcher cannot reach the store" in caplog.text
    assert 0.1 in clock.slept_s  # the first back-off, on the fake clock


# -- GroupCommit -------------------------------------------------------------------------


async def test_what_arrives_while_a_batch_commits_rides_in_the_next_one() -> None:
    batches: list[list[int]] = []
    gate = asyncio.Event()

    async def write(batch: list[int]) -> list[int]:
        batches.append(list(batch))
        await gate.wait()
        return [item * 10 for item in batch]

    commit: GroupCommit[int, int] = GroupCommit(write)  # type: ignore[arg-type]
    async with commit.running():
        first = asyncio.create_task(commit.submit(1))
        await wait_until(lambda: batches == [[1]])
        rest = [asyncio.create_task(commit.submit(n)) for n in (2, 3, 4)]
        await asyncio.sleep(0)
        gate.set()
        assert await first == 10
        assert [await task for task in rest] == [20, 30, 40]
    assert batches == [[1], [2, 3, 4]]


async def test_one_bad_item_fails_alone_and_a_store_failure_fails_its_batch() -> None:
    async def write(batch: list[str]) -> list[str]:
        if "down" in batch:
            raise StoreUnavailable("disk full")
        if "bad" in batch:
            raise ItemFailed(batch.index("bad"), StoreRejected("cannot be stored"))
        return [item.upper() for item in batch]

    commit: GroupCommit[str, str] = GroupCommit(write)  # type: ignore[arg-type]
    async with commit.running():
        results = await asyncio.gather(
            commit.submit("a"), commit.submit("bad"), commit.submit("b"), return_exceptions=True
        )
        assert results[0] == "A" and results[2] == "B"
        assert isinstance(results[1], StoreRejected)
        with pytest.raises(StoreUnavailable):
            await commit.submit("down")
    with pytest.raises(RuntimeError, match="not open"):
        await commit.submit("late")
