"""Turn what Hotmart posts (webhook 2.0.0 JSON or the v1 form postback) into one `Event`.

Lenient on purpose (SPEC §2): real bodies carry unknown fields, a few camelCase names
(`creationDate`), prices as integers or floats, empty affiliate entries for a direct
sale and no phone at all; `relay.lenient` reads such values and bounds each one.
Only a body with no usable `id` or `event` is refused, with `MalformedEvent` naming
the field and saying what is wrong with it. Buyer documents and addresses are
dropped here: the relay never needs them, so it never stores them.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict

from relay.hotmart_payment import CURRENCY_COUNTRY, parse_payment
from relay.hotmart_payment import Payment as Payment
from relay.lenient import (
    MAX_EMAIL_CHARS,
    MAX_ID_CHARS,
    MAX_PHONE_CHARS,
    MAX_WORD_CHARS,
    as_epoch_ms,
    as_id_text,
    as_name,
    as_object,
    as_price,
    as_text,
    get_field,
    text_problem,
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
# Sale recovery reads these for every sale, whoever subscribed to them. Each tells how a
# purchase ended (or moved on); after any of them a slip's reminder is no longer due.
SETTLING_EVENTS = {
    "PURCHASE_APPROVED": "paid",
    "PURCHASE_COMPLETE": "paid",
    "PURCHASE_CANCELED": "canceled",
    "PURCHASE_EXPIRED": "expired",
    "PURCHASE_REFUNDED": "refunded",
}
PAID_EVENTS = frozenset(name for name, word in SETTLING_EVENTS.items() if word == "paid")
EXPIRED_EVENT = "PURCHASE_EXPIRED"
# What people write between a phone's digits; `str.translate` drops them in one pass.
_PHONE_SEPARATORS = str.maketrans("", "", " -().")
# Hotmart sends one affiliate per sale; a body naming more than this is not a sale.
MAX_AFFILIATES = 16

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
    "dispute": "PURCHASE_PROTEST",  # what v1 really sends for a refund request
    # Hotmart's own spelling (sic); no 2.0 event matches, so nobody subscribes to it.
    "wayting_payment": "PURCHASE_WAITING_PAYMENT",
}


def reminder_cancel_reason(settling_event: str) -> str:
    """Why a reminder was cancelled: "paid before the reminder was due (PURCHASE_APPROVED)"."""
    return f"{SETTLING_EVENTS[settling_event]} before the reminder was due ({settling_event})"


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
    phone: str = ""  # a Brazilian area code (DDD) already joined to the number


class Purchase(_Frozen):
    transaction: str = ""
    status: str = ""
    order_date_ms: int | None = None
    price: Decimal | None = None
    currency: str = ""
    country_iso: str = ""
    country_name: str = ""

    @property
    def buyer_country(self) -> str:
        """`country_iso`, or the country the currency tells when the checkout named none."""
        return self.country_iso or CURRENCY_COUNTRY.get(self.currency, "")


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
        """Hotmart's "send test" button posts product id 0, or "00000" in some events."""
        return self.product.id != "" and self.product.id.strip("0") == ""

    @property
    def named_affiliates(self) -> tuple[Affiliate, ...]:
        """Affiliates with a real code; direct sales carry `""` codes."""
        return tuple(a for a in self.affiliates if a.code)


def parse_json_event(body: Any) -> Event:
    """Map a decoded Hotmart 2.0.0 JSON body onto `Event`.

    A top-level `hottok` (live 2.0 deliveries carry the token there too) is ingest's
    business and is never read into the event, so it is never stored.
    """
    if not isinstance(body, dict):
        raise MalformedEvent("(body)", "expected a JSON object")
    event_id = _required_text(body, "id", MAX_ID_CHARS)
    event_name = _required_text(body, "event", MAX_WORD_CHARS).upper()
    data = as_object(body.get("data"))
    purchase = as_object(data.get("purchase"))
    country = as_object(get_field(purchase, "checkout_country"))
    raw_price = purchase.get("price")
    # Always {value, currency_value} in captures; a bare value is read too, at no cost.
    price = raw_price if isinstance(raw_price, dict) else {"value": raw_price}
    # `currency` is in no capture; reading it as well is harmless.
    currency = as_text(
        get_field(price, "currency_value") or price.get("currency"), MAX_WORD_CHARS
    ).upper()
    buyer = data.get("buyer")
    sale = Purchase(
        transaction=as_text(purchase.get("transaction"), MAX_ID_CHARS),
        status=as_text(purchase.get("status"), MAX_WORD_CHARS),
        order_date_ms=as_epoch_ms(get_field(purchase, "order_date")),
        price=as_price(price.get("value")),
        currency=currency,
        country_iso=as_text(country.get("iso"), MAX_WORD_CHARS).upper(),
        country_name=as_name(country.get("name")),
    )
    return Event(
        id=event_id,
        event=event_name,
        version=as_text(body.get("version"), MAX_WORD_CHARS),
        source="2.0.0",
        created_at_ms=as_epoch_ms(get_field(body, "creation_date")),
        product=_product(data),
        affiliates=_affiliates(data.get("affiliates")),
        buyer=_buyer(buyer) if isinstance(buyer, dict) else None,
        purchase=sale,
        payment=parse_payment(as_object(purchase.get("payment")), sale.buyer_country),
    )


