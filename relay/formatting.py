"""Pure helpers that turn event data into text people read: codes, amounts, dates, words.

`relay.render` registers each as a Jinja filter. None depends on a locale library:
the three locales the relay speaks need only separators and a handful of words, and
doing it here keeps the output deterministic across machines.
"""

from __future__ import annotations

import json
import unicodedata
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from relay.hotmart_payment import web_url
from relay.local_time import format_local

LOCALES = ("es", "pt", "en")
# Subject prefix for a `relay send-test` notification, in the affiliate's language.
TEST_TAGS = {"es": "[PRUEBA]", "pt": "[TESTE]", "en": "[TEST]"}
# Currencies whose sales carry no cents in practice (Hotmart's COP and CLP prices are whole).
_NO_CENTS = frozenset({"COP", "CLP", "PYG", "JPY", "KRW"})
# (thousands, decimal) separators, one rule per locale so output is predictable. es uses the
# decimal comma of Colombia and most of Latin America, although Mexico writes a decimal point.
_SEPARATORS = {"es": (".", ","), "pt": (".", ","), "en": (",", ".")}
# An amount is written the way its own country writes it: an affiliate in Mexico reads
# MXN 1,499.00 (point decimals), one in Colombia COP 189.900. Other currencies follow the
# reader's locale.
_CURRENCY_SEPARATORS = {
    "MXN": (",", "."),
    "USD": (",", "."),
    "PEN": (",", "."),
    "BRL": (".", ","),
    "COP": (".", ","),
    "CLP": (".", ","),
    "ARS": (".", ","),
    "EUR": (".", ","),
}
# A boleto's linha digitável: fields 1-3 with their check digit, the general check digit,
# then due-date factor and value. Lengths add up to 47.
_BOLETO_GROUPS = ((5, 5), (5, 6), (5, 6), (1,), (14,))
_BOLETO_LENGTH = 47
_GROUP_SIZE = 4  # how banks print convênio codes and OXXO/Baloto references
# A Decimal is written out in full while it needs no more than this many digits on
# either side of the point; past it, in scientific notation, which stays short.
_PLAIN_DECIMAL_DIGITS = 30

# Hotmart event names in words, (es, pt, en). An unknown event shows its raw name.
_EVENT_TITLES = {
    "PURCHASE_BILLET_PRINTED": (
        "Ficha de pago generada",
        "Guia de pagamento gerada",
        "Payment slip issued",
    ),
    "PURCHASE_APPROVED": ("Compra aprobada", "Compra aprovada", "Purchase approved"),
    "PURCHASE_COMPLETE": ("Compra completada", "Compra concluída", "Purchase complete"),
    "PURCHASE_CANCELED": ("Compra cancelada", "Compra cancelada", "Purchase cancelled"),
    "PURCHASE_REFUNDED": ("Compra reembolsada", "Compra reembolsada", "Purchase refunded"),
    "PURCHASE_CHARGEBACK": ("Contracargo", "Chargeback", "Chargeback"),
    "PURCHASE_EXPIRED": ("Compra vencida", "Compra expirada", "Purchase expired"),
    "PURCHASE_DELAYED": ("Pago atrasado", "Pagamento atrasado", "Payment overdue"),
    "PURCHASE_PROTEST": ("Solicitud de reembolso", "Pedido de reembolso", "Refund requested"),
    "PURCHASE_OUT_OF_SHOPPING_CART": (
        "Carrito abandonado",
        "Abandono de carrinho",
        "Checkout abandoned",
    ),
    "SUBSCRIPTION_CANCELLATION": (
        "Suscripción cancelada",
        "Assinatura cancelada",
        "Subscription cancelled",
    ),
    "SWITCH_PLAN": ("Cambio de plan", "Troca de plano", "Plan changed"),
    "UPDATE_SUBSCRIPTION_CHARGE_DATE": (
        "Nueva fecha de cobro de la suscripción",
        "Nova data de cobrança da assinatura",
        "Subscription charge date changed",
    ),
    "CLUB_FIRST_ACCESS": (
        "Primer acceso al área de miembros",
        "Primeiro acesso à área de membros",
        "First access to the members area",
    ),
    "CLUB_MODULE_COMPLETED": (
        "Módulo completado en el área de miembros",
        "Módulo concluído na área de membros",
        "Members area module completed",
    ),
}


def format_code(code: str | None, method: str | None = None) -> str:
    """Group a barcode's digits for reading; leave Pix and non-digit codes exactly as sent."""
    if not code:
        return ""
    # A Pix copy-and-paste code is only valid verbatim; so is anything that is not digits.
    if method == "Pix" or not (code.isascii() and code.isdigit()):
        return code
    if len(code) == _BOLETO_LENGTH:
        fields, start = [], 0
        for group in _BOLETO_GROUPS:
            parts = []
            for size in group:
                parts.append(code[start : start + size])
                start += size
            fields.append(".".join(parts))
        return " ".join(fields)
    return " ".join(code[i : i + _GROUP_SIZE] for i in range(0, len(code), _GROUP_SIZE))


