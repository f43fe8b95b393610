"""Decide withheld rows again against the config in force now: a late grant (issue 7 §3).

A producer who turns on `buyer_data` after a slip was printed can still send it, and
slips expire in days. Each withheld row goes back through `decide()`, the one privacy
gate, with the event as stored; nothing here judges permission on its own. Pure: the
store reads the rows and applies the plan, in one transaction.

- A row whose destination is still in the config is decided again in place: due now
  if `decide` now says deliver, else still withheld with the new reason.
- A row with no destination (the affiliate was unknown, or had none) or whose
  destination is gone is replaced by one row per destination the affiliate has now,
  each decided on its own, unless the event already has a row for it; but only when
  one of them may be sent now. Otherwise it stays withheld, with the new reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import ValidationError

from relay.config import Config
from relay.decide import Decision, Outcome, decide
from relay.hotmart import Event
from relay.outbox import notice_of
from relay.records import DeliveryStatus, Notice, Regrant, WithheldRow

AGAIN = "decided again: "


@dataclass(frozen=True)
class Redecided:
    """Withheld rows to be replaced by new rows of their event, one per decision."""

    delivery_ids: tuple[int, ...]
    event_row_id: int
    decisions: tuple[Decision, ...]
    notice: Notice  # what the new rows say: the slip, or the event


def plan_regrant(
    config: Config, rows: Sequence[WithheldRow]
) -> tuple[list[Regrant], list[Redecided]]:
    """What becomes of each withheld row under `config`: changes in place, and replacements."""
    regrants: list[Regrant] = []
    replacements: list[Redecided] = []
    groups: dict[tuple[int, str], list[WithheldRow]] = {}
    for row in rows:  # decide once per event and affiliate
        groups.setdefault((row.event_row_id, row.affiliate_code), []).append(row)
    for (event_row_id, code), group in groups.items():
        decided = _decisions(config, group[0], code)
        if isinstance(decided, str):
            withheld = DeliveryStatus.WITHHELD
            regrants += [Regrant(row.id, withheld, AGAIN + decided) for row in group]
            continue
        event, decisions = decided
        by_key = {d.destination_key: d for d in decisions if d.destination_key}
        rest = []
        for row in group:
            decision = by_key.get(row.destination_key or "")
            if decision is None:
                rest.append(row)
            else:
                regrants.append(_in_place(row, decision))
        if not rest:
            continue
        existing = group[0].event_keys  # the same for every row of one event and affiliate
        new = tuple(d for d in decisions if d.destination_key and d.destination_key not in existing)
        if any(d.outcome is Outcome.DELIVER for d in new):
            notice = notice_of(event.event)
            replacements.append(Redecided(tuple(r.id for r in rest), event_row_id, new, notice))
            continue
        # Nothing to send: no new rows, only the new reason (the first one that applies).
        why = next((d.reason for d in new), None)
        why = why or next((d.reason for d in decisions if d.destination_key is None), None)
        for row in rest:
            reason = why or f"destination {row.destination_key} is no longer in the config"
            regrants.append(Regrant(row.id, DeliveryStatus.WITHHELD, AGAIN + reason))
    return regrants, replacements


def _decisions(config: Config, row: WithheldRow, code: str) -> tuple[Event, list[Decision]] | str:
    """The row's event and this affiliate's decisions for it now, or why there are none."""
    producer = config.producer(row.producer_id)
    if producer is None:
        return f"producer {row.producer_id} is no longer in the config"
    try:
        event = Event.model_validate_json(row.payload_json)
    except ValidationError:
        return "its stored event cannot be read"
    return event, [d for d in decide(producer, event) if d.affiliate_code == code]


def _in_place(row: WithheldRow, decision: Decision) -> Regrant:
    status = (
        DeliveryStatus.PENDING if decision.outcome is Outcome.DELIVER else DeliveryStatus.WITHHELD
    )
    return Regrant(row.id, status, AGAIN + decision.reason, decision.channel)
