"""Turn what Hotmart posts (webhook 2.0.0 JSON or the v1 form postback) into one `Event`.

Lenient on purpose: real payloads carry unknown fields, objects sent as strings,
camelCase names, prices as strings and barcodes with spaces. Only a body with no
usable `id` or `event` is refused, with `MalformedEvent` naming the field.
Buyer documents and addresses are dropped here: the relay never needs them, so it
never stores them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from pydantic import BaseModel, ConfigDict

SLIP_EVENT = "PURCHASE_BILLET_PRINTED"
KNOWN_EVENTS = frozenset(
    {
        SLIP_EVENT,
        "PURCHASE_APPROVED",
        "PURCHASE_COMPLETE",
        "PURCHASE_CANCELED",
        "PURCHASE_REFUNDED",
        "PURCHASE_CHARGEBACK",
        "PURCHASE_EXPIRED",
        "PURCHASE_DELAYED",
        "PURCHASE_PROTEST",
        "PURCHASE_OUT_OF_SHOPPING_CART",
        "SUBSCRIPTION_CANCELLATION",
        "SWITCH_PLAN",
        "UPDATE_SUBSCRIPTION_CHARGE_DATE",
        "CLUB_FIRST_ACCESS",
        "CLUB_MODULE_COMPLETED",
    }
)

# Cash methods as Hotmart's sales API names them, when they arrive as payment.type/method.
_NAMED_CASH_METHODS = {
    "OXXO": "OXXO",
    "BALOTO": "Baloto",
    "EFECTY": "Efecty",
    "PAGO_EFECTIVO": "PagoEfectivo",
    "CUPON_DE_PAGO": "Cupón de pago",
    "MULTIBANCO": "Multibanco",
}
# The v1 postback names no country; the sale's currency tells it.
_CURRENCY_COUNTRY = {"MXN": "MX", "COP": "CO", "BRL": "BR", "PEN": "PE", "CLP": "CL"}
_V1_STATUS_EVENTS = {
    "billet_printed": SLIP_EVENT,
    "printed_billet": SLIP_EVENT,
    "approved": "PURCHASE_APPROVED",
    "completed": "PURCHASE_COMPLETE",
    "complete": "PURCHASE_COMPLETE",
    "canceled": "PURCHASE_CANCELED",
    "cancelled": "PURCHASE_CANCELED",
    "refunded": "PURCHASE_REFUNDED",
    "chargeback": "PURCHASE_CHARGEBACK",
    "expired": "PURCHASE_EXPIRED",
    "delayed": "PURCHASE_DELAYED",
    "protested": "PURCHASE_PROTEST",
}


_MAX_EPOCH_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z


class MalformedEvent(ValueError):
    """The body cannot be understood; `field` names the culprit for the 400 reply."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class Affiliate(_Frozen):
    code: str
    name: str = ""


class Product(_Frozen):
    id: str = ""
    ucode: str = ""
    name: str = ""


class Buyer(_Frozen):
    name: str = ""
    email: str = ""
    phone: str = ""


class Payment(_Frozen):
    type: str = ""  # as Hotmart sent it, upper-cased: BILLET, CASH_PAYMENT, PIX, CREDIT_CARD...
    method: str | None = None  # human name when this is a slip: Boleto, OXXO, Baloto, Efecty, Pix
    slip_url: str | None = None
    slip_code: str | None = None  # digits only for barcodes; spaces removed
    pix_code: str | None = None
    pix_qrcode: str | None = None
    expires_at_ms: int | None = None
    installments: int | None = None

    @property
    def has_slip(self) -> bool:
        return self.method is not None and bool(self.slip_url or self.slip_code or self.pix_code)


class Purchase(_Frozen):
    transaction: str = ""
    status: str = ""
    order_date_ms: int | None = None
    price: Decimal | None = None
    currency: str = ""
    country_iso: str = ""
    country_name: str = ""


class Event(_Frozen):
    """One Hotmart notification, normalised; what the store keeps and templates see."""

    id: str
    event: str
    version: str = ""
    source: str = "2.0.0"  # "2.0.0" JSON webhook or "v1" form postback
    created_at_ms: int | None = None
    product: Product = Product()
    affiliates: tuple[Affiliate, ...] = ()
    buyer: Buyer | None = None
    purchase: Purchase = Purchase()
    payment: Payment = Payment()

    @property
    def is_test(self) -> bool:
        """Hotmart's "send test" button posts product id 0."""
        return self.product.id == "0"

    @property
    def named_affiliates(self) -> tuple[Affiliate, ...]:
        """Affiliates with a real code; direct sales carry `""` codes."""
        return tuple(a for a in self.affiliates if a.code)


