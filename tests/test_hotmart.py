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
    SLIP_EVENT,
    Affiliate,
    Buyer,
    Event,
    MalformedEvent,
    parse_json_event,
    parse_v1_postback,
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


def v1_form() -> dict[str, str]:
    text = (FIXTURES / "v1_postback_billet_printed.form").read_text(encoding="utf-8").strip()
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


@pytest.mark.parametrize("name", sorted(JSON_FIXTURES))
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
def test_objects_sent_as_strings(key: str) -> None:
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
        (None, "Baloto"),
    ],
)
def test_colombian_cash_slip_method(url: str | None, method: str) -> None:
    body = load("billet_printed_baloto.json")
    payment_of(body)["billet_url"] = url
    assert parse_json_event(body).payment.method == method


@pytest.mark.parametrize(
    ("kind", "method"),
    [
        ("OXXO", "OXXO"),
        ("PAGO_EFECTIVO", "PagoEfectivo"),
        ("BALOTO", "Baloto"),
        ("EFECTY", "Efecty"),
        ("CUPON_DE_PAGO", "Cupón de pago"),
        ("MULTIBANCO", "Multibanco"),
        ("oxxo", "OXXO"),
    ],
)
def test_sales_api_cash_names_as_payment_type(kind: str, method: str) -> None:
    body = load("billet_printed_oxxo.json")
    payment_of(body)["type"] = kind
    del body["data"]["purchase"]["checkout_country"]
    payment = parse_json_event(body).payment
    assert payment.type == kind.upper()
    assert payment.method == method
    assert payment.has_slip


@pytest.mark.parametrize(
    ("fields", "method"),
    [
        ({"type": "CASH_PAYMENT", "method": "EFECTY"}, "Efecty"),
        ({"type": "CASH_PAYMENT", "method": "pago_efectivo"}, "PagoEfectivo"),
        ({"method": "OXXO"}, "OXXO"),
        ({"type": "", "payment_method": "MULTIBANCO"}, "Multibanco"),
        ({"type": "CASH_PAYMENT", "method": "SOMETHING_ELSE"}, "OXXO"),
        ({"type": "BILLET", "method": "OXXO"}, "Boleto"),  # the type is authoritative here
    ],
)
def test_payment_method_field(fields: dict[str, str], method: str) -> None:
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
        ("CO", "COP", "Baloto"),
        ("PE", "PEN", "Cash"),
        (None, "MXN", "OXXO"),  # no country: the currency tells it
        (None, "COP", "Baloto"),
        (None, "USD", "Cash"),
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
    payment_of(body)["type"] = kind
    payment = parse_json_event(body).payment
    assert payment.method is None
    assert not payment.has_slip


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


def test_billet_expiration_date_is_used_for_cash_slips() -> None:
    body = load("billet_printed_oxxo.json")
    payment_of(body)["billet_expiration_date"] = 1764357600000
    assert parse_json_event(body).payment.expires_at_ms == 1764357600000


@pytest.mark.parametrize(("value", "expected"), [(3, 3), ("3", 3), (3.0, 3), ("x", None)])
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
        ("waiting_payment", "PURCHASE_WAITING_PAYMENT"),
    ],
)
def test_v1_status_names_the_event(status: str, event: str) -> None:
    assert parse_v1_postback(v1_form() | {"status": status}).event == event


@pytest.mark.parametrize(
    ("fields", "method", "country"),
    [
        ({"payment_type": "billet", "currency": "BRL"}, "Boleto", "BR"),
        ({"payment_type": "cash_payment", "currency": "COP"}, "Baloto", "CO"),
        ({"payment_type": "cash_payment", "currency": "mxn"}, "OXXO", "MX"),
        ({"payment_type": "oxxo", "currency": ""}, "OXXO", ""),
        ({"payment_type": "credit_card", "currency": "BRL"}, None, "BR"),
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
