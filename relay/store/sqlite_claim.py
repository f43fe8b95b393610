"""One claim, as plain synchronous steps in the claim's transaction (see queries.sql).

A claim never reads the backlog. It visits the destinations with due work (the
`destination_queue` of migration 8), takes the head of each one's own index range, and
shares the free slots fairly: each destination's next row ranks by how many it would
then have in flight, so a destination with nothing in flight is served before one that
already has many, and a high cap on one destination never starves the others.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from relay.records import Claim
from relay.store.sqlite_statements import Q, read_claimed


@dataclass(frozen=True)
class ClaimRequest:
    """What `Store.claim_due` was asked, in the shape its statements take."""

    now_ms: int
    lease_until_ms: int
    lease_token: str
    owner: str
    limit: int
    per_destination: int
    caps: Mapping[str, int]
    exclude_ids: Collection[int]
    only_ids: Sequence[int] | None

    def cap(self, key: str) -> int:
        return self.caps.get(key, self.per_destination)


@dataclass(frozen=True)
class Head:
    """The first claimable rows of one destination, oldest first."""

    key: str
    held: int  # rows of it already in the caller's hands
    rows: list[tuple[int, int]]  # (id, due at ms)
    # The earliest due of its held rows already out of their lease (a retry whose attempt
    # the caller has not forgotten yet): claimable once no longer excluded.
    loose_due_ms: int | None = None


def claim(conn: sqlite3.Connection, request: ClaimRequest) -> Claim:
    params: dict[str, Any] = {
        "now_ms": request.now_ms,
        "exclude_ids": json.dumps(list(request.exclude_ids)),
    }
    skipped = [row[0] for row in conn.execute(Q["skip_disabled_due"], params)]
    held: dict[str, int] = {}
    loose: dict[str, int] = {}
    for key, count, loose_due_ms in conn.execute(Q["held_by_destination"], params):
        held[key] = count
        if loose_due_ms is not None:
            loose[key] = loose_due_ms
    if request.only_ids is None:
        ids = _claim_from_queue(conn, request, params, held, loose)
    else:
        ids = _claim_among(conn, request, params, held)
    if ids:
        conn.execute(
            Q["lease_rows"],
            {
                "ids": json.dumps(ids),
                "lease_until_ms": request.lease_until_ms,
                "lease_token": request.lease_token,
                "lease_owner": request.owner,
                "now_ms": request.now_ms,
            },
        )
    deliveries, unreadable = read_claimed(conn, ids, request.now_ms) if ids else ([], [])
    if request.only_ids is None:
        next_due = conn.execute(Q["next_due"]).fetchone()[0]
    else:
        only = {"ids": json.dumps(list(request.only_ids))}
        next_due = conn.execute(Q["next_due_of_ids"], only).fetchone()[0]
    return Claim(deliveries, next_due, unreadable, skipped)


def _claim_from_queue(
    conn: sqlite3.Connection,
    request: ClaimRequest,
    params: dict[str, Any],
    held: dict[str, int],
    loose: dict[str, int],
) -> list[int]:
    conn.execute(Q["expired_leases_due"], params)
    due = conn.execute(
        Q["due_destinations"], {**params, "limit": request.limit + len(held)}
    ).fetchall()
    open_keys = [(key, bound) for key, bound in due if held.get(key, 0) < request.cap(key)]
    # Those with the fewest rows in flight first; they are the ones fair_share serves.
    open_keys.sort(key=lambda item: (held.get(item[0], 0), item[1], item[0]))
    heads = []
    for key, _ in open_keys[: request.limit]:
        want = min(request.cap(key) - held.get(key, 0), request.limit)
        rows = conn.execute(Q["destination_head"], {**params, "key": key, "limit": want + 1})
        heads.append(Head(key, held.get(key, 0), [(r[0], r[1]) for r in rows], loose.get(key)))
    taken = fair_share(heads, request)
    chosen = set(taken)
    for head in heads:
        _move_bound(conn, head, taken_count=sum(1 for row_id, _ in head.rows if row_id in chosen))
    return taken


def _claim_among(
    conn: sqlite3.Connection, request: ClaimRequest, params: dict[str, Any], held: dict[str, int]
) -> list[int]:
    rows = conn.execute(
        Q["due_among_ids"], {**params, "only_ids": json.dumps(list(request.only_ids or ()))}
    ).fetchall()
    by_key: dict[str, list[tuple[int, int]]] = {}
    for row_id, key, due_ms in rows:
        by_key.setdefault(key or "", []).append((row_id, due_ms))
    heads = [Head(key, held.get(key, 0), key_rows) for key, key_rows in by_key.items()]
    return fair_share(heads, request)


def fair_share(heads: Sequence[Head], request: ClaimRequest) -> list[int]:
    """Up to `request.limit` rows, due now, at most each destination's free slots.

    Every candidate ranks by how many its destination would then have in flight, then by
    due time: with room for three, destinations A (nothing held) and B (three held) give
    A's first three rows before any of B's.
    """
    ranked = []
    for head in heads:
        free = request.cap(head.key) - head.held
        for nth, (row_id, due_ms) in enumerate(head.rows[: max(free, 0)], start=1):
            if due_ms > request.now_ms:
                break  # in due order: the rest of this destination is not due either
            ranked.append(((head.held + nth, due_ms, row_id), row_id))
    ranked.sort()
    return [row_id for _, row_id in ranked[: request.limit]]


def _move_bound(conn: sqlite3.Connection, head: Head, taken_count: int) -> None:
    """After a visit, the destination's queue bound is its first claimable row not taken
    (taken rows are a prefix of `rows`) or a held row already out of its lease, whichever
    is due first; the queue row goes when there is neither."""
    candidates = [head.rows[taken_count][1]] if taken_count < len(head.rows) else []
    if head.loose_due_ms is not None:
        candidates.append(head.loose_due_ms)
    if candidates:
        params = {"key": head.key, "next_due_ms": min(candidates)}
        conn.execute(Q["set_destination_due"], params)
    else:
        conn.execute(Q["drop_destination_due"], {"key": head.key})
