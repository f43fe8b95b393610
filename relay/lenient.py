"""Read values from messy real-world JSON and form data without raising.

Hotmart's payloads send objects as strings, numbers as text, camelCase next to
snake_case and dates in several shapes. Each reader here turns whatever arrived into
the wanted type or an empty/None value; deciding what is required is the caller's job.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

_MAX_EPOCH_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z


def get_field(mapping: Mapping[str, Any], snake_key: str) -> Any:
    """Read `snake_key`, falling back to its camelCase spelling (`creationDate`)."""
    if snake_key in mapping:
        return mapping[snake_key]
    head, *rest = snake_key.split("_")
    return mapping.get(head + "".join(word.capitalize() for word in rest))


def as_object(value: Any) -> dict[str, Any]:
    # Real payloads send objects as strings ("subscription": "192.168.4.57"): treat as absent.
    return value if isinstance(value, dict) else {}


def as_id_text(value: Any) -> str:
    """An id as text: 3012345.0 (a number that went through a float) reads as "3012345"."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return as_text(value)


def as_text(value: Any) -> str:
    if value is None or isinstance(value, dict | list):
        return ""
    return str(value).strip()


def as_int(value: Any) -> int | None:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None


def as_decimal(value: Any) -> Decimal | None:
    if value is None or isinstance(value, bool | dict | list):
        return None
    try:
        parsed = Decimal(str(value).strip().replace(",", "."))
    except InvalidOperation:
        return None
    return parsed if parsed.is_finite() else None


def as_epoch_ms(value: Any) -> int | None:
    """Accept epoch ms, epoch s, numeric strings and ISO 8601; anything else is unknown."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float) or (isinstance(value, str) and value.strip().isdigit()):
        try:
            number = value if isinstance(value, int) else int(float(value))
        except (OverflowError, ValueError):  # inf, nan, digits float() cannot read
            return None
        return _plausible_ms(number if number > 10**11 else number * 1000)
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return _plausible_ms(int(moment.timestamp() * 1000))
    return None


def compact_code(text: str) -> str | None:
    """Digits only when the code is a number written with separators, as boletos are
    ("34191.09669 36967.100540 ..."); otherwise just without whitespace."""
    compact = re.sub(r"\s+", "", text)
    digits = re.sub(r"[.\-]", "", compact)
    return (digits if digits.isdecimal() and digits.isascii() else compact) or None


def _plausible_ms(epoch_ms: int) -> int | None:
    # Outside 1970..9999 it is not a real date, and datetime could not represent it anyway.
    return epoch_ms if 0 <= epoch_ms <= _MAX_EPOCH_MS else None
