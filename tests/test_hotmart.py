"""Hotmart 2.0.0 JSON and the v1 form postback → `Event` (SPEC §2): fixtures, quirks, refusals."""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest

from relay.hotmart import (
    KNOWN_EVENTS,
    MAX_AFFILIATES,
    SLIP_EVENT,
    Affiliate,
    Buyer,
    Event,
    MalformedEvent,
    parse_json_event,
    parse_v1_postback,
)
from relay.hotmart_payment import CASH_SLIP, SLIP
from relay.lenient import (
    MAX_CODE_CHARS,
    MAX_EMAIL_CHARS,
    MAX_ID_CHARS,
    MAX_NAME_CHARS,
    MAX_PHONE_CHARS,
    MAX_PIX_CODE_CHARS,
    MAX_URL_CHARS,
    MAX_WORD_CHARS,
)

FIXTURES = Path(__file__).parent / "fixtures"
BOLETO_BARCODE = "34191096693696710054089356830003510720000099700"
PIX_CODE = (
    "00020101021226870014br.gov.bcb.pix2565qrcode.example/pix/v2/cobv/"
    "9d36b84f5a2e4c2b8f0f0f0f0f0f0f0f5204000053039865802BR5920Hotmart Example"
    "6009SAO PAULO62070503***6304ABCD"
)


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text(encoding="utf-8"))
    return data


def v1_form(name: str = "v1_postback_billet_printed.form") -> dict[str, str]:
    text = (FIXTURES / name).read_text(encoding="utf-8").strip()
    return dict(parse_qsl(text, keep_blank_values=True))


