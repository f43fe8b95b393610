"""Decide, purely, who may receive what for one event: the privacy gate lives here.

For every affiliate named in the event and every destination of that affiliate the
outcome is `deliver`, `withheld` (not allowed to see buyer data, or unknown) or
`skipped` (not subscribed, product out of scope, destination off, no slip). An event
naming no affiliate yields one `ignored` decision. The checks run privacy first, so
nothing can reach `deliver` without `buyer_data = true` for that product.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from relay.config import AffiliateConfig, Destination, EmailDestination, ProducerConfig
from relay.destination_ids import destination_key
from relay.hotmart import SLIP_EVENT, Event

_NOT_PERMITTED = "affiliate is not permitted to see buyer data (buyer_data = false)"


class Outcome(StrEnum):
    DELIVER = "deliver"
    WITHHELD = "withheld"
    SKIPPED = "skipped"
    IGNORED = "ignored"


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    reason: str
    affiliate_code: str = ""
    destination_key: str | None = None
    channel: str | None = None  # "email" | "webhook"


def decide(producer: ProducerConfig, event: Event) -> list[Decision]:
    """Every decision for `event` sent by `producer`, in the event's affiliate order."""
    affiliates = event.named_affiliates
    if not affiliates:
        return [Decision(Outcome.IGNORED, "no affiliate in this sale (a direct sale)")]
    decisions: list[Decision] = []
    seen: set[str] = set()
    for named in affiliates:
        if named.code in seen:  # Hotmart has repeated an affiliate; one notification is enough
            continue
        seen.add(named.code)
        affiliate = producer.affiliate(named.code)
        if affiliate is None:
            decisions.append(
                Decision(
                    Outcome.WITHHELD,
                    f"unknown affiliate {named.code}: not in producer {producer.id}'s config",
                    affiliate_code=named.code,
                )
            )
            continue
        if not affiliate.destinations:
            # Still privacy first: an affiliate without buyer data is withheld, not skipped.
            outcome, reason = (
                (Outcome.WITHHELD, _NOT_PERMITTED)
                if not affiliate.buyer_data
                else (Outcome.SKIPPED, "affiliate has no destinations")
            )
            decisions.append(Decision(outcome, reason, affiliate_code=affiliate.code))
            continue
        for destination in affiliate.destinations:
            outcome, reason = _judge(affiliate, destination, event)
            decisions.append(
                Decision(
                    outcome,
                    reason,
                    affiliate_code=affiliate.code,
                    destination_key=destination_key(
                        producer.id, affiliate.code, destination.stable_id
                    ),
                    channel="email" if isinstance(destination, EmailDestination) else "webhook",
                )
            )
    return decisions


def judge_follow_up(
    affiliate: AffiliateConfig, destination: Destination, event: Event
) -> tuple[Outcome, str]:
    """The gate for sale recovery's notices (reminder, paid, expired) about `event`.

    The same privacy and scope checks as every notification, but no subscription: a
    follow-up is about a slip the affiliate was sent, whatever event brings it.
    """
    refused = _not_permitted(affiliate, event)
    if refused is not None:
        return refused
    if not destination.enabled:
        return Outcome.SKIPPED, "destination disabled in config (enabled = false)"
    return Outcome.DELIVER, "permitted: buyer_data = true, product in scope, sale recovery"


def _not_permitted(affiliate: AffiliateConfig, event: Event) -> tuple[Outcome, str] | None:
    # Privacy first: these two checks must precede anything that could say "deliver".
    if not affiliate.buyer_data:
        return Outcome.WITHHELD, _NOT_PERMITTED
    if not affiliate.covers_product(event.product.id, event.product.ucode):
        return (
            Outcome.SKIPPED,
            f"product {event.product.id or '?'} is out of this affiliate's scope",
        )
    return None


def _judge(
    affiliate: AffiliateConfig, destination: Destination, event: Event
) -> tuple[Outcome, str]:
    refused = _not_permitted(affiliate, event)
    if refused is not None:
        return refused
    if event.event not in affiliate.events:
        return Outcome.SKIPPED, f"event {event.event} is not subscribed"
    if not destination.enabled:
        return Outcome.SKIPPED, "destination disabled in config (enabled = false)"
    if event.event == SLIP_EVENT and not event.payment.has_slip:
        payment = event.payment.type or "unknown"
        if event.is_test:
            # A producer's first click on "send test" lands here: it must read as a
            # success, because it is one.
            return (
                Outcome.SKIPPED,
                "Hotmart's test button: received fine. Its test slip carries payment "
                f"{payment} and no slip link or code, so there is nothing to forward",
            )
        return Outcome.SKIPPED, f"no slip data for payment type {payment}"
    return Outcome.DELIVER, "permitted: buyer_data = true, product in scope, event subscribed"