def parse_json_event(body: Any) -> Event:
    """Map a decoded Hotmart 2.0.0 JSON body onto `Event`."""
    if not isinstance(body, dict):
        raise MalformedEvent("(body)", "expected a JSON object")
    event_id = _required_text(body, "id")
    event_name = _required_text(body, "event").upper()
    data = _obj(body.get("data"))
    purchase = _obj(data.get("purchase"))
    payment = _obj(purchase.get("payment"))
    country = _obj(_get(purchase, "checkout_country"))
    raw_price = purchase.get("price")
    # Usually {value, currency_value}; a bare number or numeric string is the value itself.
    price = raw_price if isinstance(raw_price, dict) else {"value": raw_price}
    currency = _text(_get(price, "currency_value") or _get(price, "currency")).upper()
    country_iso = _text(country.get("iso")).upper()
    buyer = data.get("buyer")
    return Event(
        id=event_id,
        event=event_name,
        version=_text(body.get("version")),
        source="2.0.0",
        created_at_ms=_epoch_ms(_get(body, "creation_date")),
        product=_product(_obj(data.get("product"))),
        affiliates=_affiliates(data.get("affiliates")),
        buyer=_buyer(buyer) if isinstance(buyer, dict) else None,
        purchase=Purchase(
            transaction=_text(purchase.get("transaction")),
            status=_text(purchase.get("status")),
            order_date_ms=_epoch_ms(_get(purchase, "order_date")),
            price=_decimal(price.get("value")),
            currency=currency,
            country_iso=country_iso,
            country_name=_text(country.get("name")),
        ),
        # With no checkout_country, the currency still tells OXXO (MXN) from Baloto (COP).
        payment=_payment(payment, country_iso or _CURRENCY_COUNTRY.get(currency, "")),
    )


def parse_v1_postback(form: Mapping[str, str]) -> Event:
    """Map the older form-encoded postback onto `Event`."""
    status = _text(form.get("status")).lower()
    if not status:
        raise MalformedEvent("status", "missing; the v1 postback names its event in `status`")
    event_name = _V1_STATUS_EVENTS.get(status, f"PURCHASE_{status.upper()}")
    transaction = _text(form.get("transaction"))
    if not transaction:
        raise MalformedEvent("transaction", "missing; a v1 postback needs it to be identified")
    currency = _text(form.get("currency")).upper()
    country = _CURRENCY_COUNTRY.get(currency, "")
    phone = _text(form.get("phone_checkout_local_code")) + _text(form.get("phone_checkout_number"))
    payment = {
        "type": form.get("payment_type"),
        "billet_url": form.get("billet_url"),
        "billet_barcode": form.get("billet_barcode"),
        "pix_code": form.get("pix_code"),
        "pix_qrcode": form.get("pix_qrcode"),
        "pix_expiration_date": form.get("pix_expiration_date"),
        "installments_number": form.get("installments_number"),
    }
    return Event(
        # v1 has no event id: transaction + status is what Hotmart resends identically.
        id=f"v1:{transaction}:{status}",
        event=event_name,
        version="v1",
        source="v1",
        product=Product(id=_text(form.get("prod")), name=_text(form.get("prod_name"))),
        affiliates=_affiliates([{"affiliate_code": form.get("aff"), "name": form.get("aff_name")}]),
        buyer=_buyer(
            {"email": form.get("email"), "name": form.get("name"), "checkout_phone": phone}
        ),
        purchase=Purchase(
            transaction=transaction,
            status=status.upper(),
            price=_decimal(form.get("price")),
            currency=currency,
            country_iso=country,
        ),
        payment=_payment(payment, country),
    )