def payment_of(body: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = body["data"]["purchase"]["payment"]
    return found


@dataclass(frozen=True)
class Expected:
    event: str
    type: str
    method: str | None
    slip_url: str | None
    slip_code: str | None
    price: Decimal
    currency: str
    country: str
    affiliates: tuple[str, ...]
    buyer: Buyer
    transaction: str
    pix_code: str | None = None
    pix_qrcode: str | None = None
    expires_at_ms: int | None = None
    product_id: str = "3012345"


MARIA = Buyer(name="María González", email="maria.gonzalez@example.com", phone="+52 55 1234 5678")
ANA = Buyer(name="Ana Souza", email="ana.souza@example.com", phone="11987654321")

JSON_FIXTURES = {
    "billet_printed_oxxo.json": Expected(
        event=SLIP_EVENT,
        type="CASH_PAYMENT",
        method="OXXO",
        slip_url="https://pay.hotmart.example/oxxo/HP1764271200123",
        slip_code="93000004217642712001230000499007",
        price=Decimal("499"),
        currency="MXN",
        country="MX",
        affiliates=("K12345678M",),
        buyer=MARIA,
        transaction="HP1764271200123",
    ),
    "billet_printed_baloto.json": Expected(
        event=SLIP_EVENT,
        type="CASH_PAYMENT",
        method="Baloto",
        slip_url="https://pay.hotmart.example/baloto/HP1764271300456",
        slip_code="770001764271300456",
        price=Decimal("189900"),
        currency="COP",
        country="CO",
        affiliates=("K12345678M",),
        buyer=Buyer(
            name="Andrés Rojas", email="andres.rojas@example.com", phone="+57 300 123 4567"
        ),
        transaction="HP1764271300456",
    ),
    "billet_printed_boleto.json": Expected(
        event=SLIP_EVENT,
        type="BILLET",
        method="Boleto",
        slip_url="https://hotm.art/bHP0970394859",
        slip_code=BOLETO_BARCODE,
        price=Decimal("997"),
        currency="BRL",
        country="BR",
        affiliates=("P98765432X",),
        buyer=ANA,
        transaction="HP0970394859",
    ),
    "billet_printed_pix.json": Expected(
        event=SLIP_EVENT,
        type="PIX",
        method="Pix",
        slip_url=None,
        slip_code=None,
        pix_code=PIX_CODE,
        pix_qrcode="https://pay.hotmart.example/pix/qr/HP0970394999.png",
        expires_at_ms=1764357600000,
        price=Decimal("997"),
        currency="BRL",
        country="BR",
        affiliates=("P98765432X",),
        buyer=ANA,
        transaction="HP0970394999",
    ),
    "billet_printed_no_affiliate.json": Expected(
        event=SLIP_EVENT,
        type="CASH_PAYMENT",
        method="OXXO",
        slip_url="https://pay.hotmart.example/oxxo/HP1764271200123",
        slip_code="93000004217642712001230000499007",
        price=Decimal("499"),
        currency="MXN",
        country="MX",
        affiliates=(),
        buyer=MARIA,
        transaction="HP1764271200123",
    ),
    "purchase_approved_oxxo.json": Expected(
        event="PURCHASE_APPROVED",
        type="CASH_PAYMENT",
        method="OXXO",
        slip_url="https://pay.hotmart.example/oxxo/HP1764271200123",
        slip_code="93000004217642712001230000499007",
        price=Decimal("499"),
        currency="MXN",
        country="MX",
        affiliates=("K12345678M",),
        buyer=MARIA,
        transaction="HP1764271200123",
    ),
    "billet_printed_financed_billet.json": Expected(
        event=SLIP_EVENT,
        type="FINANCED_BILLET",
        method="Boleto",
        slip_url="https://hotm.art/bHP1764271600321",
        slip_code="23793381286000823451696001234508813240000019970",
        price=Decimal("1997"),
        currency="BRL",
        country="BR",
        affiliates=("P98765432X",),
        # "Carla Lima " ends in a space, as real names may; the DDD joins the number.
        buyer=Buyer(name="Carla Lima", email="carla.lima@example.com", phone="31991234567"),
        transaction="HP1764271600321",
    ),
    "billet_printed_cash_co.json": Expected(
        event=SLIP_EVENT,
        type="CASH_PAYMENT",
        method=CASH_SLIP,  # Colombia, and nothing says whether Efecty or Baloto
        slip_url="https://pay.hotmart.example/slip/HP1764271700654",
        slip_code="4150000001764271700654",
        price=Decimal("189900"),
        currency="COP",
        country="CO",
        affiliates=("K12345678M",),
        buyer=Buyer(name="Camila Ortiz", email="camila.ortiz@example.com"),  # no phone at all
        transaction="HP1764271700654",
    ),
    "billet_printed_affiliate_without_code.json": Expected(
        event=SLIP_EVENT,
        type="PIX",
        method="Pix",
        slip_url=None,
        slip_code=None,
        pix_code=(
            "00020101021226870014br.gov.bcb.pix2565qrcode.example/pix/v2/cobv/"
            "1c2d3e4f5a6b4c7d8e9f0a1b2c3d4e5f5204000053039865802BR5920Hotmart Example"
            "6009SAO PAULO62070503***6304EF01"
        ),
        pix_qrcode="https://pay.hotmart.example/pix/qr/HP1764271800987.png",
        expires_at_ms=1764444000000,
        price=Decimal("997"),
        currency="BRL",
        country="",  # checkout_country is {}
        affiliates=(),  # [{"name": ""}]: an older test's way of saying "no affiliate"
        buyer=Buyer(name="Rafael Costa", email="rafael.costa@example.com"),
        transaction="HP1764271800987",
    ),
    "test_button_billet_printed.json": Expected(
        event=SLIP_EVENT,
        type="CREDIT_CARD",
        method=None,
        slip_url=None,
        slip_code=None,
        price=Decimal("1500"),
        currency="BRL",
        country="BR",
        affiliates=("Q58388177J",),
        buyer=Buyer(name="Teste Comprador", email="testeComprador271101postman15@example.com"),
        transaction="HP16015479281022",
        product_id="0",
    ),
}


# --- the fixtures ----------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "expected"), sorted(JSON_FIXTURES.items()))
def test_json_fixture(name: str, expected: Expected) -> None:
    body = load(name)
    event = parse_json_event(body)
    assert event.id == body["id"]
    assert event.event == expected.event
    assert event.version == "2.0.0"
    assert event.source == "2.0.0"
    assert event.created_at_ms == body["creation_date"]
    assert event.product.id == expected.product_id
    assert event.product.ucode == body["data"]["product"]["ucode"]
    assert event.product.name == body["data"]["product"]["name"]
    assert tuple(a.code for a in event.named_affiliates) == expected.affiliates
    assert event.buyer == expected.buyer
    assert event.purchase.transaction == expected.transaction
    assert event.purchase.status == body["data"]["purchase"]["status"]
    assert event.purchase.order_date_ms == 1764271190000 or expected.product_id == "0"
    assert event.purchase.price == expected.price
    assert event.purchase.currency == expected.currency
    assert event.purchase.country_iso == expected.country
    payment = event.payment
    assert payment.type == expected.type
    assert payment.method == expected.method
    assert payment.slip_url == expected.slip_url
    assert payment.slip_code == expected.slip_code
    assert payment.pix_code == expected.pix_code
    assert payment.pix_qrcode == expected.pix_qrcode
    assert payment.expires_at_ms == expected.expires_at_ms
    assert payment.has_slip is (expected.method is not None)
    assert event.is_test is (expected.product_id == "0")
    assert "hottok" not in event.model_dump_json()  # the body's token is never kept


def test_fixture_affiliate_names_and_country_names() -> None:
    event = parse_json_event(load("billet_printed_oxxo.json"))
    assert event.affiliates == (Affiliate(code="K12345678M", name="Lucía Fernández"),)
    assert event.purchase.country_name == "México"
    assert event.payment.installments == 1
    assert parse_json_event(load("test_button_billet_printed.json")).payment.installments == 12


def test_no_affiliate_fixture_keeps_the_blank_entry_but_names_none() -> None:
    event = parse_json_event(load("billet_printed_no_affiliate.json"))
    assert event.affiliates == (Affiliate(code="", name=""),)
    assert event.named_affiliates == ()


def test_buyer_documents_and_addresses_are_dropped() -> None:
    event = parse_json_event(load("billet_printed_oxxo.json"))
    dumped = event.model_dump_json()
    assert "GOMA900101MDFNRR09" not in dumped
    assert "06600" not in dumped
    assert "Ciudad de México" not in dumped
    assert "document" not in dumped


@pytest.mark.parametrize("name", sorted(path.name for path in FIXTURES.glob("*.json")))
def test_event_survives_a_json_round_trip(name: str) -> None:
    event = parse_json_event(load(name))
    assert Event.model_validate_json(event.model_dump_json()) == event


def test_v1_postback_fixture() -> None:
    form = v1_form()
    event = parse_v1_postback(form)
    assert event.source == "v1"
    assert event.version == "v1"
    assert event.event == SLIP_EVENT
    assert event.id == "v1:HP1764271500789:billet_printed"
    assert event.created_at_ms is None
    assert event.purchase.order_date_ms == 1764272700000  # purchase_date, ISO 8601
    assert event.product.id == "3012345"
    assert event.product.name == "Curso de Repostería Profesional"
    assert event.affiliates == (Affiliate(code="K12345678M", name="Lucía Fernández"),)
    assert event.buyer == Buyer(
        name="María González", email="maria.gonzalez@example.com", phone="5512345678"
    )
    assert event.purchase.transaction == "HP1764271500789"
    assert event.purchase.status == "BILLET_PRINTED"
    assert event.purchase.price == Decimal("499.00")
    assert event.purchase.currency == "MXN"
    assert event.purchase.country_iso == "MX"  # told by the currency
    assert event.payment.type == "CASH_PAYMENT"
    assert event.payment.method == "OXXO"
    assert event.payment.slip_url == "https://pay.hotmart.example/oxxo/HP1764271500789"
    assert event.payment.slip_code == "93000004217642715007890000499007"
    assert event.payment.installments == 1
    assert event.payment.has_slip
    assert Event.model_validate_json(event.model_dump_json()) == event


# --- quirks: accept what can be understood ---------------------------------------------------


def test_unknown_fields_are_ignored() -> None:
    body = load("billet_printed_oxxo.json")
    body["surprise"] = {"nested": [1, 2, 3]}
    body["data"]["new_block"] = "x"
    body["data"]["buyer"]["loyalty_tier"] = "gold"
    payment_of(body)["card_brand"] = None
    body["data"]["affiliates"][0]["extra"] = 1
    assert parse_json_event(body) == parse_json_event(load("billet_printed_oxxo.json"))


@pytest.mark.parametrize("key", ["subscription", "producer", "commissions", "buyer", "product"])
def test_a_block_sent_as_a_string_reads_as_absent(key: str) -> None:
    # No real Hotmart body does this (the once-cited "subscription": "192.168.4.57" was an
    # anonymiser's artefact in a third-party fixture); reading it as absent costs nothing.
    body = load("billet_printed_oxxo.json")
    body["data"][key] = "192.168.4.57" if key == "subscription" else "x"
    event = parse_json_event(body)
    assert event.payment.method == "OXXO"
    assert event.named_affiliates[0].code == "K12345678M"
    if key == "buyer":
        assert event.buyer is None
    if key == "product":
        assert (event.product.id, event.product.ucode, event.product.name) == ("", "", "")


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("data",), "x"),
        (("data", "purchase"), "x"),
        (("data", "purchase", "payment"), "x"),
        (("data", "purchase", "price"), ["x"]),
        (("data", "purchase", "checkout_country"), "MX"),
        (("data", "affiliates"), "K12345678M"),
    ],
)
def test_any_block_as_the_wrong_type_is_survivable(path: tuple[str, ...], value: Any) -> None:
    body = load("billet_printed_oxxo.json")
    target = body
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    event = parse_json_event(body)
    assert event.id == body["id"]
    assert event.event == SLIP_EVENT


