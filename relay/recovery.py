"""Sale recovery, pure: the reminder a slip gets, the follow-ups its purchase brings, and
whether one may still go out when it falls due (issue 11).

- A slip notified to an affiliate gets a reminder row per destination, due
  `recovery.remind_before` before the slip expires: at `pix_expiration_date` when the
  event has one, else `recovery.slip_validity` for its payment type after the order.
  The reminder is an outbox row with a due time, so it survives restarts and shows in
  the history. The store cancels it when the purchase settles first (`SETTLING_EVENTS`,
  whichever order they arrive in), and it is checked again when it falls due.
- A paid (PURCHASE_APPROVED or PURCHASE_COMPLETE) or expired (PURCHASE_EXPIRED) event
  brings a notice to each destination its transaction's slip went to (delivered, sent,
  or on its way: a Pix code is often paid before its mail is out): one per
  destination, however many such events arrive, and never to an affiliate that was
  withheld, since such a slip is never sent.

Every notice passes the privacy gate (`decide.judge_follow_up`) when it is planned and
again when it is sent, like any notification.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from relay.attempt_outcome import Unsent
from relay.config import AffiliateConfig, Config, ProducerConfig, RecoveryConfig
from relay.decide import Outcome, judge_follow_up
from relay.destination_ids import split_destination_key
from relay.formatting import iso_utc
from relay.hotmart import EXPIRED_EVENT, PAID_EVENTS, SLIP_EVENT, Event, reminder_cancel_reason
from relay.outbox import STATUS_OF_OUTCOME, new_message_id
from relay.records import DeliveryStatus, FollowUpFacts, NewDelivery, Notice
from relay.targets import Target

# Notices that carry a WhatsApp link to the buyer: those about an unpaid slip.
WHATSAPP_NOTICES = frozenset({Notice.SLIP, Notice.REMINDER, Notice.EXPIRED})


def recovery_for(config: Config, affiliate: AffiliateConfig) -> RecoveryConfig | None:
    """The settings sale recovery follows for this affiliate; None when it is off for it."""
    recovery = config.recovery
    if recovery is None or not recovery.enabled or not affiliate.recovery:
        return None
    return recovery


def slip_expiry_ms(event: Event, recovery: RecoveryConfig) -> int | None:
    """When the slip stops being payable: the event's own expiry (Pix), else its payment
    type's `slip_validity` after the order date; None when neither is known."""
    if event.payment.expires_at_ms is not None:
        return event.payment.expires_at_ms
    validity_s = recovery.slip_validity_s.get(event.payment.type)
    ordered_ms = event.purchase.order_date_ms or event.created_at_ms
    if validity_s is None or ordered_ms is None:
        return None
    return ordered_ms + int(validity_s * 1000)


def follow_up_of(event_name: str) -> Notice | None:
    """The notice a settling event brings to affiliates who were sent the slip."""
    if event_name in PAID_EVENTS:
        return Notice.PAID
    return Notice.EXPIRED if event_name == EXPIRED_EVENT else None


# What `slip_outcomes` counts: `relay_slips_total{outcome}` in /metrics.
SLIP_OUTCOMES = ("notified", "paid", "expired")


def slip_outcomes(
    config: Config, event: Event, rows: Sequence[NewDelivery], facts: FollowUpFacts | None
) -> tuple[str, ...]:
    """What an accepted (not duplicate) event means for the slips sale recovery follows:
    `notified` for a slip the relay is sending to someone; `paid` or `expired` for the
    first settling event of a transaction whose slip was notified (`facts`, read for it
    by ingest). Nothing while recovery is off."""
    if config.recovery is None or not config.recovery.enabled or event.is_test:
        return ()
    if event.event == SLIP_EVENT:
        sending = any(
            row.status == DeliveryStatus.PENDING and row.notification in (None, Notice.SLIP)
            for row in rows
        )
        return ("notified",) if sending else ()
    if facts is None or not facts.notified or facts.paid:
        return ()
    notice = follow_up_of(event.event)
    if notice is Notice.PAID:
        return ("paid",)
    return ("expired",) if notice is Notice.EXPIRED else ()


def needs_facts(config: Config, event: Event) -> bool:
    """Whether planning this event's rows needs what the store knows of its transaction."""
    recovery = config.recovery
    return (
        recovery is not None
        and recovery.enabled
        and follow_up_of(event.event) is not None
        and bool(event.purchase.transaction)
        and not event.is_test
    )


def plan_rows(
    config: Config,
    producer: ProducerConfig,
    event: Event,
    decided: tuple[NewDelivery, ...],
    facts: FollowUpFacts | None,
    now_ms: int,
) -> tuple[NewDelivery, ...]:
    """The event's rows: the decided ones, with what sale recovery adds or words anew."""
    if config.recovery is None or not config.recovery.enabled or event.is_test:
        return decided
    if event.event == SLIP_EVENT:
        return decided + _reminders(config, producer, event, decided, now_ms)
    notice = follow_up_of(event.event)
    if notice is None or facts is None:
        return decided
    return _with_follow_ups(config, producer, event, decided, facts, notice)


