"""The JSON API under /api/: the admin page's data and actions, for programs.

Every route wants `Authorization: Bearer <admin.token>` (401 without it; 429 for an
address that sent too many wrong ones), and every answer, errors included, is JSON
that `relay.admin.openapi` documents. Buyer data is masked unless a route says
"reveal", which is a POST and is recorded.
"""

from __future__ import annotations

import json
import math
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ValidationError

from relay.admin import actions
from relay.admin.filters import Problems, history_filter, moment_ms, read_query, validation_details
from relay.admin.reads import delivery_detail, event_detail
from relay.admin.schemas import (
    MAX_ID,
    AuditPage,
    DeliveryPage,
    DestinationChanged,
    DestinationList,
    Reason,
    Replaced,
    ReplayIn,
    ReplayOut,
    SendTestIn,
    SendTestOut,
)
from relay.admin.state import (
    API_HEADERS,
    Handler,
    actor,
    admin_of,
    path_id,
    peer,
    relay_of,
    with_headers,
)
from relay.admin.views import (
    audit_out,
    delivery_out,
    destination_out,
)
from relay.operations import destinations, show
from relay.store import StoreUnavailable

AUDIT_PAGE_ROWS = 50


def problem(
    status: int, error: str, *details: Any, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response(
        {"error": error, "details": list(details)}, status=status, headers=headers
    )


def answer(model: BaseModel, status: int = 200) -> web.Response:
    return web.json_response(model.model_dump(mode="json"), status=status)


@web.middleware
async def api_guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The Bearer token first, at a bounded rate of wrong ones; then JSON, whatever happens."""
    admin = admin_of(request)
    address = peer(request)
    wait_s = admin.limiter.retry_after_s(address)
    if wait_s is not None:
        wait = str(math.ceil(wait_s))
        refused = problem(
            429, "too many wrong tokens", f"try again in {wait} s", headers={"Retry-After": wait}
        )
        return with_headers(refused, API_HEADERS)
    authorization = request.headers.get("Authorization")
    if not admin.keys.bearer_matches(authorization):
        if authorization is not None:  # a guess: it counts; a forgotten header does not
            admin.limiter.failed(address)
        unauthorized = problem(
            401,
            "unauthorized",
            "send Authorization: Bearer <admin.token>",
            headers={"WWW-Authenticate": 'Bearer realm="relay"'},
        )
        return with_headers(unauthorized, API_HEADERS)
    response: web.StreamResponse
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        allow = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
        response = problem(
            exc.status, exc.reason.lower(), f"{request.method} {request.path}", headers=allow
        )
    except StoreUnavailable:
        response = problem(503, "store unavailable", "the store cannot be read or written now")
    return with_headers(response, API_HEADERS)


async def _body(request: web.Request, model: type[BaseModel]) -> Any:
    """The JSON body as `model`, or a 400 that names what is wrong."""
    try:
        data = json.loads(await request.read() or b"null")
    except ValueError:
        raise _Bad([{"field": "(body)", "reason": "not JSON"}]) from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _Bad(validation_details(exc)) from None


class _Bad(Exception):
    def __init__(self, details: list[dict[str, str]]) -> None:
        super().__init__("bad request")
        self.details = details


async def list_deliveries(request: web.Request) -> web.Response:
    relay = relay_of(request)
    try:
        query = read_query(request.query)
        rows = await relay.store.history(history_filter(query, relay.clock.now_ms()))
    except Problems as problems:
        return problem(400, "invalid query", *problems.details)
    shown = rows[: query.limit]
    more = len(rows) > query.limit
    return answer(
        DeliveryPage(
            deliveries=[delivery_out(r) for r in shown],
            next=str(shown[-1].id) if more and shown else None,
        )
    )


async def get_delivery(request: web.Request) -> web.Response:
    return await _delivery(request, revealed=False)


async def reveal_delivery(request: web.Request) -> web.Response:
    return await _delivery(request, revealed=True)


async def _delivery(request: web.Request, *, revealed: bool) -> web.Response:
    delivery_id = path_id(request)
    view = await delivery_detail(
        relay_of(request), delivery_id, revealed_to=actor(request, "api") if revealed else None
    )
    if view is None:
        return problem(404, "not found", f"no delivery {delivery_id}")
    return answer(view)


async def get_event(request: web.Request) -> web.Response:
    event_row_id = path_id(request)
    view = await event_detail(relay_of(request), event_row_id)
    if view is None:
        return problem(404, "not found", f"no event {event_row_id}")
    return answer(view)


async def replay_delivery(request: web.Request) -> web.Response:
    relay = relay_of(request)
    delivery_id = path_id(request)
    if await show(relay.store, delivery_id) is None:
        return problem(404, "not found", f"no delivery {delivery_id}")
    done = await actions.replay(relay, actor(request, "api"), [delivery_id])
    out = _replay_out(done)
    if not out.queued and not out.replaced:
        return problem(409, "not replayed", done.message)
    return answer(out, 202)


async def replay_many(request: web.Request) -> web.Response:
    relay = relay_of(request)
    try:
        body: ReplayIn = await _body(request, ReplayIn)
    except _Bad as bad:
        return problem(400, "invalid body", *bad.details)
    if (body.ids is None) == (body.failed_since is None):
        return problem(
            400, "invalid body", {"field": "(body)", "reason": "give ids or failed_since"}
        )
    if body.ids is not None:
        done = await actions.replay(relay, actor(request, "api"), sorted(set(body.ids)))
        return answer(_replay_out(done), 202)
    try:
        since_ms = moment_ms(body.failed_since, relay.clock.now_ms(), end_of_day=False)
    except ValueError as exc:
        return problem(400, "invalid body", {"field": "failed_since", "reason": str(exc)})
    done = await actions.replay_failed(
        relay, actor(request, "api"), since_ms, body.failed_since or ""
    )
    return answer(_replay_out(done), 202)


def _replay_out(done: actions.Replayed) -> ReplayOut:
    queued = done.queued
    return ReplayOut(
        queued=queued.to_send,
        in_flight=[Reason(id=i, reason=actions.IN_FLIGHT) for i in queued.in_flight],
        not_replayable=[Reason(id=i, reason=actions.NOT_REPLAYABLE) for i in queued.not_replayable],
        still_withheld=[Reason(id=i, reason=r) for i, r in queued.regranted.withheld],
        replaced=[Replaced(id=i, by=new) for i, new in queued.regranted.replaced],
        audit_id=done.audit_id,
        message=done.message,
    )


async def send_test(request: web.Request) -> web.Response:
    try:
        body: SendTestIn = await _body(request, SendTestIn)
    except _Bad as bad:
        return problem(400, "invalid body", *bad.details)
    done = await actions.send_test(
        relay_of(request),
        actor(request, "api"),
        affiliate=body.affiliate,
        destination=body.destination,
        producer=body.producer,
    )
    if done.refused:
        return problem(409, "refused", done.message)
    return answer(
        SendTestOut(queued=list(done.queued), audit_id=done.audit_id, message=done.message), 202
    )


async def list_destinations(request: web.Request) -> web.Response:
    relay = relay_of(request)
    producer = request.query.get("producer") or None
    affiliate = request.query.get("affiliate") or None
    found = [destination_out(s) for s in await destinations(relay.config, relay.store)]
    return answer(
        DestinationList(
            destinations=[
                d
                for d in found
                if producer in (None, d.producer) and affiliate in (None, d.affiliate)
            ]
        )
    )


async def enable_destination(request: web.Request) -> web.Response:
    return await _set_enabled(request, True)


async def disable_destination(request: web.Request) -> web.Response:
    return await _set_enabled(request, False)


async def _set_enabled(request: web.Request, enabled: bool) -> web.Response:
    relay = relay_of(request)
    key = request.match_info["key"]
    done = await actions.set_enabled(relay, actor(request, "api"), key, enabled)
    if done.refused:
        return problem(404, "not found", done.message)
    (state,) = [s for s in await destinations(relay.config, relay.store) if s.key == key]
    return answer(
        DestinationChanged(
            destination=destination_out(state), audit_id=done.audit_id, message=done.message
        )
    )


async def list_audit(request: web.Request) -> web.Response:
    relay = relay_of(request)
    cursor = request.query.get("cursor", "")
    if cursor and not (cursor.isdigit() and 1 <= int(cursor) <= MAX_ID):
        return problem(
            400, "invalid query", {"field": "cursor", "reason": "not a cursor this relay gave"}
        )
    entries = await relay.store.audit_log(
        producer_id=request.query.get("producer") or None,
        before_id=int(cursor) if cursor else None,
        limit=AUDIT_PAGE_ROWS + 1,
    )
    shown = entries[:AUDIT_PAGE_ROWS]
    more = len(entries) > AUDIT_PAGE_ROWS
    return answer(
        AuditPage(
            entries=[audit_out(e) for e in shown],
            next=str(shown[-1].id) if more and shown else None,
        )
    )