def test_affiliates_as_a_single_object() -> None:
    body = load("billet_printed_oxxo.json")
    body["data"]["affiliates"] = {"affiliate_code": "K12345678M", "name": "Lucía"}
    assert [a.code for a in parse_json_event(body).named_affiliates] == ["K12345678M"]


def test_missing_buyer() -> None:
    body = load("billet_printed_oxxo.json")
    del body["data"]["buyer"]
    event = parse_json_event(body)
    assert event.buyer is None
    assert event.payment.has_slip


def test_buyer_name_from_first_and_last_names() -> None:
    body = load("billet_printed_oxxo.json")
    del body["data"]["buyer"]["name"]
    del body["data"]["buyer"]["checkout_phone"]
    body["data"]["buyer"]["phone"] = "555"
    event = parse_json_event(body)
    assert event.buyer == Buyer(
        name="María González", email="maria.gonzalez@example.com", phone="555"
    )


def test_camel_case_names() -> None:
    body = load("billet_printed_boleto.json")
    body["creationDate"] = body.pop("creation_date")
    purchase = body["data"]["purchase"]
    purchase["orderDate"] = purchase.pop("order_date")
    purchase["checkoutCountry"] = purchase.pop("checkout_country")
    payment = purchase["payment"]
    payment["billetUrl"] = payment.pop("billet_url")
    payment["billetBarcode"] = payment.pop("billet_barcode")
    payment["installmentsNumber"] = payment.pop("installments_number")
    buyer = body["data"]["buyer"]
    buyer["checkoutPhone"] = buyer.pop("checkout_phone")
    body["data"]["affiliates"][0]["affiliateCode"] = body["data"]["affiliates"][0].pop(
        "affiliate_code"
    )
    assert parse_json_event(body) == parse_json_event(load("billet_printed_boleto.json"))


def test_camel_case_pix_fields() -> None:
    body = load("billet_printed_pix.json")
    payment = payment_of(body)
    payment["pixCode"] = payment.pop("pix_code")
    payment["pixQrcode"] = payment.pop("pix_qrcode")
    payment["pixExpirationDate"] = payment.pop("pix_expiration_date")
    assert parse_json_event(body) == parse_json_event(load("billet_printed_pix.json"))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("499.00", Decimal("499.00")),
        ("499", Decimal("499")),
        ("499,90", Decimal("499.90")),
        (499.9, Decimal("499.9")),
        (" 12.5 ", Decimal("12.5")),
        ("gratis", None),
        ("NaN", None),
        (None, None),
        (True, None),
        ({"amount": 1}, None),
    ],
)
def test_price_value(value: Any, expected: Decimal | None) -> None:
    body = load("billet_printed_oxxo.json")
    body["data"]["purchase"]["price"]["value"] = value
    assert parse_json_event(body).purchase.price == expected


def test_price_as_a_bare_value() -> None:
    body = load("billet_printed_oxxo.json")
    body["data"]["purchase"]["price"] = "499.00"
    event = parse_json_event(body)
    assert event.purchase.price == Decimal("499.00")
    assert event.purchase.currency == ""


def test_price_currency_code_is_not_read() -> None:
    # `currency_code` is the sales REST API's; no webhook carries it.
    body = load("billet_printed_oxxo.json")
    body["data"]["purchase"]["price"] = {"value": 1, "currency_code": "MXN"}
    assert parse_json_event(body).purchase.currency == ""