def _reminders(
    config: Config,
    producer: ProducerConfig,
    event: Event,
    decided: Sequence[NewDelivery],
    now_ms: int,
) -> tuple[NewDelivery, ...]:
    """One reminder per destination the slip is about to be sent to, while it has time."""
    assert config.recovery is not None
    expiry_ms = slip_expiry_ms(event, config.recovery)
    if expiry_ms is None or not event.purchase.transaction or not event.payment.has_slip:
        return ()
    due_ms = expiry_ms - int(config.recovery.remind_before_s * 1000)
    if due_ms <= now_ms:
        return ()  # too late for a reminder to be of use
    reason = f"sale recovery: reminder due {iso_utc(due_ms)}; the slip expires {iso_utc(expiry_ms)}"
    reminders = []
    for row in decided:
        affiliate = producer.affiliate(row.affiliate_code)
        if row.status != DeliveryStatus.PENDING or affiliate is None:
            continue
        if recovery_for(config, affiliate) is None:
            continue
        reminders.append(
            replace(
                row,
                reason=reason,
                message_id=new_message_id(),
                notification=Notice.REMINDER,
                due_at_ms=due_ms,
            )
        )
    return tuple(reminders)


def _with_follow_ups(
    config: Config,
    producer: ProducerConfig,
    event: Event,
    decided: tuple[NewDelivery, ...],
    facts: FollowUpFacts,
    notice: Notice,
) -> tuple[NewDelivery, ...]:
    """The decided rows, where a destination that was sent the slip gets the notice
    instead (one row per destination of the event: a subscribed approval becomes the
    paid notice, an unsubscribed one's skip gives way to it)."""
    assert config.recovery is not None
    wanted = (
        config.recovery.notify_paid if notice is Notice.PAID else config.recovery.notify_expired
    )
    if not wanted or (notice is Notice.EXPIRED and facts.paid):
        return decided  # nobody asked for it, or it was paid: nothing expired
    follow_ups: dict[str, NewDelivery] = {}
    for slip in facts.notified:
        key = slip.destination_key
        if key in follow_ups or (key, notice) in facts.sent:
            continue  # one notice per destination, however many events bring it
        affiliate = producer.affiliate(slip.affiliate_code)
        parts = split_destination_key(key)
        destination = affiliate.destination(parts[2]) if affiliate and parts else None
        if affiliate is None or destination is None or recovery_for(config, affiliate) is None:
            continue
        outcome, reason = judge_follow_up(affiliate, destination, event)
        if outcome is Outcome.DELIVER:
            reason = (
                f"sale recovery: {notice.value}; the slip went here in delivery {slip.delivery_id}"
            )
        follow_ups[key] = NewDelivery(
            status=STATUS_OF_OUTCOME[outcome],
            reason=reason,
            message_id=new_message_id(),
            affiliate_code=slip.affiliate_code,
            destination_key=key,
            channel=slip.channel,
            notification=notice,
        )
    rows = [follow_ups.pop(r.destination_key, r) if r.destination_key else r for r in decided]
    return (*rows, *follow_ups.values())


def refusal_at_send(
    config: Config,
    target: Target,
    event: Event,
    notice: Notice,
    now_ms: int,
    settled_by: str | None,
) -> Unsent | None:
    """Whether a follow-up due now must not go out after all; None means: send it.

    `settled_by`: the first settling event stored for the reminder's transaction, if any.
    """
    outcome, reason = judge_follow_up(target.affiliate, target.destination, event)
    if outcome is not Outcome.DELIVER:
        status = DeliveryStatus.WITHHELD if outcome is Outcome.WITHHELD else DeliveryStatus.SKIPPED
        return Unsent(status, f"at send time: {reason}")
    recovery = recovery_for(config, target.affiliate)
    if recovery is None:
        return Unsent(DeliveryStatus.SKIPPED, "at send time: sale recovery is off for it")
    if notice is Notice.PAID and not recovery.notify_paid:
        return Unsent(DeliveryStatus.SKIPPED, "at send time: recovery.notify_paid = false")
    if notice is Notice.EXPIRED and not recovery.notify_expired:
        return Unsent(DeliveryStatus.SKIPPED, "at send time: recovery.notify_expired = false")
    if notice is Notice.REMINDER:
        if settled_by is not None:
            return Unsent(DeliveryStatus.CANCELLED, reminder_cancel_reason(settled_by))
        expiry_ms = slip_expiry_ms(event, recovery)
        if expiry_ms is None or now_ms >= expiry_ms:
            return Unsent(DeliveryStatus.CANCELLED, "the slip expired before its reminder went out")
    return None


def message_options(
    config: Config, affiliate: AffiliateConfig, event: Event, notice: Notice
) -> tuple[bool, int | None]:
    """For the message: whether it carries a WhatsApp link to the buyer, and the slip's
    expiry to show in a reminder (known for every slip a reminder was made for)."""
    recovery = recovery_for(config, affiliate)
    if recovery is None:
        return False, None
    expiry_ms = slip_expiry_ms(event, recovery) if notice is Notice.REMINDER else None
    return notice in WHATSAPP_NOTICES, expiry_ms
