"""Read values from messy real-world JSON and form data without raising, and bound them.

Real Hotmart bodies send numbers as text or as floats, a few names in camelCase next to
snake_case, dates as epoch ms or ISO 8601, and fields that are absent or empty. Each
reader here turns whatever arrived into the wanted type or an empty/None value;
deciding what is required is the caller's job.

Every reader also bounds what it returns, so that no value from a body can make a
render, a stored row or a log line large (issue 6, defect 1: a price of
`"1E+999999999"` once expanded to a billion characters). Two policies, by what a
partial value would mean:

- **cut** (`as_name`): names people read. A cut name still says who or what it is.
- **drop** (`as_text`): ids, codes, URLs, emails, phones. A cut code pays the wrong
  slip and a cut URL opens the wrong page; absent is honest, wrong is not.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

# Lengths, in characters, of the values the relay keeps from a body.
MAX_ID_CHARS = 128  # Hotmart ids are UUIDs (36), transactions ~20, affiliate codes ~10
MAX_WORD_CHARS = 64  # event names, statuses, payment types, currency and country codes
MAX_NAME_CHARS = 200  # product, buyer, affiliate and country names: cut past this
MAX_EMAIL_CHARS = 254  # RFC 5321's limit for a whole address
MAX_PHONE_CHARS = 32  # E.164 is at most 15 digits; room for a "+", spaces and dashes
MAX_URL_CHARS = 2048  # the longest URL that browsers and mail clients reliably open
MAX_CODE_CHARS = 128  # a boleto is 47 or 48 digits; cash references are about 30
MAX_PIX_CODE_CHARS = 1024  # an EMV "copia e cola" code is at most 512 characters
MAX_DATE_CHARS = 64  # the longest ISO 8601 text worth trying to read

# A price is an amount of money someone pays for a course: anything outside this range,
# or finer than this, is not a price but noise (or an attack) and is treated as unknown.
MAX_PRICE = Decimal(10**9)  # COP 1,000,000,000 is about USD 250,000
MAX_PRICE_PLACES = 4
# Read as text before any Decimal is built: at most 15 digits a side and a two-digit
# exponent, so "1E+999999999" never becomes a number that expands when printed.
_PRICE_TEXT = re.compile(r"[+-]?\d{1,15}(?:\.\d{1,15})?(?:[eE][+-]?\d{1,2})?")

_WHITESPACE = re.compile(r"\s+")
_CODE_SEPARATORS = re.compile(r"[.\-]")

_MAX_EPOCH_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
# Below this an epoch number is in seconds (10**11 s is the year 5138; 10**11 ms is 1973).
_EPOCH_SECONDS_BELOW = 10**11


def get_field(mapping: Mapping[str, Any], snake_key: str) -> Any:
    """Read `snake_key`, falling back to its camelCase spelling (`creationDate`)."""
    if snake_key in mapping:
        return mapping[snake_key]
    head, *rest = snake_key.split("_")
    return mapping.get(head + "".join(word.capitalize() for word in rest))


def as_object(value: Any) -> dict[str, Any]:
    """A JSON object, or `{}` for anything else.

    No real Hotmart body sends an object as a string: the `"subscription":
    "192.168.4.57"` once cited for that was an anonymiser's artefact in a third-party
    fixture. Reading the wrong type as absent costs nothing, so it stays.
    """
    return value if isinstance(value, dict) else {}


def as_text(value: Any, max_chars: int) -> str:
    """Trimmed text, or `""` when absent, not text-like, or longer than `max_chars`."""
    text = _plain_text(value)
    return text if len(text) <= max_chars else ""


def as_name(value: Any, max_chars: int = MAX_NAME_CHARS) -> str:
    """Trimmed text cut to `max_chars`: for names, which are still useful when cut."""
    return _plain_text(value)[:max_chars].rstrip()


def as_id_text(value: Any, max_chars: int = MAX_ID_CHARS) -> str:
    """An id as text: 3012345.0 (a number that went through a float) reads as "3012345"."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return as_text(value, max_chars)


def as_int(value: Any, minimum: int, maximum: int) -> int | None:
    """A whole number within `minimum..maximum`, else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        number = int(value) if value.is_integer() else None
    elif isinstance(value, int):
        number = value
    else:
        number = _int_from_text(as_text(value, MAX_WORD_CHARS))
    return number if number is not None and minimum <= number <= maximum else None


def as_price(value: Any) -> Decimal | None:
    """A price in `0..MAX_PRICE` with at most `MAX_PRICE_PLACES` decimals, else None."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        parsed = Decimal(value) if 0 <= value <= MAX_PRICE else None
    elif isinstance(value, float):
        # repr is the shortest text that reads back as this float: 499.9, not 499.89999...
        parsed = Decimal(repr(value)) if 0 <= value <= MAX_PRICE else None
    else:
        text = as_text(value, MAX_WORD_CHARS).replace(",", ".")
        parsed = Decimal(text) if _PRICE_TEXT.fullmatch(text) else None
    if parsed is None or not 0 <= parsed <= MAX_PRICE:
        return None
    places = parsed.normalize().as_tuple().exponent
    return parsed if isinstance(places, int) and places >= -MAX_PRICE_PLACES else None


def as_epoch_ms(value: Any) -> int | None:
    """Accept epoch ms, epoch s, numeric strings and ISO 8601; anything else is unknown."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        try:
            number = int(value)
        except (OverflowError, ValueError):  # inf, nan
            return None
        return _plausible_ms(number if number >= _EPOCH_SECONDS_BELOW else number * 1000)
    text = as_text(value, MAX_DATE_CHARS)
    if text.isascii() and text.isdigit():
        return as_epoch_ms(int(text))
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return _plausible_ms(int(moment.timestamp() * 1000))


def compact_code(text: str) -> str | None:
    """Digits only when the code is a number written with separators, as boletos are
    ("34191.09669 36967.100540 ..."); otherwise just without whitespace."""
    compact = _WHITESPACE.sub("", text)
    digits = _CODE_SEPARATORS.sub("", compact)
    return (digits if digits.isdecimal() and digits.isascii() else compact) or None


def _plain_text(value: Any) -> str:
    if value is None or isinstance(value, dict | list):
        return ""
    try:
        return str(value).strip()
    except ValueError:  # an int with more digits than Python will print
        return ""


def _int_from_text(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def _plausible_ms(epoch_ms: int) -> int | None:
    # Outside 1970..9999 it is not a real date, and datetime could not represent it anyway.
    return epoch_ms if 0 <= epoch_ms <= _MAX_EPOCH_MS else None


def text_problem(value: Any, max_chars: int) -> str | None:
    """Why `value` cannot be a required text field (an id, an event name), or None.

    Said precisely, for the 400 reply: an integer beyond 64 bits reaches here as a
    float (orjson cannot keep it as an int), and "missing" would be a lie about it.
    """
    if value is None:
        return "missing"
    if isinstance(value, bool):
        return "a boolean; send a string"
    if isinstance(value, dict | list):
        return f"a JSON {'object' if isinstance(value, dict) else 'array'}; send a string"
    if isinstance(value, float):
        if value.is_integer() and abs(value) >= 2**63:
            return "a number too large to keep exactly; send it as a string"
        return "a number with a decimal point; send a string or an integer"
    if isinstance(value, str) and not value.strip():
        return "empty"
    if not as_text(value, max_chars):
        return f"longer than {max_chars} characters"
    return None