def test_currency_lower_case_and_alternative_key() -> None:
    body = load("billet_printed_oxxo.json")
    body["data"]["purchase"]["price"] = {"value": 1, "currency": "mxn"}
    assert parse_json_event(body).purchase.currency == "MXN"


@pytest.mark.parametrize(
    ("barcode", "expected"),
    [
        (
            "34191 09669 36967 100540 89356 830003 5 10720000099700",
            BOLETO_BARCODE,
        ),
        (
            "34191.09669 36967.100540 89356.830003 5 10720000099700",
            BOLETO_BARCODE,
        ),
        (f"  {BOLETO_BARCODE}\n", BOLETO_BARCODE),
        ("9300 0004 2176\t4271 2001", "93000004217642712001"),
        ("ABC 123-XY", "ABC123-XY"),  # not a number: only whitespace is removed
        ("   ", None),
        ("", None),
    ],
)
def test_barcode_normalised(barcode: str, expected: str | None) -> None:
    body = load("billet_printed_boleto.json")
    payment_of(body)["billet_barcode"] = barcode
    assert parse_json_event(body).payment.slip_code == expected


def test_affiliates_empty_or_blank_codes() -> None:
    body = load("billet_printed_oxxo.json")
    body["data"]["affiliates"] = []
    assert parse_json_event(body).named_affiliates == ()
    body["data"]["affiliates"] = [
        {"affiliate_code": "", "name": ""},
        {"affiliate_code": "   "},
        {"affiliate_code": None},
        {"name": "no code"},
        "K12345678M",
        None,
    ]
    assert parse_json_event(body).named_affiliates == ()
    body["data"]["affiliates"] = [
        {"affiliate_code": ""},
        {"affiliate_code": " K12345678M "},
        {"code": "P98765432X"},
        {"affiliate_code": 12345},
    ]
    codes = [a.code for a in parse_json_event(body).named_affiliates]
    assert codes == ["K12345678M", "P98765432X", "12345"]
    del body["data"]["affiliates"]
    assert parse_json_event(body).affiliates == ()


@pytest.mark.parametrize(
    ("url", "method"),
    [
        ("https://pay.hotmart.example/efecty/HP1764271300456", "Efecty"),
        ("https://pay.hotmart.example/EFECTY/HP1764271300456", "Efecty"),
        ("https://pay.hotmart.example/baloto/HP1764271300456", "Baloto"),
        # Nothing says which network: neutral, not a guess (SPEC §2).
        (None, CASH_SLIP),
        ("https://pay.hotmart.example/slip/HP1764271300456", CASH_SLIP),
    ],
)
def test_colombian_cash_slip_method(url: str | None, method: str) -> None:
    body = load("billet_printed_baloto.json")
    payment_of(body)["billet_url"] = url
    assert parse_json_event(body).payment.method == method


@pytest.mark.parametrize(
    "kind", ["OXXO", "PAGO_EFECTIVO", "BALOTO", "EFECTY", "CUPON_DE_PAGO", "MULTIBANCO", "oxxo"]
)
def test_a_brand_as_payment_type_is_not_trusted_but_the_slip_is_kept(kind: str) -> None:
    # No webhook sends a brand as the type (SPEC §2): a slip of an unknown type is still a
    # slip, named neutrally rather than after a type Hotmart never sends.
    body = load("billet_printed_oxxo.json")
    payment_of(body)["type"] = kind
    del body["data"]["purchase"]["checkout_country"]
    payment = parse_json_event(body).payment
    assert payment.type == kind.upper()
    assert payment.method == SLIP
    assert payment.has_slip


@pytest.mark.parametrize(
    ("fields", "method"),
    [
        ({"type": "CASH_PAYMENT", "method": "EFECTY"}, "OXXO"),
        ({"type": "CASH_PAYMENT", "method": "pago_efectivo"}, "OXXO"),
        ({"method": "OXXO"}, SLIP),
        ({"type": "", "payment_method": "MULTIBANCO"}, SLIP),
        ({"type": "CASH_PAYMENT", "method": "SOMETHING_ELSE"}, "OXXO"),
        ({"type": "BILLET", "method": "Boleto"}, "OXXO"),  # BILLET in Mexico is a cash slip
    ],
)
def test_payment_method_fields_are_not_read(fields: dict[str, str], method: str) -> None:
    # `payment.method` and `payment_method` belong to the sales REST API, not to webhooks.
    body = load("billet_printed_oxxo.json")
    payment = payment_of(body)
    del payment["type"]
    payment.update(fields)
    assert parse_json_event(body).payment.method == method


@pytest.mark.parametrize(
    ("iso", "currency", "method"),
    [
        ("MX", "MXN", "OXXO"),
        ("mx", "MXN", "OXXO"),
        ("CO", "COP", CASH_SLIP),  # Efecty or Baloto: the fixture's link does not say
        ("PE", "PEN", CASH_SLIP),
        (None, "MXN", "OXXO"),  # no country: the currency tells it
        (None, "COP", CASH_SLIP),
        (None, "USD", CASH_SLIP),
    ],
)
def test_cash_payment_country(iso: str | None, currency: str, method: str) -> None:
    body = load("billet_printed_oxxo.json")
    purchase = body["data"]["purchase"]
    if iso is None:
        del purchase["checkout_country"]
    else:
        purchase["checkout_country"]["iso"] = iso
    purchase["price"]["currency_value"] = currency
    event = parse_json_event(body)
    assert event.payment.method == method
    assert event.purchase.country_iso == (iso or "").upper()


