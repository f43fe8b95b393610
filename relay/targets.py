"""Find, in the config in force now, where a claimed delivery goes and how it is worded."""

from __future__ import annotations

from dataclasses import dataclass

from relay.config import (
    AffiliateConfig,
    Config,
    EmailDestination,
    ProducerConfig,
    WebhookDestination,
)
from relay.destination_ids import destination_key, positional_key, split_destination_key
from relay.hotmart import Event
from relay.render import Templates
from relay.store.records import ClaimedDelivery, DeliveryKind

ALERT_KEY_PREFIX = "alert:"


@dataclass(frozen=True)
class Target:
    producer: ProducerConfig
    destination: EmailDestination | WebhookDestination
    affiliate: AffiliateConfig | None = None  # None for producer alerts
    alerted_key: str = ""  # for alerts: the destination that was disabled
    alerted_label: str = ""

    @property
    def affiliate_code(self) -> str:
        return self.affiliate.code if self.affiliate else ""

    @property
    def locale(self) -> str:
        return self.affiliate.locale if self.affiliate else "en"

    @property
    def email_to(self) -> str:
        if isinstance(self.destination, EmailDestination):
            return self.destination.to
        raise ValueError("a webhook destination has no email address")

    def affiliate_name(self, event: Event) -> str:
        if self.affiliate and self.affiliate.name:
            return self.affiliate.name
        named = next((a for a in event.affiliates if a.code == self.affiliate_code), None)
        return named.name if named else self.affiliate_code


def find_destination(
    config: Config, key: str
) -> tuple[ProducerConfig, AffiliateConfig, EmailDestination | WebhookDestination] | None:
    """The destination `key` names in `config`, found by its id: wherever it sits now."""
    parts = split_destination_key(key)
    if parts is None:
        return None
    producer = config.producer(parts[0])
    affiliate = producer.affiliate(parts[1]) if producer else None
    destination = affiliate.destination(parts[2]) if affiliate else None
    if producer is None or affiliate is None or destination is None:
        return None
    return producer, affiliate, destination


def positional_keys(config: Config) -> dict[str, str]:
    """Each destination's key as an older relay wrote it (its position) -> its id key.

    Right only for the config in force when the store is first opened after the upgrade;
    one reordered before that maps positions to the wrong destinations.
    """
    return {
        positional_key(producer.id, affiliate.code, index): destination_key(
            producer.id, affiliate.code, destination.stable_id
        )
        for producer in config.producers
        for affiliate in producer.affiliates
        for index, destination in enumerate(affiliate.destinations)
    }


def describe(destination: EmailDestination | WebhookDestination) -> str:
    if isinstance(destination, EmailDestination):
        return f"email {destination.to}"
    return f"webhook {destination.url}"


def resolve_target(config: Config, delivery: ClaimedDelivery) -> Target | str:
    """The target, or the reason there is none any more."""
    if delivery.kind == DeliveryKind.ALERT:
        producer = config.producer(delivery.producer_id)
        if producer is None or not producer.alert_email:
            return f"producer {delivery.producer_id} has no alert_email"
        alerted_key = delivery.destination_key.removeprefix(ALERT_KEY_PREFIX)
        found = find_destination(config, alerted_key)
        return Target(
            producer=producer,
            destination=EmailDestination(kind="email", to=producer.alert_email),
            alerted_key=alerted_key,
            alerted_label=describe(found[2]) if found else alerted_key,
        )
    found = find_destination(config, delivery.destination_key)
    if found is None:
        return f"destination {delivery.destination_key} is no longer in the config"
    producer, affiliate, destination = found
    return Target(producer=producer, destination=destination, affiliate=affiliate)


class TemplateSet:
    """One `Templates` per producer (its override folder), built once at start."""

    def __init__(self, config: Config) -> None:
        self._default = Templates()
        self._by_producer = {
            p.id: Templates(config.resolve_path(p.templates_dir))
            if p.templates_dir
            else self._default
            for p in config.producers
        }

    def for_producer(self, producer_id: str) -> Templates:
        return self._by_producer.get(producer_id, self._default)

    def check(self) -> list[str]:
        """Compile and trial-render every template set once, naming whose it is."""
        problems = [f"default templates: {p}" for p in self._default.check()]
        for producer_id, templates in self._by_producer.items():
            if templates is not self._default:
                problems.extend(f"producer {producer_id} templates: {p}" for p in templates.check())
        return problems