def format_amount(value: Decimal | None, currency: str, locale: str) -> str:
    """`MXN 499.00`, `R$ 997,00`, `COP 189.900`: the sale's currency in its own notation."""
    if value is None or not value.is_finite():
        return ""
    currency = currency.upper()
    places = 0 if currency in _NO_CENTS else 2
    try:
        rounded = value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)
    except InvalidOperation:  # more digits than the decimal context holds: show it raw
        return f"{currency} {value}".strip()
    thousands, point = _CURRENCY_SEPARATORS.get(
        currency, _SEPARATORS.get(locale, _SEPARATORS["en"])
    )
    whole, _, cents = f"{abs(rounded):f}".partition(".")
    number = f"{int(whole):,}".replace(",", thousands) + (point + cents if cents else "")
    if rounded < 0:
        number = "-" + number
    # Brazilians read "R$"; elsewhere the ISO code avoids the ambiguous "$".
    symbol = "R$" if currency == "BRL" and locale == "pt" else currency
    return f"{symbol} {number}" if symbol else number


def format_expiry(epoch_ms: int | None, country_iso: str = "", locale: str = "") -> str:
    """`28/11/2025 16:20 (horário de Brasília)`: in the buyer country's zone, named.

    Without a known country it is `2025-11-28 19:20 UTC`, which says it is UTC.
    """
    moment = _utc(epoch_ms)
    return format_local(moment, country_iso, locale) if moment else ""


def format_phone(phone: str | None, country_iso: str = "") -> str:
    """`+55 31 99999-9999` for a Brazilian number; any other number as it was sent.

    Brazilian when it starts with +55, or when the sale is in Brazil and the number
    has no country code of its own. Only the shapes Brazil uses (a two-digit area
    code and 8 or 9 digits) are rewritten; anything else is left for a person to read.
    """
    text = (phone or "").strip()
    digits = "".join(ch for ch in text if ch.isascii() and ch.isdigit())
    if text.startswith("+55") or (country_iso.upper() == "BR" and not text.startswith("+")):
        if text.startswith("+55") or (len(digits) in (12, 13) and digits.startswith("55")):
            digits = digits[2:]
        if len(digits) in (10, 11):
            area, number = digits[:2], digits[2:]
            return f"+55 {area} {number[:-4]}-{number[-4:]}"
    return text


def iso_utc(epoch_ms: int | None) -> str | None:
    """ISO 8601 in UTC with a `Z`, or None when the time is unknown or out of range."""
    moment = _utc(epoch_ms)
    if moment is None:
        return None
    spec = "milliseconds" if moment.microsecond else "seconds"
    return moment.isoformat(timespec=spec).replace("+00:00", "Z")


def single_line(text: str) -> str:
    """Fold every line break and control character into one space, so a header stays one line."""
    # Cc covers CR, LF, VT, FF and C1 controls; Zl/Zp are U+2028/U+2029, which some
    # MIME tools also treat as line ends.
    cleaned = "".join(" " if unicodedata.category(ch) in ("Cc", "Zl", "Zp") else ch for ch in text)
    return " ".join(cleaned.split())


def http_url(url: str | None) -> str:
    """The URL if it is a well-formed http(s) one, else empty; never raises.

    An href must never run `javascript:`, and a malformed URL from the event must
    cost the affiliate only the link, not the message.
    """
    return web_url(url) or ""


def event_title(event: str, locale: str) -> str:
    """The Hotmart event name in words, in `locale`."""
    titles = _EVENT_TITLES.get(event)
    if titles is None or locale not in LOCALES:
        return event
    return titles[LOCALES.index(locale)]


def json_dumps(value: Any, **kwargs: Any) -> str:
    """`json.dumps`, except a Decimal becomes its exact text as a JSON number (never a float).

    Written out in full (`189900.10`) only while that stays short; a Decimal with a huge
    exponent keeps its short scientific form (`1E+999999999`), which is still a JSON
    number, instead of expanding to a billion digits.
    """
    if isinstance(value, Decimal):
        if not value.is_finite():
            return "null"
        exponent = value.as_tuple().exponent
        short = isinstance(exponent, int) and exponent >= -_PLAIN_DECIMAL_DIGITS
        return f"{value:f}" if short and value.adjusted() < _PLAIN_DECIMAL_DIGITS else str(value)
    return json.dumps(value, **kwargs)


def _utc(epoch_ms: int | None) -> datetime | None:
    if epoch_ms is None:
        return None
    try:
        moment = datetime.fromtimestamp(epoch_ms // 1000, UTC)
    except (OverflowError, OSError, ValueError):
        return None
    return moment.replace(microsecond=(epoch_ms % 1000) * 1000)