@pytest.mark.parametrize("kind", ["CREDIT_CARD", "PAYPAL", "", "GOOGLE_PAY"])
def test_non_slip_payment_types_have_no_method(kind: str) -> None:
    body = load("billet_printed_oxxo.json")
    payment_of(body).clear()
    payment_of(body)["type"] = kind
    payment = parse_json_event(body).payment
    assert payment.method is None
    assert not payment.has_slip


@pytest.mark.parametrize("kind", ["CREDIT_CARD", "PAYPAL", "", "GOOGLE_PAY", "HYBRID", "WALLET"])
def test_a_slip_is_a_slip_whatever_the_payment_type(kind: str) -> None:
    body = load("billet_printed_oxxo.json")
    payment_of(body)["type"] = kind
    payment = parse_json_event(body).payment
    assert payment.method == SLIP  # a neutral name, never "no slip"
    assert payment.has_slip
    assert payment.slip_code == "93000004217642712001230000499007"


@pytest.mark.parametrize(
    ("kind", "country", "method"),
    [
        ("FINANCED_BILLET", "BR", "Boleto"),
        ("FINANCED_BILLET", None, "Boleto"),
        ("BILLET", None, "Boleto"),
        ("BILLET", "CO", CASH_SLIP),
        ("CASH_PAYMENT", "MX", "OXXO"),
        ("CASH_PAYMENT", "AR", CASH_SLIP),
        ("PIX", "BR", "Pix"),
        ("DIRECT_BANK_TRANSFER", "BR", SLIP),
    ],
)
def test_the_method_is_named_from_type_and_country(
    kind: str, country: str | None, method: str
) -> None:
    body = load("billet_printed_boleto.json")
    payment_of(body)["type"] = kind
    purchase = body["data"]["purchase"]
    if country is None:
        del purchase["checkout_country"]
        purchase["price"]["currency_value"] = "USD"  # nothing tells the country
    else:
        purchase["checkout_country"]["iso"] = country
    assert parse_json_event(body).payment.method == method


def test_a_pix_code_under_another_type_is_named_pix() -> None:
    body = load("billet_printed_pix.json")
    payment_of(body)["type"] = "HYBRID"
    payment = parse_json_event(body).payment
    assert (payment.method, payment.has_slip) == ("Pix", True)


def test_pix_without_a_code_has_no_slip() -> None:
    body = load("billet_printed_pix.json")
    del payment_of(body)["pix_code"]
    payment = parse_json_event(body).payment
    assert payment.method == "Pix"
    assert not payment.has_slip


def test_billet_with_only_a_barcode_is_a_slip() -> None:
    body = load("billet_printed_boleto.json")
    del payment_of(body)["billet_url"]
    payment = parse_json_event(body).payment
    assert payment.slip_url is None
    assert payment.has_slip


def test_event_name_and_id_are_trimmed_and_upper_cased() -> None:
    body = load("billet_printed_oxxo.json")
    body["event"] = " purchase_billet_printed "
    body["id"] = "  abc  "
    event = parse_json_event(body)
    assert (event.id, event.event) == ("abc", SLIP_EVENT)
    body["id"] = 12345
    assert parse_json_event(body).id == "12345"


def test_unknown_event_names_are_kept_not_refused() -> None:
    body = load("billet_printed_oxxo.json")
    body["event"] = "PURCHASE_SOMETHING_NEW"
    event = parse_json_event(body)
    assert event.event == "PURCHASE_SOMETHING_NEW"
    assert event.event not in KNOWN_EVENTS


def test_product_id_as_float_or_string_reads_as_the_same_text() -> None:
    body = load("billet_printed_oxxo.json")
    for value in (3012345, 3012345.0, "3012345", " 3012345 "):
        body["data"]["product"]["id"] = value
        assert parse_json_event(body).product.id == "3012345"
    body["data"]["product"]["id"] = 0.0
    assert parse_json_event(body).is_test


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1764271200000, 1764271200000),  # epoch ms
        (1764271200, 1764271200000),  # epoch s
        (1764271200000.0, 1764271200000),
        ("1764271200000", 1764271200000),
        ("2025-11-27T19:20:00Z", 1764271200000),
        ("2025-11-27T16:20:00-03:00", 1764271200000),
        ("2025-11-27T19:20:00", 1764271200000),  # naive is UTC
        ("27/11/2025 19:20:00", None),
        ("", None),
        (None, None),
        (True, None),
        ({"ms": 1}, None),
        (float("inf"), None),
        (float("nan"), None),
        (10**30, None),
        (1.2345678901234568e29, None),
        ("9" * 40, None),
        (-5, None),
        ("0001-01-01T00:00:00Z", None),
    ],
)
def test_dates(value: Any, expected: int | None) -> None:
    body = load("billet_printed_pix.json")
    body["creation_date"] = value
    payment_of(body)["pix_expiration_date"] = value
    event = parse_json_event(body)
    assert event.created_at_ms == expected
    assert event.payment.expires_at_ms == expected


def test_camel_case_creation_date() -> None:
    body = load("billet_printed_oxxo.json")
    del body["creation_date"]
    body["creationDate"] = "2025-11-27T19:20:00Z"
    assert parse_json_event(body).created_at_ms == 1764271200000


@pytest.mark.parametrize("field", ["billet_expiration_date", "expiration_date", "due_date"])
def test_no_expiry_is_invented_for_a_boleto_or_cash_slip(field: str) -> None:
    # No capture has any of these: only Pix codes carry an expiry (pix_expiration_date).
    body = load("billet_printed_oxxo.json")
    payment_of(body)[field] = 1764357600000
    assert parse_json_event(body).payment.expires_at_ms is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (3, 3),
        ("3", 3),
        (3.0, 3),
        ("x", None),
        (10**30, None),
        (-1, None),
        (1e308, None),
        (3.5, None),
        (True, None),
    ],
)
def test_installments(value: Any, expected: int | None) -> None:
    body = load("billet_printed_oxxo.json")
    payment_of(body)["installments_number"] = value
    assert parse_json_event(body).payment.installments == expected


