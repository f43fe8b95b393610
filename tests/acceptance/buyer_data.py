"""The buyer values of the test fixtures, and a search for them in log text.

No log line may carry a buyer's email, phone, name or document (README: "No buyer
data reaches the logs"). Every value is searched as written, JSON-escaped and
URL-encoded, since that is how a careless log line would quote it.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from urllib.parse import parse_qsl, quote, quote_plus

FIXTURES = Path(__file__).parent.parent / "fixtures"
# Shorter values (a first name such as "Ana") are too common to search for honestly.
MIN_VALUE_CHARS = 6


@cache
def buyer_values() -> frozenset[str]:
    """Every buyer email, full name, phone and document the fixtures carry."""
    values: set[str] = set()
    phones: set[str] = set()
    # fixtures/shared holds the shared set's variants of the same buyers: theirs count too.
    for path in sorted(p for p in FIXTURES.rglob("*") if p.is_file()):
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".json":
            buyer = json.loads(text).get("data", {}).get("buyer", {})
            values.update(str(buyer.get(key) or "") for key in ("email", "name", "document"))
            code, phone = (
                str(buyer.get("checkout_phone_code") or ""),
                str(buyer.get("checkout_phone") or ""),
            )
            phones.update({phone, code + phone if not phone.startswith(code) else phone})
        else:
            form = dict(parse_qsl(text.strip()))
            values.update(form.get(key, "") for key in ("email", "name"))
            # The number alone ("12345678") would also match an affiliate code such as
            # K12345678M: only the full number with its area code names the buyer.
            number = form.get("phone_checkout_number", "")
            phones.add(form.get("phone_checkout_local_code", "") + number)
    for email in [v for v in values if "@" in v]:
        values.add(email.split("@")[0])  # the local part alone still names the buyer
    for phone in phones:
        values.update({phone, re.sub(r"\D", "", phone)})  # as a normaliser might write it
    return frozenset(v.strip() for v in values if len(v.strip()) >= MIN_VALUE_CHARS)


@cache
def _spellings() -> tuple[tuple[str, str], ...]:
    pairs: set[tuple[str, str]] = set()
    for value in buyer_values():
        for spelling in (
            value,
            json.dumps(value)[1:-1],  # escaped non-ASCII, as json.dumps writes it
            quote(value),
            quote_plus(value),
        ):
            pairs.add((spelling, value))
    return tuple(sorted(pairs))


def buyer_values_in(text: str) -> list[str]:
    """The buyer values that `text` quotes, in any of the spellings searched."""
    return sorted({value for spelling, value in _spellings() if spelling in text})
