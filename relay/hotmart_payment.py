"""`data.purchase.payment` of a Hotmart event: the slip's link and codes, and its name.

What real bodies carry (SPEC §2): `type` (`BILLET`, `PIX`, `CREDIT_CARD`, `WALLET`,
`PICPAY`; the documented enum adds `CASH_PAYMENT`, `FINANCED_BILLET` and others),
`billet_url`, `billet_barcode`, `pix_code`, `pix_qrcode`, `pix_expiration_date` and
`installments_number`. No webhook carries `payment.method`, `payment_method` or a
brand such as OXXO as the type: those belong to Hotmart's sales REST API. So the
human name of a slip is worked out here from the type, the buyer's country and the
currency, and is neutral when that cannot be told honestly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict

from relay.lenient import (
    MAX_CODE_CHARS,
    MAX_PIX_CODE_CHARS,
    MAX_URL_CHARS,
    MAX_WORD_CHARS,
    as_epoch_ms,
    as_int,
    as_text,
    compact_code,
    get_field,
)

# Neutral names, for a slip whose brand cannot be told from the event. Templates word
# these in the reader's language; the webhook JSON carries them as they are.
CASH_SLIP = "cash payment slip"
SLIP = "payment slip"
NEUTRAL_METHODS = frozenset({CASH_SLIP, SLIP})

_BOLETO_TYPES = frozenset({"BILLET", "FINANCED_BILLET"})
# Every `payment.type` seen in real bodies or in Hotmart's documented enum (SPEC §2): what
# `recovery.slip_validity` may name.
PAYMENT_TYPES = frozenset(
    {
        "BILLET",
        "CASH_PAYMENT",
        "CREDIT_CARD",
        "DIRECT_BANK_TRANSFER",
        "DIRECT_DEBIT",
        "FINANCED_BILLET",
        "FINANCED_INSTALLMENT",
        "GOOGLE_PAY",
        "HOTCARD",
        "HYBRID",
        "MANUAL_TRANSFER",
        "PAYPAL",
        "PAYPAL_INTERNACIONAL",
        "PICPAY",
        "PIX",
        "SAMSUNG_PAY",
        "WALLET",
    }
)
# Hotmart offers up to 12 installments; more than this is not a number of installments.
MAX_INSTALLMENTS = 99
# The v1 postback names no country, and a 2.0 body may send `checkout_country: {}`:
# the sale's currency still tells the country.
CURRENCY_COUNTRY = {"MXN": "MX", "COP": "CO", "BRL": "BR", "PEN": "PE", "CLP": "CL"}


class Payment(BaseModel):
    """How the buyer pays: what an affiliate needs to help them finish the purchase."""

    model_config = ConfigDict(frozen=True)

    type: str = ""  # as Hotmart sent it, upper-cased: BILLET, CASH_PAYMENT, PIX, CREDIT_CARD...
    # Boleto, OXXO, Baloto, Efecty or Pix; CASH_SLIP or SLIP when the brand is unsure;
    # None when the payment is not a slip (a card, PayPal...).
    method: str | None = None
    slip_url: str | None = None  # only an http(s) URL that parses
    slip_code: str | None = None  # digits only for barcodes; spaces removed
    pix_code: str | None = None  # verbatim: the EMV code is valid only as sent
    pix_qrcode: str | None = None  # a link to the QR image; only an http(s) URL that parses
    expires_at_ms: int | None = None  # only Pix has one (`pix_expiration_date`)
    installments: int | None = None

    @property
    def has_slip(self) -> bool:
        """A link or a code the buyer can pay with, whatever `type` says (SPEC §2)."""
        return bool(self.slip_url or self.slip_code or self.pix_code)


def parse_payment(payment: Mapping[str, Any], country_iso: str) -> Payment:
    """Map `data.purchase.payment` (or the v1 form's same-named fields) onto `Payment`."""
    kind = as_text(get_field(payment, "type"), MAX_WORD_CHARS).upper()
    slip_url = web_url(get_field(payment, "billet_url"))
    barcode = compact_code(as_text(get_field(payment, "billet_barcode"), MAX_CODE_CHARS))
    pix_code = as_text(get_field(payment, "pix_code"), MAX_PIX_CODE_CHARS) or None
    has_slip = bool(slip_url or barcode or pix_code)
    return Payment(
        type=kind,
        method=slip_method(kind, country_iso, slip_url or "", has_slip, bool(pix_code)),
        slip_url=slip_url,
        slip_code=barcode,
        pix_code=pix_code,
        pix_qrcode=web_url(get_field(payment, "pix_qrcode")),
        # No capture has a boleto or cash expiry (no `billet_expiration_date`,
        # `expiration_date` or `due_date`): only Pix codes say when they lapse.
        expires_at_ms=as_epoch_ms(get_field(payment, "pix_expiration_date")),
        installments=as_int(get_field(payment, "installments_number"), 0, MAX_INSTALLMENTS),
    )


def slip_method(
    kind: str, country_iso: str, slip_url: str, has_slip: bool, has_pix_code: bool
) -> str | None:
    """The human name of the payment method, or None when it is not a slip at all."""
    if kind == "PIX":
        return "Pix"
    if kind in _BOLETO_TYPES and country_iso in ("", "BR"):
        return "Boleto"
    if kind in _BOLETO_TYPES or kind == "CASH_PAYMENT":
        return _cash_method(country_iso, slip_url)
    if has_pix_code:
        return "Pix"
    return SLIP if has_slip else None


def web_url(value: Any) -> str | None:
    """An http(s) URL with a host that `urlsplit` can read, else None; never raises.

    A slip link comes from the event, so a malformed one (`https://x.example[/x`,
    which makes `urlsplit` raise) is the event's fault: the slip goes out without it.
    """
    url = as_text(value, MAX_URL_CHARS)
    # No whitespace and nothing unprintable: the space is the one character that is both
    # printable and whitespace, so this is one C-speed pass, not one call per character.
    if not url or " " in url or not url.isprintable():
        return None
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError for a port that is not a number in range
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    return url


def _cash_method(country_iso: str, slip_url: str) -> str:
    if country_iso == "MX":
        return "OXXO"  # Hotmart's only cash slip in Mexico
    if country_iso == "CO":
        # Colombia has two cash networks and the event does not say which: only the
        # slip's own link may name one. Otherwise stay neutral rather than guess.
        url = slip_url.lower()
        if "efecty" in url:
            return "Efecty"
        if "baloto" in url:
            return "Baloto"
    return CASH_SLIP
