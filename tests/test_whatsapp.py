"""The WhatsApp click-to-chat link (issue 11 §1): the right number, or none, and the
message reading right once WhatsApp decodes it."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from relay.hotmart import Event, parse_json_event
from relay.records import Notice
from relay.render import Notification, Templates
from relay.whatsapp import whatsapp_number, whatsapp_url
from tests.conftest import fixture_json


@pytest.mark.parametrize(
    ("phone", "country", "number"),
    [
        # Brazil: checkout_phone_code (the area code) joined to checkout_phone at parse.
        ("11987654321", "BR", "5511987654321"),
        ("3133334444", "BR", "553133334444"),  # a landline: 8 digits after the area code
        # The number already holds its country code, with or without "+".
        ("5511987654321", "BR", "5511987654321"),
        ("+55 (31) 99123-4567", "BR", "5531991234567"),
        ("0055 31 99123 4567", "BR", "5531991234567"),
        ("011 98765-4321", "BR", "5511987654321"),  # a trunk 0 before the area code
        # Mexico and Colombia, as checkouts send them: country code inside checkout_phone.
        ("+52 55 1234 5678", "MX", "525512345678"),
        ("+52 1 55 1234 5678", "MX", "5215512345678"),  # the older mobile form
        ("55 1234 5678", "MX", "525512345678"),  # national: the country gives the code
        ("+57 300 123 4567", "CO", "573001234567"),
        ("300.123.4567", "CO", "573001234567"),
        ("+1 (415) 555-2671", "US", "14155552671"),
        # A country this table does not know: its own country code is enough.
        ("+44 20 7946 0958", "GB", "442079460958"),
        ("+44 20 7946 0958", "", "442079460958"),
    ],
)
def test_a_phone_becomes_its_international_digits(phone: str, country: str, number: str) -> None:
    assert whatsapp_number(phone, country) == number


@pytest.mark.parametrize(
    ("phone", "country"),
    [
        ("", "BR"),  # many checkouts send no phone at all
        ("987654321", "BR"),  # no area code: whose 98765-4321?
        ("12345", "MX"),
        ("55 1234 5678", ""),  # national, and no country to give it a code
        ("55 1234 5678", "AR"),  # national, from a country whose plan this does not know
        ("+55 31 1234", "BR"),  # too short for Brazil
        ("+52 55 1234 56789", "MX"),  # too long for Mexico
        ("+1 (015) 555-2671", "US"),  # no area code starts with 0
        ("+0 123 456 789", ""),
        ("+1234567", ""),  # under 8 digits: no such number
        ("+1234567890123456", ""),  # over E.164's 15 digits
        ("call me: 11 98765-4321", "BR"),
        ("11 98765-4321 ext 2", "BR"),
        ("١١٩٨٧٦٥٤٣٢١", "BR"),  # digits, but not ASCII ones
        ("++55 31 99123 4567", "BR"),
    ],
)
def test_what_cannot_be_a_real_number_gets_no_link(phone: str, country: str) -> None:
    assert whatsapp_number(phone, country) is None


def test_the_message_is_encoded_so_that_whatsapp_reads_it_back_exactly() -> None:
    message = 'Hola María, ¿cómo estás?\nTu ficha: https://x.example/p?a=1&b=2 #3 "100%"'
    url = whatsapp_url("525512345678", message)
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == ("https", "wa.me", "/525512345678")
    assert parse_qs(parts.query) == {"text": [message]}
    assert " " not in url and "\n" not in url and "&b=" not in url


def slip(name: str, **buyer: Any) -> Event:
    body = fixture_json(f"{name}.json")
    body["data"]["buyer"].update(buyer)
    return parse_json_event(body)


def link_of(event: Event, notice: Notice = Notice.SLIP, locale: str = "es") -> str | None:
    n = Notification(
        event, "K1", "Lucía", "Acme", locale, False, "m", notification=notice, whatsapp=True
    )
    body = json.loads(Templates().webhook_body(n))
    url: str | None = body["buyer"]["whatsapp_url"]
    return url


def text_of(url: str | None) -> list[str]:
    assert url is not None
    (text,) = parse_qs(urlsplit(url).query)["text"]
    return text.split("\n")


def test_the_slip_message_names_the_product_and_the_link_politely() -> None:
    url = link_of(slip("billet_printed_oxxo"))
    assert url is not None and url.startswith("https://wa.me/525512345678?text=")
    assert text_of(url) == [
        'Hola María, ¿cómo estás? Te escribo por tu compra de "Curso de Repostería Profesional".',
        "",
        "Aquí tienes tu ficha de pago OXXO: https://pay.hotmart.example/oxxo/HP1764271200123",
        "",
        "Si tienes cualquier duda para completar el pago, con gusto te ayudo.",
    ]


def test_a_brazilian_area_code_and_number_make_one_link_in_portuguese() -> None:
    event = slip("billet_printed_boleto", checkout_phone_code="31", checkout_phone="99123-4567")
    url = link_of(event, Notice.REMINDER, "pt")
    assert url is not None and url.startswith("https://wa.me/5531991234567?text=")
    lines = text_of(url)
    assert lines[0].startswith("Olá Ana, tudo bem?")
    assert lines[1] == "O seu boleto vence em breve."  # no expiry known without recovery's
    assert "O seu boleto: https://hotm.art/bHP0970394859" in lines


def test_a_pix_message_carries_the_code_verbatim() -> None:
    event = slip("billet_printed_pix")
    lines = text_of(link_of(event, Notice.SLIP, "en"))
    assert event.payment.pix_code is not None
    assert f"Your Pix copy-and-paste code (copy all of it): {event.payment.pix_code}" in lines


def test_an_expired_slip_message_offers_a_new_one() -> None:
    lines = text_of(link_of(slip("billet_printed_oxxo"), Notice.EXPIRED))
    assert lines == [
        'Hola María, ¿cómo estás? Te escribo por tu compra de "Curso de Repostería Profesional".'
        " Vi que la ficha de pago venció antes del pago. Si todavía te interesa, con gusto te"
        " ayudo a generar una nueva."
    ]


@pytest.mark.parametrize(
    "buyer", [{"checkout_phone": None}, {"checkout_phone": "12"}, {"checkout_phone": "n/a"}]
)
def test_no_phone_or_no_real_one_means_no_link(buyer: dict[str, Any]) -> None:
    assert link_of(slip("billet_printed_oxxo", **buyer)) is None


def test_no_link_without_buyer_data_or_without_recovery() -> None:
    event = slip("billet_printed_oxxo")
    withheld = event.model_copy(update={"buyer": None})  # what a test event carries
    assert link_of(withheld) is None
    n = Notification(event, "K1", "Lucía", "Acme", "es", False, "m")  # whatsapp off
    assert json.loads(Templates().webhook_body(n))["buyer"]["whatsapp_url"] is None


def test_a_producer_words_the_message_with_their_own_template(tmp_path: Any) -> None:
    (tmp_path / "whatsapp.es.txt").write_text("¡Hola! {{ product.name }} & {{ slip_link }}\n")
    event = slip("billet_printed_oxxo")
    n = Notification(event, "K1", "L", "A", "es", False, "m", whatsapp=True)
    url = json.loads(Templates(tmp_path).webhook_body(n))["buyer"]["whatsapp_url"]
    assert text_of(url) == [
        "¡Hola! Curso de Repostería Profesional & https://pay.hotmart.example/oxxo/HP1764271200123"
    ]
