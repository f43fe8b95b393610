"""The deliveries list's filters, read from a query string once, at the edge.

The page and the API take the same parameters: a bad one is a 400 that names it, an
empty one (a form's blank field) is no filter. Dates are UTC unless they say otherwise;
a bare `until` date means the end of that day.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Literal
from urllib.parse import urlencode

from pydantic import Field, StringConstraints, ValidationError

from relay.admin.schemas import Name, Tab, When, _In
from relay.durations import parse_since_ms
from relay.records import DeliveryStatus, HistoryFilter

DEFAULT_PAGE_ROWS = 50
MAX_PAGE_ROWS = 200  # one page stays quick to read and render, however large the history
# What each tab lists, as Hotmart's History separates them.
TAB_STATUSES: dict[str, tuple[str, ...]] = {
    "all": (),
    "sent": (DeliveryStatus.DELIVERED.value, DeliveryStatus.FAILED.value),
    "pending": (DeliveryStatus.PENDING.value,),
}
# At most 18 digits: every value is a row id SQLite can hold.
Cursor = Annotated[str, StringConstraints(pattern=r"^[1-9][0-9]{0,17}$")]
# Any moment a signed 64-bit count of milliseconds holds; beyond is refused, not stored.
_MAX_MOMENT_MS = 2**62


class DeliveryQuery(_In):
    tab: Tab = Field("all", description="sent: delivered or failed; pending: still to send")
    status: Annotated[str, StringConstraints(pattern=r"^[a-z_]{1,32}$")] | None = Field(
        None, description="pending, delivered, failed, withheld, skipped, ignored, superseded"
    )
    producer: Name | None = None
    affiliate: Name | None = Field(None, description="an affiliate code")
    event: Annotated[str, StringConstraints(pattern=r"^[A-Z_]{1,64}$")] | None = Field(
        None, description="a Hotmart event name, e.g. PURCHASE_BILLET_PRINTED"
    )
    channel: Literal["email", "webhook"] | None = None
    transaction: Name | None = Field(None, description="Hotmart's transaction, e.g. HP17...")
    hotmart_id: Name | None = Field(None, description="Hotmart's event id")
    since: When | None = Field(
        None, description="created at or after: an ISO date or date-time, or '2h' ago"
    )
    until: When | None = Field(
        None, description="created before: an ISO date-time; a bare date includes that day"
    )
    cursor: Cursor | None = Field(None, description="the `next` of the previous page")
    limit: int = Field(DEFAULT_PAGE_ROWS, ge=1, le=MAX_PAGE_ROWS)


class Problems(Exception):
    """Which parameters are wrong and why: a 400 on the API, a notice on the page."""

    def __init__(self, details: list[dict[str, str]]) -> None:
        super().__init__("; ".join(f"{d['field']}: {d['reason']}" for d in details))
        self.details = details


def read_query(query: Mapping[str, str], *, ignore: frozenset[str] = frozenset()) -> DeliveryQuery:
    """The filters in `query` (blank values dropped, `ignore`d keys skipped); Problems if
    any is wrong."""
    given = {k: v for k, v in query.items() if v.strip() and k not in ignore}
    try:
        return DeliveryQuery.model_validate(given)
    except ValidationError as exc:
        raise Problems(validation_details(exc)) from None


def validation_details(exc: ValidationError) -> list[dict[str, str]]:
    return [
        {"field": ".".join(str(part) for part in error["loc"]) or "(body)", "reason": error["msg"]}
        for error in exc.errors()
    ]


def history_filter(query: DeliveryQuery, now_ms: int) -> HistoryFilter:
    """The store's filter for `query`, asking one row more than a page to learn whether
    another page follows."""
    problems = []
    since_ms = until_ms = None
    try:
        since_ms = moment_ms(query.since, now_ms, end_of_day=False)
    except ValueError as exc:
        problems.append({"field": "since", "reason": str(exc)})
    try:
        until_ms = moment_ms(query.until, now_ms, end_of_day=True)
    except ValueError as exc:
        problems.append({"field": "until", "reason": str(exc)})
    if problems:
        raise Problems(problems)
    return HistoryFilter(
        status=query.status,
        statuses=TAB_STATUSES[query.tab],
        producer_id=query.producer,
        affiliate_code=query.affiliate,
        event_name=query.event,
        channel=query.channel,
        transaction_code=query.transaction,
        hotmart_id=query.hotmart_id,
        since_ms=since_ms,
        until_ms=until_ms,
        before_id=int(query.cursor) if query.cursor else None,
        limit=query.limit + 1,
    )


def moment_ms(text: str | None, now_ms: int, *, end_of_day: bool) -> int | None:
    """`text` (an ISO date or date-time, or '2h' ago) as epoch ms; with `end_of_day`, a
    bare date means the end of that day."""
    if text is None:
        return None
    if end_of_day:
        try:
            day = date.fromisoformat(text)
        except ValueError:
            pass
        else:
            if day == date.max:  # through the end of the calendar: no upper bound at all
                return None
            end = datetime.combine(day + timedelta(days=1), datetime.min.time(), UTC)
            return int(end.timestamp() * 1000)
    moment_ms = parse_since_ms(text, now_ms)
    if not -_MAX_MOMENT_MS < moment_ms < _MAX_MOMENT_MS:
        raise ValueError(f"{text!r} is out of range")
    return moment_ms


def query_string(query: DeliveryQuery, **changes: str | None) -> str:
    """The query of a link to the same list with `changes` (None drops a parameter)."""
    values = {**query.model_dump(exclude_defaults=True), **changes}
    return urlencode({k: v for k, v in values.items() if v is not None})
