"""What an operator does from the admin page or API, each step recorded.

Every action goes through `relay.operations`, the same code the CLI runs: a replay is
queued there (withheld rows decided again first), then this process's own dispatcher
is woken to send it, as the CLI wakes a running server. Each action then writes one
audit entry (what, which ids, when, from where, what came of it) and one log line,
with ids, codes and keys only: never a secret or a buyer's data.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from relay.engine import Relay
from relay.logs import escape_controls
from relay.operations import Queued, Refused, queue_replay, queue_send_test, set_destination_enabled
from relay.records import NewAuditEntry

log = logging.getLogger("relay.admin")

IN_FLIGHT = "being sent right now; try again in a moment"
NOT_REPLAYABLE = (
    "not replayable: unknown, ignored, skipped or superseded, or its buyer data was purged "
    "past storage.retention"
)
MAX_REMOTE_CHARS = 200  # an X-Forwarded-For can be long, and it is the client's to write


@dataclass(frozen=True)
class Actor:
    """Who acts, as far as the relay can tell: the page or the API, and from where."""

    via: str  # page | api
    remote: str

    @classmethod
    def of(cls, via: str, peer: str | None, forwarded_for: str | None) -> Actor:
        remote = peer or "unknown"
        if forwarded_for:  # not trusted (anyone can send it), but worth keeping
            remote += f" (X-Forwarded-For: {forwarded_for})"
        return cls(via, escape_controls(remote)[:MAX_REMOTE_CHARS])


@dataclass(frozen=True)
class Replayed:
    queued: Queued
    audit_id: int
    message: str


@dataclass(frozen=True)
class Done:
    """An action that was done (or refused: `refused`), and where it is recorded."""

    audit_id: int
    message: str
    queued: tuple[int, ...] = ()
    refused: bool = False


async def replay(relay: Relay, actor: Actor, ids: list[int]) -> Replayed:
    """Send these deliveries again now; a row in flight is refused, as the CLI does."""
    queued = await queue_replay(relay.config, relay.store, ids=ids, clock=relay.clock)
    return await _replayed(relay, actor, "replay", "", queued, ids)


async def replay_failed(relay: Relay, actor: Actor, since_ms: int | None, since: str) -> Replayed:
    """Send again every failed delivery created since `since_ms` (all, when None)."""
    queued = await queue_replay(
        relay.config, relay.store, failed=True, since_ms=since_ms, clock=relay.clock
    )
    return await _replayed(relay, actor, "replay-failed", since or "all", queued, [])


async def _replayed(
    relay: Relay, actor: Actor, action: str, target: str, queued: Queued, asked: list[int]
) -> Replayed:
    if queued.to_send:
        relay.wake_dispatcher()
    message = describe_replay(queued, asked)
    ids = tuple(sorted({*asked, *queued.to_send}))
    audit_id = await _record(relay, actor, action, message, target=target, ids=ids)
    return Replayed(queued, audit_id, message)


def describe_replay(queued: Queued, asked: list[int]) -> str:
    parts = []
    if queued.to_send:
        parts.append(f"queued {_ids(queued.to_send)}")
    if queued.in_flight:
        parts.append(f"{_ids(queued.in_flight)} {IN_FLIGHT}")
    if queued.not_replayable:
        parts.append(f"{_ids(queued.not_replayable)} {NOT_REPLAYABLE}")
    for delivery_id, reason in queued.regranted.withheld:
        parts.append(f"{delivery_id} still withheld: {reason}")
    for old_id, new_ids in queued.regranted.replaced:
        parts.append(f"{old_id} decided again, replaced by {_ids(new_ids)}")
    if not parts:
        parts.append("nothing to replay" if not asked else f"nothing queued of {_ids(asked)}")
    return "; ".join(parts)


async def send_test(
    relay: Relay, actor: Actor, *, affiliate: str, destination: str | None, producer: str | None
) -> Done:
    """Queue a notification marked as a test, then have this process's dispatcher send it."""
    queued = await queue_send_test(
        relay.config,
        relay.store,
        affiliate_code=affiliate,
        producer_id=producer,
        destination_id=destination,
        clock=relay.clock,
    )
    target = "/".join(part for part in (producer, affiliate, destination) if part)
    if isinstance(queued, Refused):
        audit_id = await _record(relay, actor, "send-test", f"refused: {queued.reason}", target)
        return Done(audit_id, queued.reason, refused=True)
    relay.wake_dispatcher()
    message = f"test queued as {_ids(queued.to_send)}"
    audit_id = await _record(
        relay, actor, "send-test", message, target, ids=tuple(queued.to_send), producer=producer
    )
    return Done(audit_id, message, tuple(queued.to_send))


async def set_enabled(relay: Relay, actor: Actor, key: str, enabled: bool) -> Done:
    action = "enable" if enabled else "disable"
    refused = await set_destination_enabled(
        relay.config, relay.store, key, enabled, clock=relay.clock
    )
    if refused is not None:
        return Done(0, refused.reason, refused=True)  # no such destination: nothing done
    if enabled:
        relay.wake_dispatcher()  # its queued rows are due again
    message = f"{key} {action}d"
    producer = key.partition("/")[0]
    audit_id = await _record(relay, actor, action, message, key, producer=producer)
    return Done(audit_id, message)


async def revealed(
    relay: Relay, actor: Actor, *, producer: str, what: str, ids: tuple[int, ...]
) -> int:
    """Record that an operator was shown a buyer's data (never the data itself)."""
    return await _record(
        relay, actor, "reveal", f"buyer data shown: {what}", what, ids=ids, producer=producer
    )


async def logged_in(relay: Relay, actor: Actor) -> int:
    return await _record(relay, actor, "login", "signed in to the admin page")


async def _record(
    relay: Relay,
    actor: Actor,
    action: str,
    outcome: str,
    target: str = "",
    *,
    ids: tuple[int, ...] = (),
    producer: str | None = None,
) -> int:
    entry = NewAuditEntry(
        action=action,
        via=actor.via,
        remote=actor.remote,
        producer_id=producer or "",
        target=target,
        delivery_ids=ids,
        outcome=outcome,
    )
    audit_id = await relay.store.record_audit(entry, relay.clock.now_ms())
    log.info("admin %s via %s from %s: %s", action, actor.via, actor.remote, outcome)
    return audit_id


def _ids(ids: list[int] | tuple[int, ...]) -> str:
    return ", ".join(str(i) for i in ids)
