"""The aiohttp handler Hotmart posts to (SPEC §5): authenticate, parse, decide, commit.

It answers 200 only once the event and all its decision rows are committed, so an
accepted event is never lost; a store that cannot commit gets a 503 and Hotmart
sends again. Logs carry ids and codes, never buyer data.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from typing import Any
from urllib.parse import parse_qsl

import orjson
from aiohttp import web

from relay.app_keys import RELAY
from relay.config import Config, ProducerConfig
from relay.decide import decide
from relay.engine import Relay
from relay.hotmart import Event, MalformedEvent, parse_json_event, parse_v1_postback
from relay.json_reply import json_reply
from relay.outbox import decided_rows, new_event
from relay.records import FOLLOW_UPS, DeliveryStatus, NewDelivery
from relay.recovery import needs_facts, plan_rows, slip_outcomes
from relay.store import StoreUnavailable

log = logging.getLogger("relay.ingest")

JSON_TYPES = frozenset({"application/json", "text/json"})
FORM_TYPE = "application/x-www-form-urlencoded"
HOTTOK_HEADER = "X-HOTMART-HOTTOK"
_NOT_UTF8 = "not UTF-8; send the form encoded as UTF-8"
_DECISIONS_LOGGED = 10  # one line per event stays readable even if Hotmart lists many affiliates


async def handle_hotmart_post(request: web.Request) -> web.Response:
    relay = request.app[RELAY]
    started = time.perf_counter()
    try:
        return await _ingest(request, relay)
    finally:
        relay.metrics.ingest_took(time.perf_counter() - started)


async def _ingest(request: web.Request, relay: Relay) -> web.Response:
    try:
        producer, event = await _authenticate_and_parse(request, relay.config)
    except _Rejected as rejection:
        # Never the token, never the body: the reason and who asked are enough to act on.
        log.warning(
            "rejected %d from %s: %s", rejection.status, request.remote or "?", rejection.summary
        )
        relay.metrics.ingest_rejected(rejection.status)
        return rejection.response()
    return await _commit(relay, producer, event)


class _Rejected(Exception):
    """A request ingest refuses (a 4xx, and one log line) or cannot store (503): JSON."""

    def __init__(self, status: int, error: str, detail: str | dict[str, str]) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.detail = detail

    @classmethod
    def malformed(cls, exc: MalformedEvent) -> _Rejected:
        return cls(400, "malformed event", {"field": exc.field, "reason": exc.reason})

    @property
    def summary(self) -> str:
        if isinstance(self.detail, dict):
            return f"{self.error}: {self.detail['field']}: {self.detail['reason']}"
        return f"{self.error}: {self.detail}"

    def response(self) -> web.Response:
        reply = json_reply({"error": self.error, "details": [self.detail]}, status=self.status)
        if self.status == 408:
            reply.force_close()  # the rest of the body may still be on its way: drop it
        return reply


async def _authenticate_and_parse(
    request: web.Request, config: Config
) -> tuple[ProducerConfig, Event]:
    """The producer and the event, or `_Rejected`; a stranger learns nothing of the format."""
    content_type = request.content_type
    if content_type not in JSON_TYPES and content_type != FORM_TYPE:
        shown = (content_type or "(none)")[:100]
        raise _Rejected(415, "unsupported content type", f"{shown}; send JSON")
    header_token = request.headers.get(HOTTOK_HEADER, "")
    if header_token and _producer_for(config, header_token) is None:
        raise _Rejected(401, "unauthorized", f"unknown {HOTTOK_HEADER}")
    body = await _read_body(request, config.server.max_body_bytes, config.server.body_timeout_s)
    fields, unreadable = _decode(body, content_type)
    token = header_token or _text(fields.get("hottok"))
    producer = _producer_for(config, token)
    if producer is None:
        raise _Rejected(401, "unauthorized", "unknown hottok" if token else "missing hottok")
    if unreadable is not None:
        raise _Rejected.malformed(unreadable)
    try:
        return producer, _parse(fields, content_type)
    except MalformedEvent as exc:
        raise _Rejected.malformed(exc) from None


async def _read_body(request: web.Request, limit: int, timeout_s: float) -> bytes | MalformedEvent:
    """The whole body within `limit` bytes and `timeout_s`; an unreadable one as data."""
    too_large = _Rejected(413, "body too large", f"over {limit} bytes")
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    try:
        async with asyncio.timeout(timeout_s):
            return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise too_large from None
    except TimeoutError:
        # A slow-drip sender must not hold a connection: aiohttp has no body timeout.
        raise _Rejected(
            408, "request timeout", f"body not received within {timeout_s:g} s"
        ) from None
    except web.RequestPayloadError as exc:  # e.g. a Content-Encoding that does not decode
        return MalformedEvent("(body)", f"cannot be read: {exc.__class__.__name__}")


async def _commit(relay: Relay, producer: ProducerConfig, event: Event) -> web.Response:
    decided = decided_rows(decide(producer, event))
    try:
        # Sale recovery: a paid or expired event follows up the slips its transaction
        # sent, so what the store knows of them is read first.
        facts = None
        if needs_facts(relay.config, event):
            facts = await relay.store.follow_up_facts(producer.id, event.purchase.transaction)
        now_ms = relay.clock.now_ms()
        rows = plan_rows(relay.config, producer, event, decided, facts, now_ms)
        result = await relay.store.ingest(new_event(producer.id, event, rows), now_ms)
    except (StoreUnavailable, RuntimeError) as exc:
        log.error("store cannot commit event %s of %s: %s", event.id, producer.id, exc)
        relay.metrics.ingest_rejected(503)
        return _Rejected(503, "store unavailable", "not stored; send again").response()
    if result.deliveries:
        relay.wake_dispatcher()
    relay.metrics.event_ingested(producer.id, event.event, result.status, rows)
    if result.status != "duplicate":
        for outcome in slip_outcomes(relay.config, event, rows, facts):
            relay.metrics.slip_outcome(outcome)
    # DEBUG, not INFO: a line per request cost ingest about 4.5% of its time (issue 10),
    # and relay_events_total and relay_deliveries_total in /metrics count the same facts.
    if log.isEnabledFor(logging.DEBUG):
        outcomes = _outcomes(result.status, rows)
        log.debug("event %s %s from %s: %s", event.id, event.event, producer.id, outcomes)
    return json_reply(
        {"status": result.status, "event_id": event.id, "deliveries": result.deliveries}
    )


def _decode(
    body: bytes | MalformedEvent, content_type: str
) -> tuple[dict[str, Any], MalformedEvent | None]:
    """The fields that could be read, and why the rest could not (if so).

    A form keeps its readable fields even when another is not UTF-8, so that the
    `hottok` it carries can still tell a producer (400) from a stranger (401).
    """
    if isinstance(body, MalformedEvent):
        return {}, body
    if content_type == FORM_TYPE:
        return _decode_form(body)
    try:
        decoded = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return {}, MalformedEvent("(body)", f"not JSON: {exc}")
    if not isinstance(decoded, dict):
        return {}, MalformedEvent("(body)", "expected a JSON object")
    return decoded, None


def _decode_form(body: bytes) -> tuple[dict[str, Any], MalformedEvent | None]:
    # Latin-1 maps each byte to one character and back, raw or percent-encoded, so every
    # field can be checked for UTF-8 on its own instead of being mangled into U+FFFD.
    pairs = parse_qsl(body.decode("latin-1"), keep_blank_values=True, encoding="latin-1")
    fields: dict[str, Any] = {}
    problem = None
    for raw_key, raw_value in pairs:
        try:
            key = raw_key.encode("latin-1").decode("utf-8")
        except UnicodeDecodeError:
            problem = problem or MalformedEvent("(body)", _NOT_UTF8)
            continue
        try:
            fields[key] = raw_value.encode("latin-1").decode("utf-8")
        except UnicodeDecodeError:
            problem = problem or MalformedEvent(key, _NOT_UTF8)
    return fields, problem


def _text(value: object) -> str:
    return "" if value is None else str(value)


def _parse(fields: dict[str, Any], content_type: str) -> Event:
    if content_type == FORM_TYPE:
        return parse_v1_postback({k: str(v) for k, v in fields.items()})
    return parse_json_event(fields)


def _producer_for(config: Config, token: str) -> ProducerConfig | None:
    """Compare against every producer in constant time, so timing reveals no token."""
    if not token:
        return None
    found = None
    # A header may carry any bytes; aiohttp keeps the ones that are not UTF-8 as surrogates.
    given = token.encode("utf-8", "surrogateescape")
    for producer in config.producers:
        if hmac.compare_digest(given, producer.hottok.encode()):
            found = producer
    return found


def _outcomes(status: str, rows: tuple[NewDelivery, ...]) -> str:
    """`accepted; K123/email pending, K123/email reminder pending, P000/email withheld`:
    ids, codes and statuses only. Sale recovery's rows name what they are."""
    if status == "duplicate":
        return status
    shown = [_outcome(row) for row in rows[:_DECISIONS_LOGGED]]
    if len(rows) > _DECISIONS_LOGGED:
        shown.append(f"+{len(rows) - _DECISIONS_LOGGED} more")
    return f"{status}; {', '.join(shown)}"


def _outcome(row: NewDelivery) -> str:
    if row.status is DeliveryStatus.IGNORED:
        return "no affiliate"
    where = f"{row.affiliate_code}{'/' + row.channel if row.channel else ''}"
    notice = f" {row.notification.value}" if row.notification in FOLLOW_UPS else ""
    return f"{where}{notice} {row.status.value}"
