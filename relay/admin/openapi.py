"""`GET /api/openapi.json`: an OpenAPI 3.1 document of the admin API.

Its schemas are the JSON Schemas of the very pydantic models the handlers answer with
and read (`relay.admin.schemas`), and the list's query parameters are those of
`DeliveryQuery`, so the document says what the code does. The tests run schemathesis
against it, with a running relay.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from relay.admin.filters import DeliveryQuery
from relay.admin.schemas import (
    MAX_ID,
    AuditPage,
    DeliveryDetailOut,
    DeliveryPage,
    DestinationChanged,
    DestinationList,
    EventDetailOut,
    Problem,
    ReplayIn,
    ReplayOut,
    SendTestIn,
    SendTestOut,
)

_REF = "#/components/schemas/{model}"
_OUTPUTS: list[type[BaseModel]] = [
    Problem,
    DeliveryPage,
    DeliveryDetailOut,
    EventDetailOut,
    DestinationList,
    DestinationChanged,
    ReplayOut,
    SendTestOut,
    AuditPage,
]
_INPUTS: list[type[BaseModel]] = [ReplayIn, SendTestIn]
_ERRORS = {
    "400": "a parameter or the body is wrong: `details` names it",
    "401": "no admin token, or a wrong one",
    "429": "too many wrong tokens from this address: wait `Retry-After` seconds",
    "503": "the store cannot be read or written now",
}
_ID = {
    "name": "id",
    "in": "path",
    "required": True,
    "schema": {"type": "integer", "minimum": 1, "maximum": MAX_ID},
}
_KEY = {
    "name": "key",
    "in": "path",
    "required": True,
    "description": "producer/affiliate/id; its slashes may be sent as they are or as %2F",
    "schema": {"type": "string", "minLength": 1, "maxLength": 300},
}


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": _REF.format(model=model.__name__)}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _operation(
    summary: str,
    ok: tuple[str, type[BaseModel] | None, str],
    *,
    parameters: list[dict[str, Any]] | None = None,
    body: type[BaseModel] | None = None,
    errors: tuple[str, ...] = (),
) -> dict[str, Any]:
    code, model, description = ok
    responses = {code: _json(_ref(model) if model else {"type": "object"}, description)}
    for status in (*errors, *_ERRORS):
        reason = (
            _ERRORS.get(status)
            or {"404": "no such item", "409": "refused: `details` says why"}[status]
        )
        responses[status] = _json(_ref(Problem), reason)
    operation: dict[str, Any] = {"summary": summary, "responses": responses}
    if parameters:
        operation["parameters"] = parameters
    if body is not None:
        operation["requestBody"] = {"required": True, **_json(_ref(body), body.__doc__ or "")}
    return operation


def _query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    """Each field of `model` as an optional query parameter (a blank value is no filter)."""
    properties = model.model_json_schema()["properties"]
    found = []
    for name, schema in properties.items():
        variants = [s for s in schema.get("anyOf", [schema]) if s.get("type") != "null"]
        (variant,) = variants if len(variants) == 1 else [{"anyOf": variants}]
        kept = {k: v for k, v in variant.items() if k != "title"}
        if "default" in schema and schema["default"] is not None:
            kept["default"] = schema["default"]
        parameter = {"name": name, "in": "query", "required": False, "schema": kept}
        if "description" in schema:
            parameter["description"] = schema["description"]
        found.append(parameter)
    return found


def _text_query(*names: str) -> list[dict[str, Any]]:
    schema = {"type": "string", "maxLength": 200}
    return [{"name": n, "in": "query", "required": False, "schema": schema} for n in names]


def openapi_document(version: str) -> dict[str, Any]:
    _, definitions = models_json_schema(
        [(m, "serialization") for m in _OUTPUTS] + [(m, "validation") for m in _INPUTS],
        ref_template=_REF,
    )
    replayed = ("202", ReplayOut, "queued; the running relay sends them")
    paths = {
        "/api/deliveries": {
            "get": _operation(
                "Deliveries, newest first, filtered; `next` is the cursor of the next page",
                ("200", DeliveryPage, "one page"),
                parameters=_query_parameters(DeliveryQuery),
            )
        },
        "/api/deliveries/{id}": {
            "get": _operation(
                "One delivery: its decision, event (buyer masked) and every attempt",
                ("200", DeliveryDetailOut, "the delivery"),
                parameters=[_ID],
                errors=("404",),
            )
        },
        "/api/deliveries/{id}/reveal": {
            "post": _operation(
                "The same, with the buyer's data shown; recorded in the audit trail",
                ("200", DeliveryDetailOut, "the delivery, buyer shown"),
                parameters=[_ID],
                errors=("404",),
            )
        },
        "/api/deliveries/{id}/replay": {
            "post": _operation(
                "Send one delivery again now (a withheld one is decided again first)",
                replayed,
                parameters=[_ID],
                errors=("404", "409"),
            )
        },
        "/api/replay": {
            "post": _operation(
                "Send the given deliveries, or every failure since a date, again now",
                replayed,
                body=ReplayIn,
            )
        },
        "/api/send-test": {
            "post": _operation(
                "Send a notification marked as a test, with made-up buyer data",
                ("202", SendTestOut, "queued; the running relay sends it"),
                body=SendTestIn,
                errors=("409",),
            )
        },
        "/api/destinations": {
            "get": _operation(
                "Every destination with its health",
                ("200", DestinationList, "the destinations"),
                parameters=_text_query("producer", "affiliate"),
            )
        },
        "/api/destinations/{key}/enable": {
            "post": _operation(
                "Enable a destination",
                ("200", DestinationChanged, "enabled"),
                parameters=[_KEY],
                errors=("404",),
            )
        },
        "/api/destinations/{key}/disable": {
            "post": _operation(
                "Disable a destination",
                ("200", DestinationChanged, "disabled"),
                parameters=[_KEY],
                errors=("404",),
            )
        },
        "/api/events/{id}": {
            "get": _operation(
                "One Hotmart event (buyer masked) and every decision it produced",
                ("200", EventDetailOut, "the event"),
                parameters=[_ID],
                errors=("404",),
            )
        },
        "/api/audit": {
            "get": _operation(
                "What operators did, newest first",
                ("200", AuditPage, "one page"),
                parameters=[
                    {
                        "name": "cursor",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string", "pattern": "^[1-9][0-9]{0,17}$"},
                    },
                    *_text_query("producer"),
                ],
            )
        },
        "/api/openapi.json": {"get": _operation("This document", ("200", None, "OpenAPI 3.1"))},
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "relay admin API",
            "version": version,
            "description": "The data and actions of relay's admin page, behind the admin token.",
        },
        "paths": paths,
        "components": {
            "schemas": definitions.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }
