"""One attempt at one delivery: re-check, render, send, classify, record.

The privacy gate is checked again here, against the config in force at send time,
so a producer who revokes `buyer_data` stops even the deliveries already queued.
The outcome write is shielded from cancellation: an attempt that happened is always
recorded, even while the relay is shutting down.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from relay.channels.base import EmailMessageSpec, WebhookMessage
from relay.channels.email import EmailChannel
from relay.channels.webhook import WebhookChannel
from relay.config import Config, WebhookDestination
from relay.decide import Outcome, decide
from relay.hotmart import Event
from relay.outcomes import AttemptReport, DeliveryError, Fault, PermanentError, TransientError
from relay.render import DestinationAlert, Notification, RenderError
from relay.retry import next_retry
from relay.runtime import Clock
from relay.store import Store, StoreUnavailable
from relay.store.records import (
    AttemptRecord,
    AttemptResolution,
    ClaimedDelivery,
    DeliveryKind,
    DeliveryStatus,
    HealthEffect,
    NewDelivery,
    NewEvent,
)
from relay.targets import ALERT_KEY_PREFIX, Target, TemplateSet, resolve_target

log = logging.getLogger("relay.attempt")
T = TypeVar("T")


@dataclass(frozen=True)
class Channels:
    email: EmailChannel
    webhook: WebhookChannel


class AttemptRunner:
    def __init__(
        self,
        config: Config,
        store: Store,
        channels: Channels,
        templates: TemplateSet,
        clock: Clock,
        rng: random.Random | None = None,
    ) -> None:
        self._config = config
        self._store = store
        self._channels = channels
        self._templates = templates
        self._clock = clock
        self._rng = rng or random.Random()

    async def attempt(self, delivery: ClaimedDelivery) -> None:
        """Make one attempt and record it. A bug of ours counts as a failed attempt, so
        its retries stay bounded by the schedule instead of looping on lease expiry."""
        try:
            await self._attempt(delivery)
        except StoreUnavailable:
            raise  # not recorded: the lease runs out and the attempt is made again
        except Exception as exc:
            # Only the type: an exception's text can quote the payload, i.e. buyer data.
            reason = f"internal error: {type(exc).__name__}"
            log.error("delivery %d: %s", delivery.id, reason)
            now_ms = self._clock.now_ms()
            error = TransientError(reason, fault=Fault.OURS)
            await self._record(delivery, now_ms, 0.0, "", AttemptReport(), error)

    async def _attempt(self, delivery: ClaimedDelivery) -> None:
        target = resolve_target(self._config, delivery)
        if isinstance(target, str):  # the config no longer names this destination
            await self._finish_unsent(delivery, DeliveryStatus.FAILED, target)
            return
        event = Event.model_validate_json(delivery.payload_json)
        if delivery.kind == DeliveryKind.NOTIFICATION:
            refusal = _refusal_now(target, event, delivery.destination_key)
            if refusal is not None:
                await self._finish_unsent(delivery, *refusal)
                return
        started_at_ms = self._clock.now_ms()
        started = time.perf_counter()
        payload = ""
        error: DeliveryError | None = None
        try:
            outgoing = self._render(delivery, target, event, await self._alert_context(target))
            payload = outgoing.payload
            report = await self._send(outgoing)
        except DeliveryError as failure:
            error, report = failure, failure.report
        latency_ms = report.latency_ms or (time.perf_counter() - started) * 1000
        await self._record(delivery, started_at_ms, latency_ms, payload, report, error)

    async def _alert_context(self, target: Target) -> DestinationAlert | None:
        if not target.alerted_key:
            return None
        health = (await self._store.destination_health()).get(target.alerted_key)
        return DestinationAlert(
            producer_name=target.producer.name or target.producer.id,
            destination_key=target.alerted_key,
            destination_label=target.alerted_label,
            last_error=health.last_error if health else "",
            consecutive_failures=health.consecutive_failures if health else 0,
        )

    def _render(
        self,
        delivery: ClaimedDelivery,
        target: Target,
        event: Event,
        alert: DestinationAlert | None,
    ) -> WebhookMessage | EmailMessageSpec:
        """Render what will be sent; a broken template is a permanent failure of ours."""
        templates = self._templates.for_producer(target.producer.id)
        try:
            if alert is not None:
                rendered = templates.alert_email(alert)
            else:
                notification = Notification(
                    event=event,
                    affiliate_code=target.affiliate_code,
                    affiliate_name=target.affiliate_name(event),
                    producer_name=target.producer.name or target.producer.id,
                    locale=target.locale,
                    # A relay send-test, or Hotmart's own test button (product id 0).
                    is_test=delivery.kind == DeliveryKind.TEST or event.is_test,
                    message_id=delivery.message_id,
                )
                if isinstance(target.destination, WebhookDestination):
                    return WebhookMessage(
                        target.destination.url,
                        target.destination.secret,
                        delivery.message_id,
                        templates.webhook_body(notification),
                    )
                rendered = templates.email(notification)
        except RenderError as exc:
            raise PermanentError(f"template error: {exc}", fault=Fault.OURS) from exc
        return EmailMessageSpec(
            to=target.email_to,
            subject=rendered.subject,
            text=rendered.text,
            html=rendered.html,
            message_id=delivery.message_id,
        )

    async def _send(self, outgoing: WebhookMessage | EmailMessageSpec) -> AttemptReport:
        if isinstance(outgoing, WebhookMessage):
            return await self._channels.webhook.send(outgoing, now_s=self._clock.now_ms() / 1000)
        return await self._channels.email.send(outgoing)

    async def _record(
        self,
        delivery: ClaimedDelivery,
        started_at_ms: int,
        latency_ms: float,
        payload: str,
        report: AttemptReport,
        error: DeliveryError | None,
    ) -> None:
        attempt_no = delivery.attempts + 1
        resolution = self._resolve(delivery, attempt_no, error)
        attempt = AttemptRecord(
            delivery_id=delivery.id,
            attempt_no=attempt_no,
            started_at_ms=started_at_ms,
            latency_ms=round(latency_ms, 3),
            outcome="success"
            if error is None
            else ("permanent" if isinstance(error, PermanentError) else "transient"),
            status_code=report.status_code,
            response_excerpt=report.response_excerpt,
            response_headers=report.response_headers,
            request_payload=payload,
            detail=error.reason if error else report.detail,
        )
        alert = None
        if resolution.health in (HealthEffect.FAILED, HealthEffect.GONE):
            alert = self._alert_for(delivery)
        write = self._store.record_attempt(
            attempt,
            resolution,
            delivery.destination_key,
            self._config.delivery.disable_after_failures,
            alert,
            self._clock.now_ms(),
        )
        change = await _shielded(write)
        log.info(
            "delivery %d attempt %d: %s%s",
            delivery.id,
            attempt_no,
            resolution.status.value,
            f" ({report.status_code})" if report.status_code else "",
        )
        if change.disabled_now:
            log.warning(
                "destination %s disabled: %s", delivery.destination_key, resolution.last_error
            )

    def _resolve(
        self, delivery: ClaimedDelivery, attempt_no: int, error: DeliveryError | None
    ) -> AttemptResolution:
        # Tests and alerts don't judge health; nor does a fault of ours or of the event.
        counts = delivery.kind == DeliveryKind.NOTIFICATION and (
            error is None or error.counts_against_destination
        )
        if error is None:
            health = HealthEffect.SUCCESS if counts else HealthEffect.NONE
            return AttemptResolution(DeliveryStatus.DELIVERED, None, "", health)
        decision = next_retry(
            attempt_no - delivery.replayed_after,
            self._config.delivery.retry_delays_s,
            error,
            self._rng,
        )
        if not decision.give_up:
            due_ms = self._clock.now_ms() + int(decision.delay_s * 1000)
            health = HealthEffect.RETRYING if counts else HealthEffect.NONE
            return AttemptResolution(DeliveryStatus.PENDING, due_ms, error.reason, health)
        gone = isinstance(error, PermanentError) and error.disable_destination
        health = (
            (HealthEffect.GONE if gone else HealthEffect.FAILED) if counts else HealthEffect.NONE
        )
        return AttemptResolution(DeliveryStatus.FAILED, None, decision.reason, health)

    def _alert_for(self, delivery: ClaimedDelivery) -> NewEvent | None:
        producer = self._config.producer(delivery.producer_id)
        if producer is None or not producer.alert_email:
            return None
        now_ms = self._clock.now_ms()
        alert_key = f"{ALERT_KEY_PREFIX}{delivery.destination_key}"
        return NewEvent(
            producer_id=producer.id,
            hotmart_id=f"alert:{delivery.destination_key}:{now_ms}",
            event_name="DESTINATION_DISABLED",
            source="relay",
            transaction_code="",
            product_id="",
            payload_json=Event(id=alert_key, event="DESTINATION_DISABLED").model_dump_json(),
            deliveries=(
                NewDelivery(
                    status=DeliveryStatus.PENDING,
                    reason=f"destination {delivery.destination_key} was disabled",
                    message_id=f"msg_alert_{delivery.id}_{now_ms}",
                    destination_key=alert_key,
                    channel="email",
                    kind=DeliveryKind.ALERT,
                ),
            ),
        )

    async def _finish_unsent(
        self, delivery: ClaimedDelivery, status: DeliveryStatus, reason: str
    ) -> None:
        write = self._store.resolve_without_attempt(
            delivery.id, status, reason, self._clock.now_ms()
        )
        await _shielded(write)
        log.info("delivery %d not sent: %s", delivery.id, status.value)


def _refusal_now(
    target: Target, event: Event, destination_key: str
) -> tuple[DeliveryStatus, str] | None:
    """The privacy gate again, under the config in force now; None means: send."""
    verdict = next(
        (d for d in decide(target.producer, event) if d.destination_key == destination_key), None
    )
    if verdict is None:
        return DeliveryStatus.WITHHELD, "at send time: affiliate no longer named"
    if verdict.outcome == Outcome.DELIVER:
        return None
    status = (
        DeliveryStatus.WITHHELD if verdict.outcome == Outcome.WITHHELD else DeliveryStatus.SKIPPED
    )
    return status, f"at send time: {verdict.reason}"


async def _shielded(write: Coroutine[Any, Any, T]) -> T:
    """Finish the outcome write even if the attempt is cancelled mid-way (shutdown)."""
    task = asyncio.ensure_future(write)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait({task})  # the write lands; the cancellation still propagates
        raise
