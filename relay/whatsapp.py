"""A WhatsApp click-to-chat link to the buyer: `https://wa.me/<digits>?text=<message>`.

WhatsApp opens a chat from a number in international form, digits only: the country
code, then the national number without its trunk prefix. Hotmart sends the phone the
way the buyer typed it at checkout (SPEC §2): a Brazilian number as an area code
(`checkout_phone_code`) plus a local number, which `relay.hotmart` joins; others
mostly with their country code inside `checkout_phone` ("+52 55 1234 5678"); and
many checkouts send none. A link that opens a chat with the wrong person is worse
than no link, so a number without the shape of a real one for its country gets none.
"""

from __future__ import annotations

import re
from urllib.parse import quote

# Country -> (calling code, its national significant number: what follows the country
# code, trunk prefix removed). The countries Hotmart sells in most; a number from
# another country gets a link only when it carries its own country code.
_NATIONAL: dict[str, tuple[str, str]] = {
    "BR": ("55", r"[1-9]{2}(?:9\d{8}|[2-5]\d{7})"),  # area code; mobile 9 + 8, landline 8
    "MX": ("52", r"1?[1-9]\d{9}"),  # ten digits; older mobiles were written 1 + ten
    "CO": ("57", r"3\d{9}|60\d{8}"),  # mobiles 3xx, landlines 60x (since 2021)
    "CL": ("56", r"[2-9]\d{8}"),
    "PE": ("51", r"9\d{8}|[1-8]\d{7}"),
    "EC": ("593", r"9\d{8}|[2-7]\d{7}"),
    "BO": ("591", r"[2-7]\d{7}"),
    "PY": ("595", r"9\d{8}|[2-8]\d{7,8}"),
    "UY": ("598", r"[249]\d{7}"),
    "VE": ("58", r"[24]\d{9}"),
    "CR": ("506", r"[2-8]\d{7}"),
    "PA": ("507", r"6\d{7}|[2-9]\d{6}"),
    "GT": ("502", r"[2-7]\d{7}"),
    "HN": ("504", r"[2-9]\d{7}"),
    "SV": ("503", r"[2-7]\d{7}"),
    "NI": ("505", r"[2-8]\d{7}"),
    "ES": ("34", r"[6-9]\d{8}"),
    "PT": ("351", r"[29]\d{8}"),
    # The North American plan: area code and number, neither starting with 0 or 1.
    "US": ("1", r"[2-9]\d{2}[2-9]\d{6}"),
    "CA": ("1", r"[2-9]\d{2}[2-9]\d{6}"),
    "DO": ("1", r"[2-9]\d{2}[2-9]\d{6}"),
    "PR": ("1", r"[2-9]\d{2}[2-9]\d{6}"),
}
_BY_CODE = {code: re.compile(pattern) for code, pattern in _NATIONAL.values()}
_BY_COUNTRY = {iso: (code, _BY_CODE[code]) for iso, (code, _) in _NATIONAL.items()}
# E.164: at most 15 digits with the country code; no real number has fewer than 8.
_MIN_DIGITS, _MAX_DIGITS = 8, 15
# What people write between digits; anything else (letters, "ext") is not a number.
_FORMATTING = str.maketrans("", "", " -.()/\u00a0")
WA_ME = "https://wa.me/"


def whatsapp_number(phone: str, country_iso: str) -> str | None:
    """The phone in international form, digits only, or None if it cannot be told.

    A number written with `+` or `00` carries its country code. One without is
    national: the buyer's country (`checkout_country.iso`) gives the code, unless the
    digits already start with it and the rest is a whole national number.
    """
    text = phone.strip().translate(_FORMATTING)
    if text.startswith("+"):
        return _international(text[1:])
    if text.startswith("00"):
        return _international(text[2:])
    if not _all_digits(text):
        return None
    known = _BY_COUNTRY.get(country_iso.upper())
    if known is None:
        return None  # no country code to give it, and guessing one could reach a stranger
    code, national = known
    for candidate in (text, text[1:] if text.startswith("0") else ""):  # a trunk "0"
        if candidate and national.fullmatch(candidate):
            return code + candidate
    if text.startswith(code) and national.fullmatch(text[len(code) :]):
        return text  # it held its country code already
    return None


def whatsapp_url(number: str, message: str) -> str:
    """The click-to-chat link: the chat with `number`, `message` typed in, not yet sent."""
    return f"{WA_ME}{number}?text={quote(message, safe='')}"


def _international(digits: str) -> str | None:
    if not _all_digits(digits) or digits.startswith("0"):
        return None
    if not _MIN_DIGITS <= len(digits) <= _MAX_DIGITS:
        return None
    # Country codes are prefix-free, so the first of these that matches is the one.
    for size in (3, 2, 1):
        national = _BY_CODE.get(digits[:size])
        if national is not None:
            return digits if national.fullmatch(digits[size:]) else None
    return digits  # a country this table does not know: its length is all there is to check


def _all_digits(text: str) -> bool:
    return text.isascii() and text.isdigit()