def parse_v1_postback(form: Mapping[str, str]) -> Event:
    """Map the older form-encoded postback onto `Event`."""
    status = _required_text(
        form, "status", MAX_WORD_CHARS, "the v1 postback names its event in `status`"
    ).lower()
    event_name = _V1_STATUS_EVENTS.get(status, f"PURCHASE_{status.upper()}")
    transaction = _required_text(
        form, "transaction", MAX_ID_CHARS, "a v1 postback is identified by it"
    )
    currency = as_text(form.get("currency"), MAX_WORD_CHARS).upper()
    country = CURRENCY_COUNTRY.get(currency, "")
    return Event(
        # v1 has no event id: transaction + status is what Hotmart resends identically.
        id=f"v1:{transaction}:{status}",
        event=event_name,
        version="v1",
        source="v1",
        product=Product(id=as_id_text(form.get("prod")), name=as_name(form.get("prod_name"))),
        affiliates=_affiliates([{"affiliate_code": form.get("aff"), "name": form.get("aff_name")}]),
        buyer=_buyer(
            {
                "email": form.get("email"),
                "name": form.get("name"),
                "checkout_phone_code": form.get("phone_checkout_local_code"),
                "checkout_phone": form.get("phone_checkout_number"),
            }
        ),
        purchase=Purchase(
            transaction=transaction,
            status=status.upper(),
            order_date_ms=as_epoch_ms(form.get("purchase_date")),  # ISO 8601 in v1
            price=as_price(form.get("price")),
            currency=currency,
            country_iso=country,
        ),
        # v1 names its payment fields as 2.0 does, except `payment_type`.
        payment=parse_payment({**form, "type": form.get("payment_type")}, country),
    )


def _product(data: Mapping[str, Any]) -> Product:
    # SWITCH_PLAN and UPDATE_SUBSCRIPTION_CHARGE_DATE carry it under data.subscription.
    product = as_object(data.get("product")) or as_object(
        as_object(data.get("subscription")).get("product")
    )
    return Product(
        id=as_id_text(product.get("id")),
        ucode=as_text(product.get("ucode"), MAX_ID_CHARS),
        name=as_name(product.get("name")),
    )


def _affiliates(value: Any) -> tuple[Affiliate, ...]:
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        return ()
    found = []
    for item in value[:MAX_AFFILIATES]:
        if isinstance(item, dict):
            # A direct sale sends [{"affiliate_code": "", "name": ""}], an older test
            # [{"name": ""}]: both keep an entry with an empty code, meaning "no affiliate".
            # `code` is in no capture; reading it too costs nothing.
            raw_code = get_field(item, "affiliate_code") or item.get("code")
            found.append(Affiliate(code=as_id_text(raw_code), name=as_name(item.get("name"))))
    return tuple(found)


def _buyer(buyer: Mapping[str, Any]) -> Buyer:
    name = as_name(buyer.get("name"))
    if not name:
        first = as_name(get_field(buyer, "first_name"))
        last = as_name(get_field(buyer, "last_name"))
        name = as_name(f"{first} {last}")
    return Buyer(
        name=name,
        email=as_text(buyer.get("email"), MAX_EMAIL_CHARS),
        phone=_phone(
            as_text(get_field(buyer, "checkout_phone_code"), MAX_PHONE_CHARS),
            # `phone` is in no capture; reading it when checkout_phone is absent is harmless.
            as_text(get_field(buyer, "checkout_phone") or buyer.get("phone"), MAX_PHONE_CHARS),
        ),
    )


def _phone(area_code: str, number: str) -> str:
    """Join a Brazilian area code (DDD, two digits) to a local number of 8 or 9 digits.

    International numbers carry their country code inside `checkout_phone`, and a
    number that already holds its DDD is left alone, as is anything else odd (the
    test button sends a nine-digit "area code").
    """
    digits = number.translate(_PHONE_SEPARATORS)
    local = digits.isascii() and digits.isdigit() and len(digits) in (8, 9)
    if local and len(area_code) == 2 and area_code.isascii() and area_code.isdigit():
        return area_code + digits
    return number


def _required_text(body: Mapping[str, Any], key: str, max_chars: int, why: str = "") -> str:
    """The field as text, or `MalformedEvent` saying exactly what is wrong with it."""
    problem = text_problem(body.get(key), max_chars)
    if problem:
        raise MalformedEvent(key, f"{problem}; {why}" if why else problem)
    return as_text(body.get(key), max_chars)