def _payment(payment: Mapping[str, Any], country_iso: str) -> Payment:
    kind = _text(_get(payment, "type")).upper()
    named = _text(_get(payment, "method") or _get(payment, "payment_method")).upper()
    slip_url = _text(_get(payment, "billet_url")) or None
    barcode = _slip_code(_text(_get(payment, "billet_barcode")))
    pix_code = _text(_get(payment, "pix_code")) or None
    method = _slip_method(kind, named, country_iso, slip_url or "")
    expires = _epoch_ms(
        _get(payment, "pix_expiration_date")
        or _get(payment, "billet_expiration_date")
        or _get(payment, "expiration_date")
        or _get(payment, "due_date")
    )
    return Payment(
        type=kind,
        method=method,
        slip_url=slip_url,
        slip_code=barcode,
        pix_code=pix_code,
        pix_qrcode=_text(_get(payment, "pix_qrcode")) or None,
        expires_at_ms=expires,
        installments=_int(_get(payment, "installments_number")),
    )


def _slip_code(text: str) -> str | None:
    """Digits only when the code is a number written with separators, as boletos are
    ("34191.09669 36967.100540 ..."); otherwise just without whitespace."""
    compact = re.sub(r"\s+", "", text)
    digits = re.sub(r"[.\-]", "", compact)
    return (digits if digits.isdecimal() and digits.isascii() else compact) or None


def _slip_method(kind: str, named: str, country_iso: str, slip_url: str) -> str | None:
    if kind == "BILLET":
        return "Boleto"
    if kind == "PIX":
        return "Pix"
    if named in _NAMED_CASH_METHODS:
        return _NAMED_CASH_METHODS[named]
    if kind in _NAMED_CASH_METHODS:
        return _NAMED_CASH_METHODS[kind]
    if kind == "CASH_PAYMENT":
        if country_iso == "MX":
            return "OXXO"
        if country_iso == "CO":
            return "Efecty" if "efecty" in slip_url.lower() else "Baloto"
        return "Cash"
    return None


def _product(product: Mapping[str, Any]) -> Product:
    return Product(
        id=_id_text(product.get("id")),
        ucode=_text(product.get("ucode")),
        name=_text(product.get("name")),
    )


def _affiliates(value: Any) -> tuple[Affiliate, ...]:
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        return ()
    found = []
    for item in value:
        if isinstance(item, dict):
            code = _text(_get(item, "affiliate_code") or item.get("code")).strip()
            found.append(Affiliate(code=code, name=_text(item.get("name"))))
    return tuple(found)


def _buyer(buyer: Mapping[str, Any]) -> Buyer:
    name = _text(buyer.get("name"))
    if not name:
        name = " ".join(
            part
            for part in (_text(_get(buyer, "first_name")), _text(_get(buyer, "last_name")))
            if part
        )
    return Buyer(
        name=name,
        email=_text(buyer.get("email")),
        phone=_text(_get(buyer, "checkout_phone") or buyer.get("phone")),
    )


def _get(mapping: Mapping[str, Any], snake_key: str) -> Any:
    """Read `snake_key`, falling back to its camelCase spelling (`creationDate`)."""
    if snake_key in mapping:
        return mapping[snake_key]
    head, *rest = snake_key.split("_")
    return mapping.get(head + "".join(word.capitalize() for word in rest))


def _obj(value: Any) -> dict[str, Any]:
    # Real payloads send objects as strings ("subscription": "192.168.4.57"): treat as absent.
    return value if isinstance(value, dict) else {}


def _required_text(body: Mapping[str, Any], key: str) -> str:
    value = body.get(key)
    if isinstance(value, bool) or not isinstance(value, str | int) or not str(value).strip():
        raise MalformedEvent(key, "missing or empty")
    return str(value).strip()


def _id_text(value: Any) -> str:
    """An id as text: 3012345.0 (a number that went through a float) reads as "3012345"."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return _text(value)


def _text(value: Any) -> str:
    if value is None or isinstance(value, dict | list):
        return ""
    return str(value).strip()


def _int(value: Any) -> int | None:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None


def _decimal(value: Any) -> Decimal | None:
    if value is None or isinstance(value, bool | dict | list):
        return None
    try:
        parsed = Decimal(str(value).strip().replace(",", "."))
    except InvalidOperation:
        return None
    return parsed if parsed.is_finite() else None


def _epoch_ms(value: Any) -> int | None:
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


def _plausible_ms(epoch_ms: int) -> int | None:
    # Outside 1970..9999 it is not a real date, and datetime could not represent it anyway.
    return epoch_ms if 0 <= epoch_ms <= _MAX_EPOCH_MS else None
