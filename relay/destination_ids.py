"""How a destination is named: its key is `producer/affiliate/id`, never its position.

A position moves when the TOML list is reordered or a destination is inserted, and
with it would move the health record, the disabled flag and every queued delivery
(a queued email could go out as a webhook). An `id` is the operator's name for one
destination; without one, it is derived from the destination's kind and address,
which stay put whatever the list around them does.

Nothing here imports `relay.config`, which (with `relay.config_checks`) uses this:
one definition of an id for the models, the cross-checks and the store's rekey.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

MAX_ID_CHARS = 32
# A letter first keeps an id apart from the positional keys (`p/a/0`) of before, so a key
# always says which scheme made it, and the rekey can never mistake one for the other.
_ID = re.compile(rf"[a-z][a-z0-9_-]{{0,{MAX_ID_CHARS - 1}}}")
# 8 hex digits, 32 bits: a collision between two addresses of one affiliate is far beyond
# any real config, and check-config reports one anyway (as a duplicate key).
_HASH_HEX_DIGITS = 8
_ADDRESS_FIELD = {"email": "to", "webhook": "url"}


def id_problem(value: object) -> str | None:
    """Why `value` cannot be a destination id, or None when it can."""
    if not isinstance(value, str):
        return "must be a string"
    if not _ID.fullmatch(value):
        return (
            f"{value!r} is not a destination id: a lower-case letter, then up to "
            f"{MAX_ID_CHARS - 1} lower-case letters, digits, '-' or '_'"
        )
    return None


def address_of(kind: str, fields: Mapping[str, Any]) -> str | None:
    """The address an id is derived from: the email's `to`, the webhook's `url`."""
    value = fields.get(_ADDRESS_FIELD.get(kind, ""))
    return value if isinstance(value, str) else None


def derived_id(kind: str, address: str) -> str:
    """The id of a destination that names none: its kind and a short hash of its address.

    An email address is compared without its display name and case (`Ana <ANA@x.com>`
    is `ana@x.com`); a URL as written, since its path may be case-sensitive.
    """
    if kind == "email":
        address = address.rpartition("<")[2].rstrip(">").strip().lower()
    else:
        address = address.strip()
    digest = hashlib.sha256(address.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{kind}-{digest[:_HASH_HEX_DIGITS]}"


def destination_key(producer_id: str, affiliate_code: str, destination_id: str) -> str:
    """The stable name of one destination, in the store and on the command line."""
    return f"{producer_id}/{affiliate_code}/{destination_id}"


def split_destination_key(key: str) -> tuple[str, str, str] | None:
    """(producer, affiliate, destination id), or None if `key` is not a key.

    An affiliate code may hold a '/', an id never does: the last '/' ends the code.
    """
    producer_id, _, rest = key.partition("/")
    code, _, destination_id = rest.rpartition("/")
    if not producer_id or not code or not destination_id:
        return None
    return producer_id, code, destination_id


def positional_key(producer_id: str, affiliate_code: str, index: int) -> str:
    """A key as the relay wrote it before destinations had ids: for the one-time rekey."""
    return f"{producer_id}/{affiliate_code}/{index}"
