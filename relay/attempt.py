"""One attempt at one delivery: re-check, render, send, classify, record.

The privacy gate is checked again here, against the config in force at send time,
so a producer who revokes `buyer_data` stops even the deliveries already queued.
Each attempt is bounded as a whole (`AttemptBounds.budget_s`), and its lease is
derived from that bound, so a lease never runs out while its attempt runs. The
outcome write is fenced by the claim's lease token and shielded from cancellation:
an attempt that happened is always recorded, even while the relay is shutting down,
unless its lease was taken over, and then it is never recorded twice.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from relay.alerts import AlertTarget, alert_email, alert_for, alert_target
from relay.attempt_outcome import (
    Sent,
    Unsent,
    attempt_record,
    check_size,
    iso_utc_ms,
    outcome_word,
    refusal_now,
    resolve,
)
from relay.clock import Clock
from relay.config import Config, WebhookDestination
from relay.hotmart import Event
from relay.messages import EmailMessageSpec, Outgoing, Sender, WebhookMessage
from relay.metrics import Metrics
from relay.outbox import notice_of
from relay.outcomes import (
    AttemptReport,
    DeliveryError,
    Fault,
    PermanentError,
    TransientError,
    loggable,
)
from relay.records import (
    FOLLOW_UPS,
    ClaimedDelivery,
    DeliveryKind,
    DeliveryStatus,
    HealthEffect,
    Notice,
)
from relay.recovery import message_options, refusal_at_send
from relay.render import Notification, RenderError
from relay.store import Store, StoreRejected, StoreUnavailable
from relay.targets import DestinationIndex, Target, TemplateSet, resolve_target

log = logging.getLogger("relay.attempt")
T = TypeVar("T")
Compose = Callable[[], Awaitable[Outgoing]]  # renders what one attempt sends


@dataclass
class _Progress:
    """How far an attempt got, for the record if its budget runs out mid-way."""

    started_at_ms: int
    started: float  # time.perf_counter()
    payload: str = ""


class AttemptRunner:
    def __init__(
        self,
        config: Config,
        store: Store,
        channels: Sender,
        templates: TemplateSet,
        clock: Clock,
        *,
        budget_s: float,
        rng: random.Random | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._config = config
        self._destinations = DestinationIndex(config)  # the runner's config is fixed
        self._store = store
        self._channels = channels
        self._templates = templates
        self._clock = clock
        self._budget_s = budget_s
        self._rng = rng or random.Random()
        self._metrics = metrics or Metrics(clock)

    async def attempt(self, delivery: ClaimedDelivery) -> DeliveryStatus | None:
        """Make one attempt within the budget and record it; return where the delivery
        went, or None if nothing was recorded (the fence refused it, or the store).

        A bug of ours counts as a failed attempt, so its retries stay bounded by the
        schedule instead of looping on lease expiry.
        """
        status = await self._attempt_and_record(delivery)
        if status is not None:
            self._metrics.delivery_settled(delivery.channel, outcome_word(status))
        return status

    async def _attempt_and_record(self, delivery: ClaimedDelivery) -> DeliveryStatus | None:
        try:
            result = await self._bounded(delivery)
            if isinstance(result, Unsent):
                return await self._finish_unsent(delivery, result)
            self._metrics.attempt_made(delivery.channel, result.latency_ms / 1000)
            return await self._record(delivery, result)
        except StoreRejected as exc:
            # The store marked the row failed with the reason: it will not come back.
            log.error("delivery %d: attempt not recorded, delivery failed: %s", delivery.id, exc)
            return DeliveryStatus.FAILED
        except StoreUnavailable:
            raise  # not recorded: the lease runs out and the attempt is made again

    async def _bounded(self, delivery: ClaimedDelivery) -> Sent | Unsent:
        progress = _Progress(self._clock.now_ms(), time.perf_counter())
        budget = asyncio.timeout(self._budget_s)
        try:
            async with budget:
                return await self._attempt(delivery, progress)
        except TimeoutError:
            if not budget.expired():
                raise
            reason = f"attempt ran over its {self._budget_s:g}s budget"
            error: DeliveryError = TransientError(reason)  # time spent waiting on the receiver
        except StoreUnavailable:
            raise
        except Exception as exc:
            # The traceback, so the bug can be found; never the exception's text, which
            # may quote the payload, i.e. buyer data.
            name = type(exc).__name__
            log.error("delivery %d: internal error (%s)", delivery.id, name, exc_info=loggable(exc))
            error = TransientError(f"internal error: {name}", fault=Fault.OURS)
        latency_ms = (time.perf_counter() - progress.started) * 1000
        return Sent(progress.started_at_ms, latency_ms, progress.payload, AttemptReport(), error)

    async def _attempt(self, delivery: ClaimedDelivery, progress: _Progress) -> Sent | Unsent:
        compose = await self._composer(delivery)
        if isinstance(compose, Unsent):
            return compose
        progress.started_at_ms = self._clock.now_ms()
        progress.started = time.perf_counter()
        error: DeliveryError | None = None
        try:
            try:
                outgoing = await compose()
            except RenderError as exc:  # a broken template is a permanent failure of ours
                raise PermanentError(f"template error: {exc}", fault=Fault.OURS) from exc
            progress.payload = outgoing.payload
            check_size(outgoing)
            report = await self._channels.send(outgoing, now_s=self._clock.now_ms() / 1000)
        except DeliveryError as failure:
            error, report = failure, failure.report
        latency_ms = report.latency_ms or (time.perf_counter() - progress.started) * 1000
        return Sent(progress.started_at_ms, latency_ms, progress.payload, report, error)

    async def _composer(self, delivery: ClaimedDelivery) -> Compose | Unsent:
        """How to render what this delivery sends, or why it is not sent at all."""
        if delivery.kind == DeliveryKind.ALERT:
            alert = alert_target(self._config, delivery)
            if isinstance(alert, str):  # the producer has no alert_email any more
                return Unsent(DeliveryStatus.FAILED, alert)
            return lambda: self._alert_email(delivery, alert)
        target = resolve_target(self._destinations, delivery)
        if isinstance(target, str):  # the config no longer names this destination
            return Unsent(DeliveryStatus.FAILED, target)
        event = Event.model_validate_json(delivery.payload_json)
        if delivery.kind == DeliveryKind.NOTIFICATION:
            if delivery.notification in FOLLOW_UPS:
                refusal = await self._follow_up_refusal(delivery, target, event)
            else:
                refusal = refusal_now(target, event, delivery.destination_key)
            if refusal is not None:
                return refusal
        return lambda: self._notification(delivery, target, event)

    async def _follow_up_refusal(
        self, delivery: ClaimedDelivery, target: Target, event: Event
    ) -> Unsent | None:
        """Sale recovery's notices pass the gate again, and a reminder is sent only while
        its purchase is still open: the store is asked whether it settled meanwhile."""
        assert delivery.notification is not None
        settled_by = None
        if delivery.notification == Notice.REMINDER and event.purchase.transaction:
            settled_by = await self._store.settling_event(
                delivery.producer_id, event.purchase.transaction
            )
        now_ms = self._clock.now_ms()
        return refusal_at_send(
            self._config, target, event, delivery.notification, now_ms, settled_by
        )

    async def _alert_email(self, delivery: ClaimedDelivery, alert: AlertTarget) -> Outgoing:
        # The destination's health as it is now: the failures that disabled it.
        health = (await self._store.destination_health()).get(alert.alert.destination_key)
        templates = self._templates.for_producer(alert.producer.id)
        return alert_email(alert, templates, health, delivery.message_id)

    async def _notification(
        self, delivery: ClaimedDelivery, target: Target, event: Event
    ) -> Outgoing:
        templates = self._templates.for_producer(target.producer.id)
        notice = delivery.notification or notice_of(event.event)
        whatsapp, expires_at_ms = message_options(self._config, target.affiliate, event, notice)
        notification = Notification(
            event=event,
            affiliate_code=target.affiliate_code,
            affiliate_name=target.affiliate_name(event),
            producer_name=target.producer.name or target.producer.id,
            locale=target.locale,
            # A relay send-test, or Hotmart's own test button (product id 0).
            is_test=delivery.kind == DeliveryKind.TEST or event.is_test,
            message_id=delivery.message_id,
            notification=notice,
            whatsapp=whatsapp,
            expires_at_ms=expires_at_ms,
        )
        if isinstance(target.destination, WebhookDestination):
            return WebhookMessage(
                target.destination.url,
                target.destination.secret,
                delivery.message_id,
                templates.webhook_body(notification),
            )
        rendered = templates.email(notification)
        return EmailMessageSpec(
            to=target.email_to,
            subject=rendered.subject,
            text=rendered.text,
            html=rendered.html,
            message_id=delivery.message_id,
        )

    async def _record(self, delivery: ClaimedDelivery, sent: Sent) -> DeliveryStatus | None:
        attempt_no = delivery.attempts + 1
        now_ms = self._clock.now_ms()
        retry_delays_s = self._config.delivery.retry_delays_s
        resolution = resolve(delivery, attempt_no, sent.error, retry_delays_s, now_ms, self._rng)
        alert = None
        if resolution.health in (HealthEffect.FAILED, HealthEffect.GONE):
            alert = alert_for(self._config, delivery, now_ms)
        write = self._store.record_attempt(
            attempt_record(delivery.id, attempt_no, sent),
            resolution,
            delivery.destination_key,
            self._config.delivery.disable_after_failures,
            alert,
            now_ms,
            lease_token=delivery.lease_token,
        )
        change = await _shielded(write)
        if not change.recorded:
            log.warning(
                "event %s delivery %d attempt %d: outcome not recorded, its lease was taken over",
                delivery.hotmart_id,
                delivery.id,
                attempt_no,
            )
            return None
        status_code = sent.report.status_code
        retry_at = resolution.next_attempt_at_ms
        log.info(
            "event %s delivery %d to %s attempt %d: %s, status %s%s",
            delivery.hotmart_id,
            delivery.id,
            delivery.destination_key,
            attempt_no,
            outcome_word(resolution.status),
            "-" if status_code is None else status_code,
            "" if retry_at is None else f", next retry at {iso_utc_ms(retry_at)}",
        )
        if change.disabled_now:
            log.warning(
                "destination %s disabled: %s", delivery.destination_key, resolution.last_error
            )
        return resolution.status

    async def _finish_unsent(
        self, delivery: ClaimedDelivery, unsent: Unsent
    ) -> DeliveryStatus | None:
        write = self._store.resolve_without_attempt(
            delivery.id,
            unsent.status,
            unsent.reason,
            self._clock.now_ms(),
            lease_token=delivery.lease_token,
        )
        if not await _shielded(write):
            log.warning("delivery %d: not sent, and its lease was taken over", delivery.id)
            return None
        log.info(
            "event %s delivery %d not sent: %s",
            delivery.hotmart_id,
            delivery.id,
            unsent.status.value,
        )
        return unsent.status


async def _shielded(write: Coroutine[Any, Any, T]) -> T:
    """Finish the outcome write even if the attempt is cancelled mid-way (shutdown)."""
    task = asyncio.ensure_future(write)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait({task})  # the write lands; the cancellation still propagates
        raise
