"""The aiohttp handler Hotmart posts to (SPEC §5): authenticate, parse, decide, commit.

It answers 200 only once the event and all its decision rows are committed, so an
accepted event is never lost; a store that cannot commit gets a 503 and Hotmart
sends again. Logs carry ids and codes, never buyer data.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl

import orjson
from aiohttp import web

from relay.config import Config, ProducerConfig
from relay.decide import Decision, Outcome, decide
from relay.hotmart import Event, MalformedEvent, parse_json_event, parse_v1_postback
from relay.runtime import RUNTIME, Runtime
from relay.store import StoreUnavailable
from relay.store.records import DeliveryStatus, NewDelivery, NewEvent

log = logging.getLogger("relay.ingest")

JSON_TYPES = frozenset({"application/json", "text/json"})
FORM_TYPE = "application/x-www-form-urlencoded"
_STATUS_OF_OUTCOME = {
    Outcome.DELIVER: DeliveryStatus.PENDING,
    Outcome.WITHHELD: DeliveryStatus.WITHHELD,
    Outcome.SKIPPED: DeliveryStatus.SKIPPED,
    Outcome.IGNORED: DeliveryStatus.IGNORED,
}


def new_message_id() -> str:
    """The id a receiver deduplicates on: Standard Webhooks' msg_ prefix, 128 random bits."""
    return f"msg_{secrets.token_hex(16)}"


async def handle_hotmart_post(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    content_type = request.content_type
    if content_type not in JSON_TYPES and content_type != FORM_TYPE:
        return _error(415, "unsupported content type", f"{content_type or '(none)'}; send JSON")
    limit = runtime.config.server.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        return _error(413, "body too large", f"over {limit} bytes")
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return _error(413, "body too large", f"over {limit} bytes")

    header_token = request.headers.get("X-HOTMART-HOTTOK", "")
    if header_token and _producer_for(runtime.config, header_token) is None:
        return _error(401, "unauthorized", "unknown X-HOTMART-HOTTOK")
    try:
        try:
            fields = _decode(body, content_type)
        except MalformedEvent:
            if not header_token:  # no token anywhere: a stranger learns nothing of the format
                return _error(401, "unauthorized", "missing hottok")
            raise
        body_token = str(fields.get("hottok") or "")
        producer = _producer_for(runtime.config, header_token or body_token)
        if producer is None:
            reason = "unknown hottok" if header_token or body_token else "missing hottok"
            return _error(401, "unauthorized", reason)
        event = _parse(fields, content_type)
    except MalformedEvent as exc:
        return web.json_response(
            {"error": "malformed event", "details": [{"field": exc.field, "reason": exc.reason}]},
            status=400,
        )
    return await _commit(runtime, producer, event)


async def _commit(runtime: Runtime, producer: ProducerConfig, event: Event) -> web.Response:
    decisions = decide(producer, event)
    new_event = to_new_event(producer.id, event, decisions)
    try:
        result = await runtime.store.ingest(new_event, runtime.clock.now_ms())
    except (StoreUnavailable, RuntimeError) as exc:
        log.error("store cannot commit event %s of %s: %s", event.id, producer.id, exc)
        return _error(503, "store unavailable", "not stored; send again")
    if result.deliveries:
        runtime.wake_dispatcher()
    log.info(
        "event %s %s from %s: %s, %d to send",
        event.id,
        event.event,
        producer.id,
        result.status,
        result.deliveries,
    )
    return web.json_response(
        {"status": result.status, "event_id": event.id, "deliveries": result.deliveries}
    )


def to_new_event(producer_id: str, event: Event, decisions: list[Decision]) -> NewEvent:
    """The event as stored, with its decision rows.

    The buyer is stored only if a decision may ever need it: one to send, or one withheld
    (a late grant can still send it). An event every decision ignored or skipped is
    stored without its buyer, since no delivery of it can ever be made.
    """
    needs_buyer = any(d.outcome in (Outcome.DELIVER, Outcome.WITHHELD) for d in decisions)
    stored = event if needs_buyer else event.model_copy(update={"buyer": None})
    return NewEvent(
        producer_id=producer_id,
        hotmart_id=event.id,
        event_name=event.event,
        source=event.source,
        transaction_code=event.purchase.transaction,
        product_id=event.product.id,
        payload_json=stored.model_dump_json(),
        deliveries=new_deliveries(decisions),
    )


def new_deliveries(decisions: Sequence[Decision]) -> tuple[NewDelivery, ...]:
    """One row per decision, each with its own message id: at ingest, and for a late grant."""
    return tuple(
        NewDelivery(
            status=_STATUS_OF_OUTCOME[d.outcome],
            reason=d.reason,
            message_id=new_message_id(),
            affiliate_code=d.affiliate_code,
            destination_key=d.destination_key,
            channel=d.channel,
        )
        for d in decisions
    )


def _decode(body: bytes, content_type: str) -> dict[str, Any]:
    if content_type == FORM_TYPE:
        try:
            return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
        except UnicodeDecodeError:
            raise MalformedEvent("(body)", "form body is not UTF-8") from None
    try:
        decoded = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedEvent("(body)", f"not JSON: {exc}") from None
    if not isinstance(decoded, dict):
        raise MalformedEvent("(body)", "expected a JSON object")
    return decoded


def _parse(fields: dict[str, Any], content_type: str) -> Event:
    if content_type == FORM_TYPE:
        return parse_v1_postback({k: str(v) for k, v in fields.items()})
    return parse_json_event(fields)


def _producer_for(config: Config, token: str) -> ProducerConfig | None:
    """Compare against every producer in constant time, so timing reveals no token."""
    if not token:
        return None
    found = None
    given = token.encode()
    for producer in config.producers:
        if hmac.compare_digest(given, producer.hottok.encode()):
            found = producer
    return found


def _error(status: int, error: str, detail: str) -> web.Response:
    return web.json_response({"error": error, "details": [detail]}, status=status)
