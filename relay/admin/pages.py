"""The admin pages that show: deliveries, one delivery, one event, destinations, audit,
and sale recovery's figures.

Every page reads through `relay.operations` or the store's protocol, filters by
producer and affiliate where it lists (one producer's view of an instance it shares
with others), and masks the buyer until the operator reveals it with a POST, which is
recorded.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from relay.admin.filters import (
    TAB_STATUSES,
    DeliveryQuery,
    Problems,
    history_filter,
    query_string,
    read_query,
)
from relay.admin.html import error_page, render
from relay.admin.reads import delivery_detail, event_detail
from relay.admin.schemas import MAX_ID
from relay.admin.state import actor, path_id, relay_of
from relay.admin.views import audit_out, delivery_out, destination_out
from relay.config import Config
from relay.durations import parse_since_ms
from relay.operations import destinations, history
from relay.records import DeliveryRow, DeliveryStatus, RecoveryFigures
from relay.recovery_report import recovery_report

AUDIT_PAGE_ROWS = 50
# The recovery figures read every slip of the window on the store's one connection, so
# the page offers windows a producer looks at, a week by default, never "all time".
RECOVERY_WINDOWS = ("1d", "7d", "30d")
_PAGE_ONLY = frozenset({"audit"})


async def notice(request: web.Request) -> dict[str, Any] | None:
    """The audit entry of the action that led here (`?audit=N`), to say what it did."""
    text = request.query.get("audit", "")
    if not text.isdigit() or not 1 <= int(text) <= MAX_ID:
        return None
    entry = await relay_of(request).store.audit_entry(int(text))
    return audit_out(entry).model_dump() if entry else None


async def deliveries_page(request: web.Request) -> web.Response:
    relay = relay_of(request)
    query = DeliveryQuery()
    try:
        query = read_query(request.query, ignore=_PAGE_ONLY)
        page = await history(relay.store, history_filter(query, relay.clock.now_ms()))
    except Problems as problems:
        return await _list(request, query, [], problems=problems.details, status=400)
    rows = page.rows[: query.limit]
    more = len(page.rows) > query.limit
    empty = "No deliveries yet." if page.store_empty else "No deliveries match these filters."
    return await _list(request, query, rows, more=more, empty=empty)


async def _list(
    request: web.Request,
    query: DeliveryQuery,
    rows: list[DeliveryRow],
    *,
    problems: list[dict[str, str]] | None = None,
    more: bool = False,
    empty: str = "",
    status: int = 200,
) -> web.Response:
    config = relay_of(request).config
    return render(
        request,
        "deliveries.html",
        status=status,
        query=query,
        rows=[delivery_out(r) for r in rows],
        problems=problems or [],
        here=query_string(query),
        next_query=query_string(query, cursor=str(rows[-1].id)) if more and rows else None,
        tabs=[(tab, query_string(query, tab=tab, cursor=None)) for tab in TAB_STATUSES],
        statuses=sorted({*(s.value for s in DeliveryStatus), *await _stored_statuses(request)}),
        producers=[p.id for p in config.producers],
        affiliates=sorted({a.code for p in config.producers for a in p.affiliates}),
        empty=empty,
        notice=await notice(request),
    )


async def _stored_statuses(request: web.Request) -> list[str]:
    return await relay_of(request).store.known_statuses()


async def delivery_page(request: web.Request) -> web.Response:
    return await _delivery(request, revealed=False)


async def reveal_delivery(request: web.Request) -> web.Response:
    return await _delivery(request, revealed=True)


async def _delivery(request: web.Request, *, revealed: bool) -> web.Response:
    delivery_id = path_id(request)
    view = await delivery_detail(
        relay_of(request), delivery_id, revealed_to=actor(request, "page") if revealed else None
    )
    if view is None:
        return error_page(request, 404, "Not found", f"No delivery {delivery_id}.")
    return render(request, "delivery.html", view=view, notice=await notice(request))


async def event_page(request: web.Request) -> web.Response:
    return await _event(request, revealed=False)


async def reveal_event(request: web.Request) -> web.Response:
    return await _event(request, revealed=True)


async def _event(request: web.Request, *, revealed: bool) -> web.Response:
    event_row_id = path_id(request)
    view = await event_detail(
        relay_of(request), event_row_id, revealed_to=actor(request, "page") if revealed else None
    )
    if view is None:
        return error_page(request, 404, "Not found", f"No event {event_row_id}.")
    return render(request, "event.html", event=view.event, rows=view.deliveries)


async def destinations_page(request: web.Request) -> web.Response:
    relay = relay_of(request)
    producer = request.query.get("producer") or None
    affiliate = request.query.get("affiliate") or None
    states = [destination_out(state) for state in await destinations(relay.config, relay.store)]
    shown = [
        d for d in states if producer in (None, d.producer) and affiliate in (None, d.affiliate)
    ]
    return render(
        request,
        "destinations.html",
        destinations=shown,
        producer=producer or "",
        affiliate=affiliate or "",
        notice=await notice(request),
    )


async def audit_page(request: web.Request) -> web.Response:
    relay = relay_of(request)
    cursor = request.query.get("cursor", "")
    before_id = int(cursor) if cursor.isdigit() and 1 <= int(cursor) <= MAX_ID else None
    producer = request.query.get("producer") or None
    entries = await relay.store.audit_log(
        producer_id=producer, before_id=before_id, limit=AUDIT_PAGE_ROWS + 1
    )
    shown = entries[:AUDIT_PAGE_ROWS]
    more = len(entries) > AUDIT_PAGE_ROWS
    return render(
        request,
        "audit.html",
        entries=[audit_out(e) for e in shown],
        next_cursor=str(shown[-1].id) if more and shown else None,
    )


async def recovery_page(request: web.Request) -> web.Response:
    """Sale recovery's figures per producer and affiliate (issue 11), for one window."""
    relay = relay_of(request)
    now_ms = relay.clock.now_ms()
    since = request.query.get("since", "7d")
    try:
        since_ms = parse_since_ms(since, now_ms)
    except ValueError as exc:
        problems = [{"field": "since", "reason": str(exc)}]
        return _recovery(request, relay.config, since, now_ms, [], problems, 400)
    report = await recovery_report(relay.store, now_ms, since_ms=since_ms)
    rows = report.rows
    return _recovery(request, relay.config, since, since_ms, rows, [], 200)


def _recovery(
    request: web.Request,
    config: Config,
    since: str,
    since_ms: int,
    rows: list[RecoveryFigures],
    problems: list[dict[str, str]],
    status: int,
) -> web.Response:
    return render(
        request,
        "recovery.html",
        status=status,
        enabled=config.recovery is not None and config.recovery.enabled,
        since=since,
        since_ms=since_ms,
        windows=RECOVERY_WINDOWS,
        rows=rows,
        problems=problems,
    )
