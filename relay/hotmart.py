"""Turn what Hotmart posts (webhook 2.0.0 JSON or the v1 form postback) into one `Event`.

Lenient on purpose: real payloads carry unknown fields, objects sent as strings,
camelCase names, prices as strings and barcodes with spaces (`relay.lenient` reads
them). Only a body with no usable `id` or `event` is refused, with `MalformedEvent`
naming the field.
Buyer documents and addresses are dropped here: the relay never needs them, so it
never stores them.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict

from relay.lenient import (
    as_decimal,
    as_epoch_ms,
    as_id_text,
    as_int,
    as_object,
    as_text,
    compact_code,
    get_field,
)

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
    data = as_object(body.get("data"))
    purchase = as_object(data.get("purchase"))
    payment = as_object(purchase.get("payment"))
    country = as_object(get_field(purchase, "checkout_country"))
    raw_price = purchase.get("price")
    # Usually {value, currency_value}; a bare number or numeric string is the value itself.
    price = raw_price if isinstance(raw_price, dict) else {"value": raw_price}
    currency = as_text(get_field(price, "currency_value") or get_field(price, "currency")).upper()
    country_iso = as_text(country.get("iso")).upper()
    buyer = data.get("buyer")
    return Event(
        id=event_id,
        event=event_name,
        version=as_text(body.get("version")),
        source="2.0.0",
        created_at_ms=as_epoch_ms(get_field(body, "creation_date")),
        product=_product(as_object(data.get("product"))),
        affiliates=_affiliates(data.get("affiliates")),
        buyer=_buyer(buyer) if isinstance(buyer, dict) else None,
        purchase=Purchase(
            transaction=as_text(purchase.get("transaction")),
            status=as_text(purchase.get("status")),
            order_date_ms=as_epoch_ms(get_field(purchase, "order_date")),
            price=as_decimal(price.get("value")),
            currency=currency,
            country_iso=country_iso,
            country_name=as_text(country.get("name")),
        ),
        # With no checkout_country, the currency still tells OXXO (MXN) from Baloto (COP).
        payment=_payment(payment, country_iso or _CURRENCY_COUNTRY.get(currency, "")),
    )


def parse_v1_postback(form: Mapping[str, str]) -> Event:
    """Map the older form-encoded postback onto `Event`."""
    status = as_text(form.get("status")).lower()
    if not status:
        raise MalformedEvent("status", "missing; the v1 postback names its event in `status`")
    event_name = _V1_STATUS_EVENTS.get(status, f"PURCHASE_{status.upper()}")
    transaction = as_text(form.get("transaction"))
    if not transaction:
        raise MalformedEvent("transaction", "missing; a v1 postback needs it to be identified")
    currency = as_text(form.get("currency")).upper()
    country = _CURRENCY_COUNTRY.get(currency, "")
    phone = as_text(form.get("phone_checkout_local_code")) + as_text(
        form.get("phone_checkout_number")
    )
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
        product=Product(id=as_text(form.get("prod")), name=as_text(form.get("prod_name"))),
        affiliates=_affiliates([{"affiliate_code": form.get("aff"), "name": form.get("aff_name")}]),
        buyer=_buyer(
            {"email": form.get("email"), "name": form.get("name"), "checkout_phone": phone}
        ),
        purchase=Purchase(
            transaction=transaction,
            status=status.upper(),
            price=as_decimal(form.get("price")),
            currency=currency,
            country_iso=country,
        ),
        payment=_payment(payment, country),
    )


def _payment(payment: Mapping[str, Any], country_iso: str) -> Payment:
    kind = as_text(get_field(payment, "type")).upper()
    named = as_text(get_field(payment, "method") or get_field(payment, "payment_method")).upper()
    slip_url = as_text(get_field(payment, "billet_url")) or None
    barcode = compact_code(as_text(get_field(payment, "billet_barcode")))
    pix_code = as_text(get_field(payment, "pix_code")) or None
    method = _slip_method(kind, named, country_iso, slip_url or "")
    expires = as_epoch_ms(
        get_field(payment, "pix_expiration_date")
        or get_field(payment, "billet_expiration_date")
        or get_field(payment, "expiration_date")
        or get_field(payment, "due_date")
    )
    return Payment(
        type=kind,
        method=method,
        slip_url=slip_url,
        slip_code=barcode,
        pix_code=pix_code,
        pix_qrcode=as_text(get_field(payment, "pix_qrcode")) or None,
        expires_at_ms=expires,
        installments=as_int(get_field(payment, "installments_number")),
    )


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
        id=as_id_text(product.get("id")),
        ucode=as_text(product.get("ucode")),
        name=as_text(product.get("name")),
    )


def _affiliates(value: Any) -> tuple[Affiliate, ...]:
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        return ()
    found = []
    for item in value:
        if isinstance(item, dict):
            code = as_text(get_field(item, "affiliate_code") or item.get("code")).strip()
            found.append(Affiliate(code=code, name=as_text(item.get("name"))))
    return tuple(found)


def _buyer(buyer: Mapping[str, Any]) -> Buyer:
    name = as_text(buyer.get("name"))
    if not name:
        name = " ".join(
            part
            for part in (
                as_text(get_field(buyer, "first_name")),
                as_text(get_field(buyer, "last_name")),
            )
            if part
        )
    return Buyer(
        name=name,
        email=as_text(buyer.get("email")),
        phone=as_text(get_field(buyer, "checkout_phone") or buyer.get("phone")),
    )


def _required_text(body: Mapping[str, Any], key: str) -> str:
    value = body.get(key)
    if isinstance(value, bool) or not isinstance(value, str | int) or not str(value).strip():
        raise MalformedEvent(key, "missing or empty")
    return str(value).strip()