def test_test_button_event() -> None:
    event = parse_json_event(load("test_button_billet_printed.json"))
    assert event.is_test
    assert event.event == SLIP_EVENT
    assert event.payment.type == "CREDIT_CARD"
    assert not event.payment.has_slip
    assert not parse_json_event(load("billet_printed_oxxo.json")).is_test


# --- refusals: only what cannot be understood ------------------------------------------------


@pytest.mark.parametrize("body", [None, [], ["id"], "text", 42, b"{}"])
def test_not_an_object(body: Any) -> None:
    with pytest.raises(MalformedEvent) as caught:
        parse_json_event(body)
    assert caught.value.field == "(body)"


@pytest.mark.parametrize("field", ["id", "event"])
@pytest.mark.parametrize("value", ["<missing>", "", "   ", None, True, {"x": 1}, ["a"], 1.5])
def test_missing_or_unusable_id_or_event(field: str, value: Any) -> None:
    body = load("billet_printed_oxxo.json")
    if value == "<missing>":
        del body[field]
    else:
        body[field] = value
    with pytest.raises(MalformedEvent) as caught:
        parse_json_event(body)
    assert caught.value.field == field
    assert field in str(caught.value)
    assert caught.value.reason


def test_missing_id_is_named_before_event() -> None:
    with pytest.raises(MalformedEvent) as caught:
        parse_json_event({"data": {}})
    assert caught.value.field == "id"
    with pytest.raises(MalformedEvent) as caught:
        parse_json_event({"id": "x"})
    assert caught.value.field == "event"


def test_minimal_body_is_enough() -> None:
    event = parse_json_event({"id": "e1", "event": SLIP_EVENT})
    assert event.id == "e1"
    assert event.affiliates == ()
    assert event.buyer is None
    assert event.payment.method is None
    assert event.purchase.price is None


def test_malformed_event_is_a_value_error() -> None:
    error = MalformedEvent("id", "missing or empty")
    assert isinstance(error, ValueError)
    assert (error.field, error.reason, str(error)) == (
        "id",
        "missing or empty",
        "id: missing or empty",
    )


# --- the v1 postback -------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["status", "transaction"])
@pytest.mark.parametrize("value", [None, "", "  "])
def test_v1_missing_status_or_transaction(field: str, value: str | None) -> None:
    form = v1_form()
    if value is None:
        del form[field]
    else:
        form[field] = value
    with pytest.raises(MalformedEvent) as caught:
        parse_v1_postback(form)
    assert caught.value.field == field


def test_v1_id_is_deterministic() -> None:
    first = parse_v1_postback(v1_form())
    again = parse_v1_postback(v1_form())
    assert first.id == again.id == "v1:HP1764271500789:billet_printed"
    assert first == again
    approved = v1_form() | {"status": "approved"}
    assert parse_v1_postback(approved).id == "v1:HP1764271500789:approved"
    other = v1_form() | {"transaction": "HP999"}
    assert parse_v1_postback(other).id == "v1:HP999:billet_printed"
    shouted = v1_form() | {"status": "BILLET_PRINTED"}
    assert parse_v1_postback(shouted).id == first.id


@pytest.mark.parametrize(
    ("status", "event"),
    [
        ("billet_printed", SLIP_EVENT),
        ("printed_billet", SLIP_EVENT),
        ("approved", "PURCHASE_APPROVED"),
        ("completed", "PURCHASE_COMPLETE"),
        ("canceled", "PURCHASE_CANCELED"),
        ("cancelled", "PURCHASE_CANCELED"),
        ("refunded", "PURCHASE_REFUNDED"),
        ("chargeback", "PURCHASE_CHARGEBACK"),
        ("expired", "PURCHASE_EXPIRED"),
        ("delayed", "PURCHASE_DELAYED"),
        ("protested", "PURCHASE_PROTEST"),
        ("dispute", "PURCHASE_PROTEST"),  # what v1 really sends for a refund request
        ("waiting_payment", "PURCHASE_WAITING_PAYMENT"),
        ("wayting_payment", "PURCHASE_WAITING_PAYMENT"),  # Hotmart's spelling (sic)
    ],
)
def test_v1_status_names_the_event(status: str, event: str) -> None:
    assert parse_v1_postback(v1_form() | {"status": status}).event == event


@pytest.mark.parametrize(
    ("fields", "method", "country"),
    [
        ({"payment_type": "billet", "currency": "BRL"}, "Boleto", "BR"),
        ({"payment_type": "cash_payment", "currency": "COP"}, CASH_SLIP, "CO"),
        ({"payment_type": "cash_payment", "currency": "mxn"}, "OXXO", "MX"),
        ({"payment_type": "oxxo", "currency": ""}, SLIP, ""),  # no such type: neutral
        ({"payment_type": "credit_card", "currency": "BRL"}, SLIP, "BR"),  # it has a slip
    ],
)
def test_v1_payment(fields: dict[str, str], method: str | None, country: str) -> None:
    event = parse_v1_postback(v1_form() | fields)
    assert event.payment.method == method
    assert event.purchase.country_iso == country


def test_v1_pix() -> None:
    form = v1_form()
    for key in ("billet_url", "billet_barcode"):
        del form[key]
    form |= {
        "payment_type": "pix",
        "currency": "BRL",
        "pix_code": PIX_CODE,
        "pix_qrcode": "https://qr.example/x.png",
        "pix_expiration_date": "1764357600000",
    }
    payment = parse_v1_postback(form).payment
    assert (payment.method, payment.pix_code, payment.expires_at_ms) == (
        "Pix",
        PIX_CODE,
        1764357600000,
    )
    assert payment.has_slip


