"""The passes `parse_config` makes over the raw TOML data, around model validation.

`resolve_env` fills in `env:` references before validation; `cross_check` checks
across entries (duplicate ids, webhook URLs). They read the raw data rather than the
validated models so their problems are reported alongside field errors even when some
field fails. Nothing here imports `relay.config`, which imports this: no cycle.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from relay.addresses import is_forbidden_address, parse_ip_literal
from relay.destination_ids import address_of, derived_id, id_problem


def resolve_env(
    value: Any, environ: Mapping[str, str], path: tuple[str, ...], problems: list[tuple[str, str]]
) -> Any:
    """Replace each `env:NAME` string with that variable; report any that is not set."""
    if isinstance(value, str) and value.startswith("env:"):
        name = value[4:]
        if name not in environ:
            problems.append((".".join(path), f"environment variable {name} is not set"))
            return value
        return environ[name]
    if isinstance(value, dict):
        return {k: resolve_env(v, environ, (*path, str(k)), problems) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [resolve_env(v, environ, (*path, str(i)), problems) for i, v in enumerate(value)]
    return value


def cross_check(raw: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Checks across entries, on the resolved raw data so they run even when fields fail.

    Values that are not even the right type are skipped here: validation reports them.
    """
    problems: list[tuple[str, str]] = []
    problems.extend(_storage_choice(raw.get("storage")))
    delivery = raw.get("delivery")
    problems.extend(_workers_problems(raw.get("server"), delivery))
    allow_private = _flag(
        delivery.get("allow_private_networks", False) if isinstance(delivery, dict) else False
    )
    seen_ids: dict[str, int] = {}
    seen_tokens: dict[str, int] = {}
    for p_index, producer in _items(raw.get("producers")):
        where = f"producers.{p_index}"
        earlier = _earlier(seen_ids, producer.get("id"), p_index)
        if earlier is not None:
            problems.append((f"{where}.id", f"duplicate of producers.{earlier}.id"))
        earlier = _earlier(seen_tokens, producer.get("hottok"), p_index)
        if earlier is not None:
            problems.append((f"{where}.hottok", f"same token as producers.{earlier}.hottok"))
        codes: dict[str, int] = {}
        for a_index, affiliate in _items(producer.get("affiliates")):
            a_where = f"{where}.affiliates.{a_index}"
            earlier = _earlier(codes, affiliate.get("code"), a_index)
            if earlier is not None:
                problems.append((f"{a_where}.code", f"duplicate of {where}.affiliates.{earlier}"))
            for d_index, destination in _items(affiliate.get("destinations")):
                url = destination.get("url")
                if destination.get("kind") != "webhook" or not isinstance(url, str):
                    continue
                reason = _webhook_url_problem(
                    url, _flag(destination.get("allow_http", False)), allow_private
                )
                if reason:
                    problems.append((f"{a_where}.destinations.{d_index}.url", reason))
            problems.extend(_duplicate_destination_ids(a_where, affiliate))
    return problems


def _storage_choice(storage: Any) -> list[tuple[str, str]]:
    """One store: a sqlite_path written out next to a postgres_dsn is a config that cannot
    say which one holds the outbox (the default sqlite_path alone does not count)."""
    if isinstance(storage, dict) and "sqlite_path" in storage and "postgres_dsn" in storage:
        return [
            (
                "storage.postgres_dsn",
                "set together with storage.sqlite_path: choose one store (remove one key)",
            )
        ]
    return []


def _duplicate_destination_ids(where: str, affiliate: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Two destinations of one affiliate cannot share a key, whether their ids are written
    or derived from the address (the same address twice derives the same id)."""
    problems: list[tuple[str, str]] = []
    seen: dict[str, int] = {}
    for index, destination in _items(affiliate.get("destinations")):
        written, kind = destination.get("id"), destination.get("kind")
        address = address_of(kind, destination) if isinstance(kind, str) else None
        if written is not None:
            stable = written if id_problem(written) is None else None  # validation says why
        else:
            stable = derived_id(kind, address) if isinstance(kind, str) and address else None
        first = _earlier(seen, stable, index)
        if first is None:
            continue
        there = f"{where}.destinations.{first}"
        reason = (
            f"duplicate of {there}.id ({stable!r}): an id is unique within its affiliate"
            if written is not None
            else f"same key as {there} ({stable!r}, from the {kind} address): give each an `id`"
        )
        problems.append((f"{where}.destinations.{index}.id", reason))
    return problems


def _earlier(seen: dict[str, int], value: Any, index: int) -> int | None:
    """The index where an equal non-empty string was first seen; remembers this one."""
    if not isinstance(value, str) or not value:
        return None
    first = seen.setdefault(value, index)
    return first if first != index else None


def _workers_problems(server: Any, delivery: Any) -> list[tuple[str, str]]:
    """Several ingest processes each running a dispatcher would each release the others'
    leases at start: with `server.workers` above 1 the dispatcher needs its own process."""
    ingest = server.get("workers", 1) if isinstance(server, dict) else 1
    dispatchers = delivery.get("workers", 1) if isinstance(delivery, dict) else 1
    if type(ingest) is int and ingest > 1 and dispatchers == 0:
        return [("delivery.workers", "must be 1 or more when server.workers is above 1")]
    return []


def _items(value: Any) -> list[tuple[int, dict[str, Any]]]:
    """The (index, table) pairs of an array of tables; anything else has none."""
    if not isinstance(value, list | tuple):
        return []
    return [(index, item) for index, item in enumerate(value) if isinstance(item, dict)]


def toml_bool(value: object) -> bool:
    """Only a TOML boolean is a boolean: `buyer_data = "yes"` opens no privacy gate.

    Pydantic's lax reading takes "yes", "true", 1 and refuses "sim", so a flag's
    meaning would hang on which words it happens to know. Strings from `env:` are
    refused too: a flag belongs in the file, where it can be read.
    """
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, unquoted (a TOML boolean), not {value!r}")
    return value


def _flag(value: Any) -> bool:
    """A boolean as validation reads it; an invalid one counts as set (validation reports it)."""
    return value if isinstance(value, bool) else True


def _webhook_url_problem(url: str, allow_http: bool, allow_private: bool) -> str | None:
    try:
        check_http_url(url)
    except ValueError:
        return None  # the field validator reports it
    parts = urlsplit(url)
    if parts.scheme == "http" and not (allow_http or allow_private):
        return "must be https (set allow_http = true on this destination to opt in to http)"
    if not allow_private and _is_private_literal(parts.hostname or ""):
        return "points at a private or loopback address; set delivery.allow_private_networks = true"
    return None


def _is_private_literal(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    address = parse_ip_literal(host)
    # A name is checked again at connect time, when it resolves.
    return address is not None and is_forbidden_address(address)


def check_http_url(value: str) -> None:
    """Raise ValueError unless `value` is an absolute http(s) URL with a host and a valid port.

    Shared with `WebhookDestination`'s field validator, so both agree on what a URL is.
    """
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError:
        raise ValueError(f"{value!r} is not an http(s) URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{value!r} is not an http(s) URL")
    if any(char.isspace() for char in value):
        raise ValueError(f"{value!r} is not an http(s) URL")
