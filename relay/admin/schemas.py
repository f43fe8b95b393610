"""What the admin API answers and accepts, as pydantic models: the pages render the same
models, and `relay.admin.openapi` documents them from their JSON Schemas, so the
document cannot drift from what is sent."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, WithJsonSchema

# A row id, as SQLite (and PostgreSQL's bigint) can hold it.
MAX_ID = 2**63 - 1
RowId = Annotated[int, Field(ge=1, le=MAX_ID)]
# Names an operator types (an affiliate code, a destination id): one line, bounded.
Name = Annotated[
    str, StringConstraints(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")
]


# A moment as the list's filters and replays take it: a date or date-time (UTC unless it
# names a zone), or a duration ago. The document lists the date and duration forms, which
# generated requests can be built from; date-times are accepted as well.
DURATION_AGO = r"^[0-9]{1,9}(ms|s|m|h|d)$"
When = Annotated[
    str,
    StringConstraints(min_length=1, max_length=40),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "format": "date"},
                {"type": "string", "pattern": DURATION_AGO},
            ],
            "description": "an ISO date (UTC), an ISO date-time, or a duration ago: 2h, 7d",
        }
    ),
]


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class _In(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Problem(_Out):
    error: str
    details: list[Any] = Field(default_factory=list)


class DeliveryOut(_Out):
    """One decision row: sent or to be sent, or withheld, skipped or ignored, and why."""

    id: int
    kind: str = Field(description="notification | test | alert")
    status: str = Field(description="pending | delivered | failed | withheld | skipped | ...")
    reason: str = Field(description="why it has this status, in words")
    last_status_code: int | None = Field(
        description="HTTP status or SMTP reply code of the last attempt"
    )
    producer: str
    affiliate: str
    destination: str | None = Field(description="the destination key: producer/affiliate/id")
    channel: str | None
    event: str
    event_row_id: int
    hotmart_id: str
    transaction: str
    message_id: str = Field(description="webhook-id and Message-ID, the same on every attempt")
    attempts: int
    next_attempt_at: str | None
    created_at: str
    updated_at: str


class AttemptOut(_Out):
    attempt_no: int
    started_at: str
    latency_ms: float
    outcome: str = Field(description="success | transient | permanent")
    status_code: int | None
    detail: str
    request_payload: str = Field(description="what was sent, buyer data masked unless revealed")
    response_excerpt: str
    response_headers: dict[str, str]


class BuyerOut(_Out):
    name: str
    email: str
    phone: str


class EventOut(_Out):
    """A stored event, as Hotmart sent it once normalised; its buyer masked unless revealed."""

    id: int
    producer: str
    hotmart_id: str
    event: str
    source: str
    outcome: str
    transaction: str
    product_id: str
    received_at: str
    scrubbed_at: str | None = Field(description="when retention scrubbed its buyer data")
    test: bool
    buyer: BuyerOut | None
    buyer_revealed: bool
    payload: dict[str, Any]


class DeliveryDetailOut(_Out):
    delivery: DeliveryOut
    event: EventOut
    attempts: list[AttemptOut]


class EventDetailOut(_Out):
    event: EventOut
    deliveries: list[DeliveryOut]


class DeliveryPage(_Out):
    deliveries: list[DeliveryOut]
    next: str | None = Field(description="pass as `cursor` for the next (older) page")


class DestinationOut(_Out):
    key: str = Field(description="producer/affiliate/id")
    producer: str
    affiliate: str
    id: str
    kind: str
    target: str = Field(description="where it sends; a URL's query and credentials left out")
    enabled: bool
    disabled_reason: str
    consecutive_failures: int
    last_success_at: str | None
    last_error: str
    last_error_at: str | None


class DestinationList(_Out):
    destinations: list[DestinationOut]


class Reason(_Out):
    id: int
    reason: str


class Replaced(_Out):
    id: int
    by: list[int]


class ReplayOut(_Out):
    """What a replay did with each delivery it was given."""

    queued: list[int] = Field(description="due now; the running relay sends them")
    in_flight: list[Reason] = Field(description="being sent right now: try again in a moment")
    not_replayable: list[Reason]
    still_withheld: list[Reason]
    replaced: list[Replaced]
    audit_id: int
    message: str


class SendTestOut(_Out):
    queued: list[int]
    audit_id: int
    message: str


class DestinationChanged(_Out):
    destination: DestinationOut
    audit_id: int
    message: str


class AuditOut(_Out):
    id: int
    at: str
    action: str
    via: str
    remote: str
    producer: str
    target: str
    delivery_ids: list[int]
    outcome: str


class AuditPage(_Out):
    entries: list[AuditOut]
    next: str | None


class ReplayIn(_In):
    """Give `ids`, or `failed_since` for every failure created since then."""

    ids: list[RowId] | None = Field(default=None, min_length=1, max_length=1000)
    failed_since: When | None = Field(
        default=None, description="ISO date or date-time (UTC unless a zone is given), or '2h'"
    )


class SendTestIn(_In):
    affiliate: Name
    destination: Name | None = Field(default=None, description="a destination id")
    producer: Name | None = Field(
        default=None, description="when several producers have this affiliate"
    )


Tab = Literal["all", "sent", "pending"]