def test_v1_without_affiliate_or_optional_fields() -> None:
    form = {"status": "billet_printed", "transaction": "HP1"}
    event = parse_v1_postback(form)
    assert event.named_affiliates == ()
    assert event.product.id == ""
    assert event.purchase.price is None
    assert event.payment.method is None
    form = v1_form() | {"aff": "", "price": "abc", "billet_barcode": "9300 0004 2176"}
    event = parse_v1_postback(form)
    assert event.named_affiliates == ()
    assert event.purchase.price is None
    assert event.payment.slip_code == "930000042176"


# --- facts of real bodies (SPEC §2, issue 7 §1) ------------------------------------------------


def test_a_boleto_barcode_is_47_digits_kept_as_sent() -> None:
    code = parse_json_event(load("billet_printed_boleto.json")).payment.slip_code
    assert code == BOLETO_BARCODE
    assert len(code) == 47
    assert code.isdigit()


@pytest.mark.parametrize(
    ("area_code", "number", "phone"),
    [
        ("31", "999999999", "31999999999"),  # DDD + mobile: joined
        ("31", "99123-4567", "31991234567"),  # separators in the local number
        ("11", "33334444", "1133334444"),  # DDD + landline: joined
        ("11", "11987654321", "11987654321"),  # the number already holds its DDD
        (None, "+52 55 1234 5678", "+52 55 1234 5678"),  # international: as sent
        ("55", "+52 55 1234 5678", "+52 55 1234 5678"),
        ("999999999", "99999999900", "99999999900"),  # the test button's odd values
        ("31", "9999²9999", "9999²9999"),  # not ASCII digits: left as sent
        ("31", None, ""),  # an area code alone is not a phone
        (None, None, ""),  # many checkouts send no phone at all
    ],
)
def test_the_buyer_phone_joins_the_area_code(
    area_code: str | None, number: str | None, phone: str
) -> None:
    body = load("billet_printed_boleto.json")
    buyer = body["data"]["buyer"]
    for key, value in (("checkout_phone_code", area_code), ("checkout_phone", number)):
        buyer.pop(key)
        if value is not None:
            buyer[key] = value
    assert parse_json_event(body).buyer == Buyer(
        name="Ana Souza", email="ana.souza@example.com", phone=phone
    )


def test_pix_has_no_billet_url_and_its_code_is_kept_verbatim() -> None:
    payment = parse_json_event(load("billet_printed_pix.json")).payment
    assert payment.slip_url is None
    assert payment.pix_code == PIX_CODE  # spaces and *** included
    assert " " in PIX_CODE and "***" in PIX_CODE
    assert payment.expires_at_ms == 1764357600000  # pix_expiration_date, 48 h after the order


@pytest.mark.parametrize("event_name", ["SWITCH_PLAN", "UPDATE_SUBSCRIPTION_CHARGE_DATE"])
def test_a_subscription_event_reads_the_product_under_subscription(event_name: str) -> None:
    body = load("switch_plan.json")
    body["event"] = event_name
    event = parse_json_event(body)
    assert event.event == event_name
    assert (event.product.id, event.product.name) == ("4116023", "Club de Repostería")
    assert event.named_affiliates == ()
    assert event.buyer is None
    assert not event.payment.has_slip


def test_data_product_wins_over_the_subscription_product() -> None:
    body = load("switch_plan.json")
    body["data"]["product"] = {"id": 1, "name": "Top level"}
    assert parse_json_event(body).product.id == "1"


def test_creation_date_in_camel_case_from_a_real_body() -> None:
    event = parse_json_event(load("club_first_access_test.json"))
    assert event.created_at_ms == 1764271400000
    assert event.event == "CLUB_FIRST_ACCESS"


@pytest.mark.parametrize(
    ("product_id", "is_test"),
    [
        (0, True),
        ("0", True),
        ("00000", True),  # as the test button sends some events
        (0.0, True),
        ("000", True),
        (3012345, False),
        (10, False),
        ("", False),
        (None, False),
        ("0.0", False),
    ],
)
def test_the_test_button_is_any_all_zero_product_id(product_id: Any, is_test: bool) -> None:
    body = load("club_module_completed_test.json")
    body["data"]["product"]["id"] = product_id
    assert parse_json_event(body).is_test is is_test


def test_the_test_button_fixtures_are_tests() -> None:
    for name in ("club_module_completed_test.json", "club_first_access_test.json"):
        assert parse_json_event(load(name)).is_test


def test_the_body_hottok_is_never_part_of_the_event() -> None:
    body = load("billet_printed_financed_billet.json")
    assert body["hottok"] == "test-hottok-acme"
    event = parse_json_event(body)
    assert "test-hottok-acme" not in event.model_dump_json()
    del body["hottok"]
    assert parse_json_event(body) == event


@pytest.mark.parametrize(
    ("name", "event_name", "has_slip"),
    [
        ("v1_postback_dispute.form", "PURCHASE_PROTEST", False),
        ("v1_postback_wayting_payment.form", "PURCHASE_WAITING_PAYMENT", True),
    ],
)
def test_v1_fixtures_of_real_statuses(name: str, event_name: str, has_slip: bool) -> None:
    event = parse_v1_postback(v1_form(name))
    assert event.event == event_name
    assert event.payment.has_slip is has_slip
    assert event.purchase.order_date_ms == 1764272700000


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("status", "x" * (MAX_WORD_CHARS + 1), f"longer than {MAX_WORD_CHARS} characters"),
        ("transaction", "  ", "empty; a v1 postback is identified by it"),
    ],
)
def test_v1_required_fields_say_what_is_wrong(field: str, value: str, reason: str) -> None:
    with pytest.raises(MalformedEvent) as caught:
        parse_v1_postback(v1_form() | {field: value})
    assert caught.value.field == field
    assert caught.value.reason.startswith(reason)


