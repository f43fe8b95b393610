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
from relay.destination_ids import destination_key, split_destination_key
from relay.hotmart import Event
from relay.records import ClaimedDelivery
from relay.render import Templates


@dataclass(frozen=True)
class Target:
    """An affiliate's destination, as the config in force now has it."""

    producer: ProducerConfig
    affiliate: AffiliateConfig
    destination: EmailDestination | WebhookDestination

    @property
    def affiliate_code(self) -> str:
        return self.affiliate.code

    @property
    def locale(self) -> str:
        return self.affiliate.locale

    @property
    def email_to(self) -> str:
        if isinstance(self.destination, EmailDestination):
            return self.destination.to
        raise ValueError("a webhook destination has no email address")

    def affiliate_name(self, event: Event) -> str:
        if self.affiliate.name:
            return self.affiliate.name
        named = next((a for a in event.affiliates if a.code == self.affiliate_code), None)
        return named.name if named else self.affiliate_code


Found = tuple[ProducerConfig, AffiliateConfig, EmailDestination | WebhookDestination]


class DestinationIndex:
    """Every destination of one config by its key, built once for that config.

    An attempt then finds its destination with one dict lookup, where `find_destination`
    walks the producer, affiliate and destination lists and derives each unnamed
    destination's id (a SHA-256 of its address) on the way.
    """

    def __init__(self, config: Config) -> None:
        self._by_key: dict[str, Found] = {}
        for producer in config.producers:
            for affiliate in producer.affiliates:
                for destination in affiliate.destinations:
                    key = destination_key(producer.id, affiliate.code, destination.stable_id)
                    # The first of a name wins, as in find_destination's walk.
                    self._by_key.setdefault(key, (producer, affiliate, destination))

    def find(self, key: str) -> Found | None:
        return self._by_key.get(key)


def find_destination(config: Config, key: str) -> Found | None:
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


def describe(destination: EmailDestination | WebhookDestination) -> str:
    if isinstance(destination, EmailDestination):
        return f"email {destination.to}"
    return f"webhook {destination.url}"


def resolve_target(destinations: DestinationIndex, delivery: ClaimedDelivery) -> Target | str:
    """The target of a notification or test, or the reason there is none any more.

    Alerts go to their producer instead: `relay.alerts.alert_target`.
    """
    found = destinations.find(delivery.destination_key)
    if found is None:
        return f"destination {delivery.destination_key} is no longer in the config"
    producer, affiliate, destination = found
    return Target(producer=producer, affiliate=affiliate, destination=destination)


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
