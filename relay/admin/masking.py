"""Hide a buyer's name, email and phone until an operator asks to see them.

The admin page shows an event's buyer, and every attempt's payload and response, which
quote the buyer too (a webhook body's `buyer`, an email's greeting, a receiver echoing
what it got). Until the operator clicks "reveal" (a POST, logged), each of those values
is replaced wherever it appears, in the forms a payload writes it: as sent, JSON-escaped
(`Luc\\u00eda`), HTML-escaped, and a phone as the templates format it, as digits, or in
the international form of a WhatsApp link.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterable
from typing import Any

from relay.formatting import format_phone
from relay.hotmart import Buyer, Event
from relay.whatsapp import whatsapp_number

MASK = "•••"
_BUYER_FIELDS = ("name", "email", "phone")
# A part of a name shorter than this is not hidden on its own ("de", "da", "Li"): it
# would blank every such word of the text and protect nothing.
_MIN_PART_CHARS = 3
# A phone's digits are hidden on their own only when there are this many: fewer would
# blank order numbers and prices.
_MIN_PHONE_DIGITS = 7


def hidden_values(buyer: Buyer | None, country_iso: str = "") -> list[str]:
    """Every form of the buyer's values that a payload may hold, longest first."""
    if buyer is None:
        return []
    found: set[str] = set()
    name = buyer.name.strip()
    found.add(name)
    found.update(part for part in name.split() if len(part) >= _MIN_PART_CHARS)
    found.update((buyer.email.strip(), buyer.email.strip().lower()))
    phone = buyer.phone.strip()
    digits = "".join(ch for ch in phone if ch.isdigit())
    found.update((phone, format_phone(phone, country_iso)))
    if len(digits) >= _MIN_PHONE_DIGITS:
        found.add(digits)
    # Sale recovery's wa.me link writes it with its country code joined on.
    found.add(whatsapp_number(phone, country_iso) or "")
    spelled = {form for value in found if value for form in _spellings(value)}
    return sorted(spelled, key=lambda value: (-len(value), value))


def _spellings(value: str) -> Iterable[str]:
    yield value
    yield html.escape(value)
    for ascii_only in (True, False):
        escaped = json.dumps(value, ensure_ascii=ascii_only)[1:-1]
        yield escaped
        # Jinja's `tojson` also escapes the characters HTML treats specially.
        yield (
            escaped.replace("<", "\\u003c")
            .replace(">", "\\u003e")
            .replace("&", "\\u0026")
            .replace("'", "\\u0027")
        )


def mask_text(text: str, hidden: list[str]) -> str:
    """`text` with every hidden value replaced by the mask, in any case, where it stands
    as a whole word: "Ana" is hidden, the "ana" of "banana" is not."""
    if not hidden or not text:
        return text
    alternatives = "|".join(re.escape(value) for value in hidden)
    pattern = re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)
    return pattern.sub(MASK, text)


def masked_buyer(buyer: Buyer | None, revealed: bool) -> dict[str, str] | None:
    """The buyer as the page shows it: each value, or the mask where there is one."""
    if buyer is None:
        return None
    values = buyer.model_dump()
    return {
        field: values[field] if revealed or not values[field] else MASK for field in _BUYER_FIELDS
    }


def masked_event_payload(event: Event, revealed: bool) -> dict[str, Any]:
    """The stored event as JSON-ready data, its buyer masked unless revealed."""
    data: dict[str, Any] = event.model_dump(mode="json")
    data["buyer"] = masked_buyer(event.buyer, revealed)
    return data
