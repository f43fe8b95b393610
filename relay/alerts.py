"""Producer alerts: the one email a producer gets when a destination is disabled.

One type and one module. An alert is kept as a delivery of kind `alert`, so it is
claimed, leased, retried and recorded like any delivery. Its destination key is the
destination it is about, and what it carries is a `DestinationDisabled`, never a
Hotmart event. It goes to the producer's `alert_email` as the config in force has it
when it is sent, and it never counts for or against any destination's health.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict

from relay.config import Config, ProducerConfig
from relay.messages import EmailMessageSpec
from relay.records import ClaimedDelivery, DestinationHealth, NewAlert
from relay.render import DestinationAlert, Templates
from relay.targets import describe, find_destination

ALERT_EVENT = "DESTINATION_DISABLED"


class DestinationDisabled(BaseModel):
    """What an alert carries: which destination was disabled, and when."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    destination_key: str
    disabled_at_ms: int


def alert_for(config: Config, delivery: ClaimedDelivery, now_ms: int) -> NewAlert | None:
    """The alert to write if this very outcome disables `delivery`'s destination; None
    when its producer has no `alert_email`."""
    producer = config.producer(delivery.producer_id)
    if producer is None or not producer.alert_email:
        return None
    key = delivery.destination_key
    return NewAlert(
        producer_id=producer.id,
        alert_id=f"alert:{key}:{now_ms}",
        event_name=ALERT_EVENT,
        destination_key=key,
        message_id=f"msg_alert_{delivery.id}_{now_ms}",
        reason=f"destination {key} was disabled",
        payload_json=DestinationDisabled(
            destination_key=key, disabled_at_ms=now_ms
        ).model_dump_json(),
    )


@dataclass(frozen=True)
class AlertTarget:
    """Where a claimed alert goes under the config in force now, and what it is about."""

    producer: ProducerConfig
    to: str
    alert: DestinationDisabled
    label: str  # the disabled destination as the producer knows it: "webhook https://..."


def alert_target(config: Config, delivery: ClaimedDelivery) -> AlertTarget | str:
    """The target, or the reason there is none any more."""
    producer = config.producer(delivery.producer_id)
    if producer is None or not producer.alert_email:
        return f"producer {delivery.producer_id} has no alert_email"
    alert = DestinationDisabled.model_validate_json(delivery.payload_json)
    found = find_destination(config, alert.destination_key)
    label = describe(found[2]) if found else alert.destination_key
    return AlertTarget(producer, producer.alert_email, alert, label)


def alert_email(
    target: AlertTarget, templates: Templates, health: DestinationHealth | None, message_id: str
) -> EmailMessageSpec:
    """The email, with the destination's health as the store has it now; RenderError if
    the producer's alert template fails."""
    rendered = templates.alert_email(
        DestinationAlert(
            producer_name=target.producer.name or target.producer.id,
            destination_key=target.alert.destination_key,
            destination_label=target.label,
            last_error=health.last_error if health else "",
            consecutive_failures=health.consecutive_failures if health else 0,
        )
    )
    return EmailMessageSpec(
        to=target.to,
        subject=rendered.subject,
        text=rendered.text,
        html=rendered.html,
        message_id=message_id,
    )