def test_v1_purchase_date_that_is_not_iso_is_unknown() -> None:
    form = v1_form() | {"purchase_date": "27/11/2025 19:45:00"}
    assert parse_v1_postback(form).purchase.order_date_ms is None


# --- bounds: every value taken from a body has a named maximum (issue 6, defect 1) -----------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, Decimal(0)),
        (10**9, Decimal(10**9)),
        (10**9 + 1, None),
        (-1, None),
        ("-12.50", None),
        (499.1234, Decimal("499.1234")),
        ("499.12345", None),  # finer than MAX_PRICE_PLACES
        ("499.10000", Decimal("499.1")),  # trailing zeros are not precision
        ("1E+2", Decimal(100)),
        ("1E+999999999", None),
        ("-1E-999999999", None),
        ("1" * 40, None),
        (1e308, None),
        (float("inf"), None),
        (float("nan"), None),
        ("Infinity", None),
        ("0x10", None),
        ("1_000", None),
    ],
)
def test_price_range_and_precision(value: Any, expected: Decimal | None) -> None:
    body = load("billet_printed_oxxo.json")
    body["data"]["purchase"]["price"]["value"] = value
    assert parse_json_event(body).purchase.price == expected


def test_names_past_their_bound_are_cut() -> None:
    body = load("billet_printed_oxxo.json")
    body["data"]["product"]["name"] = "Curso " + "x" * 100_000
    body["data"]["buyer"]["name"] = "María " + "y" * 100_000
    body["data"]["affiliates"][0]["name"] = "z" * 100_000
    body["data"]["purchase"]["checkout_country"]["name"] = "w" * 100_000
    event = parse_json_event(body)
    assert event.product.name == ("Curso " + "x" * MAX_NAME_CHARS)[:MAX_NAME_CHARS]
    assert event.buyer is not None
    assert len(event.buyer.name) == MAX_NAME_CHARS
    assert len(event.affiliates[0].name) == MAX_NAME_CHARS
    assert len(event.purchase.country_name) == MAX_NAME_CHARS


@pytest.mark.parametrize(
    ("where", "limit"),
    [
        (("purchase", "payment", "billet_url"), MAX_URL_CHARS),
        (("purchase", "payment", "pix_qrcode"), MAX_URL_CHARS),
        (("purchase", "payment", "billet_barcode"), MAX_CODE_CHARS),
        (("purchase", "payment", "pix_code"), MAX_PIX_CODE_CHARS),
        (("purchase", "transaction"), MAX_ID_CHARS),
        (("buyer", "email"), MAX_EMAIL_CHARS),
        (("buyer", "checkout_phone"), MAX_PHONE_CHARS),
        (("product", "ucode"), MAX_ID_CHARS),
        (("product", "id"), MAX_ID_CHARS),
    ],
)
def test_codes_urls_and_ids_past_their_bound_are_dropped_not_cut(
    where: tuple[str, ...], limit: int
) -> None:
    def place(value: str) -> Event:
        body = load("billet_printed_oxxo.json")
        target = body["data"]
        for key in where[:-1]:
            target = target[key]
        target[where[-1]] = value
        return parse_json_event(body)

    def found(event: Event) -> str:
        dumped = event.model_dump_json()
        return "kept" if "7" * 20 in dumped else "dropped"

    is_url = where[-1] in ("billet_url", "pix_qrcode")
    at_limit = "https://x.example/" + "7" * (limit - 18) if is_url else "7" * limit
    over = at_limit + "7"
    assert found(place(at_limit)) == "kept"
    assert found(place(over)) == "dropped"
    assert len(place(over).model_dump_json()) < 4000


def test_the_affiliates_list_is_bounded() -> None:
    body = load("billet_printed_oxxo.json")
    body["data"]["affiliates"] = [{"affiliate_code": f"A{i}"} for i in range(100_000)]
    codes = [a.code for a in parse_json_event(body).named_affiliates]
    assert codes == [f"A{i}" for i in range(MAX_AFFILIATES)]


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("id", "e" * (MAX_ID_CHARS + 1), f"longer than {MAX_ID_CHARS} characters"),
        pytest.param("id", 10**5000, f"longer than {MAX_ID_CHARS} characters", id="huge-int"),
        ("event", "E" * (MAX_WORD_CHARS + 1), f"longer than {MAX_WORD_CHARS} characters"),
        ("id", "", "empty"),
        ("id", 1.5, "a number with a decimal point; send a string or an integer"),
        ("id", True, "a boolean; send a string"),
        ("id", {"x": 1}, "a JSON object; send a string"),
        ("event", ["a"], "a JSON array; send a string"),
        ("event", None, "missing"),
    ],
)
def test_a_required_field_says_exactly_what_is_wrong(field: str, value: Any, reason: str) -> None:
    body = load("billet_printed_oxxo.json")
    body[field] = value
    with pytest.raises(MalformedEvent) as caught:
        parse_json_event(body)
    assert (caught.value.field, caught.value.reason) == (field, reason)


def test_a_huge_integer_anywhere_else_is_unknown_not_a_crash() -> None:
    body = load("billet_printed_oxxo.json")
    body["data"]["product"]["id"] = 10**5000  # more digits than Python will print
    body["data"]["affiliates"][0]["affiliate_code"] = 10**5000
    body["data"]["purchase"]["payment"]["installments_number"] = 10**5000
    body["creation_date"] = 10**5000
    event = parse_json_event(body)
    assert event.product.id == ""
    assert event.named_affiliates == ()
    assert event.payment.installments is None
    assert event.created_at_ms is None
