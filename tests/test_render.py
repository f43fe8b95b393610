"""Tests for relay.render and relay.formatting: what affiliates actually read."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest

from relay import local_time
from relay.formatting import (
    TEST_TAGS,
    event_title,
    format_amount,
    format_code,
    format_expiry,
    format_phone,
    http_url,
    iso_utc,
    single_line,
)
from relay.hotmart import Buyer, Event, parse_json_event, parse_v1_postback
from relay.hotmart_payment import CASH_SLIP
from relay.local_time import zone_for
from relay.render import (
    DestinationAlert,
    Notification,
    RenderError,
    Templates,
    default_templates_dir,
)
from relay.samples import sample_slip_event
from tests.conftest import FIXTURES, WEBHOOK_BODY_KEYS, WEBHOOK_PAYMENT_KEYS

LOCALES = ("es", "pt", "en")
PIX_CODE = (
    "00020101021226870014br.gov.bcb.pix2565qrcode.example/pix/v2/cobv/"
    "9d36b84f5a2e4c2b8f0f0f0f0f0f0f0f5204000053039865802BR5920Hotmart Example"
    "6009SAO PAULO62070503***6304ABCD"
)

# What each fixture must show, written out by hand so a formatting bug cannot hide.
EXPECTED: dict[str, dict[str, Any]] = {
    "billet_printed_oxxo": {
        "product": "Curso de Repostería Profesional",
        "method": "OXXO",
        "link": "https://pay.hotmart.example/oxxo/HP1764271200123",
        "code": "9300 0004 2176 4271 2001 2300 0049 9007",
        "amount": {"es": "MXN 499.00", "pt": "MXN 499.00", "en": "MXN 499.00"},
        "buyer": "María González",
        "contact": ("maria.gonzalez@example.com", "+52 55 1234 5678"),
    },
    "billet_printed_baloto": {
        "product": "Curso de Repostería Profesional",
        "method": "Baloto",
        "link": "https://pay.hotmart.example/baloto/HP1764271300456",
        "code": "7700 0176 4271 3004 56",
        "amount": {"es": "COP 189.900", "pt": "COP 189.900", "en": "COP 189.900"},
        "buyer": "Andrés Rojas",
        "contact": ("andres.rojas@example.com", "+57 300 123 4567"),
    },
    "billet_printed_boleto": {
        "product": "Método Confeitaria Lucrativa",
        "method": "Boleto",
        "link": "https://hotm.art/bHP0970394859",
        "code": "34191.09669 36967.100540 89356.830003 5 10720000099700",
        "amount": {"es": "BRL 997,00", "pt": "R$ 997,00", "en": "BRL 997,00"},
        "buyer": "Ana Souza",
        "contact": ("ana.souza@example.com", "+55 11 98765-4321"),
    },
    "billet_printed_pix": {
        "product": "Método Confeitaria Lucrativa",
        "method": "Pix",
        "link": "https://pay.hotmart.example/pix/qr/HP0970394999.png",
        "code": PIX_CODE,
        "amount": {"es": "BRL 997,00", "pt": "R$ 997,00", "en": "BRL 997,00"},
        "buyer": "Ana Souza",
        "contact": ("ana.souza@example.com", "+55 11 98765-4321"),
    },
    "purchase_approved_oxxo": {
        "product": "Curso de Repostería Profesional",
        "method": "OXXO",
        "link": "https://pay.hotmart.example/oxxo/HP1764271200123",
        "code": "9300 0004 2176 4271 2001 2300 0049 9007",
        "amount": {"es": "MXN 499.00", "pt": "MXN 499.00", "en": "MXN 499.00"},
        "buyer": "María González",
        "contact": ("maria.gonzalez@example.com", "+52 55 1234 5678"),
    },
}

SUBJECTS = {
    ("billet_printed_oxxo", "es"): "Ficha OXXO generada: Curso de Repostería Profesional",
    ("billet_printed_oxxo", "pt"): "Guia de pagamento OXXO gerada: Curso de Repostería Profesional",
    ("billet_printed_oxxo", "en"): "OXXO slip issued: Curso de Repostería Profesional",
    ("billet_printed_boleto", "pt"): "Boleto gerado: Método Confeitaria Lucrativa",
    ("billet_printed_boleto", "es"): "Boleto generado: Método Confeitaria Lucrativa",
    ("billet_printed_pix", "en"): "Pix code issued: Método Confeitaria Lucrativa",
    ("billet_printed_baloto", "es"): "Ficha Baloto generada: Curso de Repostería Profesional",
    ("purchase_approved_oxxo", "es"): (
        "Compra aprobada: Curso de Repostería Profesional (pago con OXXO)"
    ),
    ("purchase_approved_oxxo", "pt"): (
        "Compra aprovada: Curso de Repostería Profesional (pagamento via OXXO)"
    ),
    ("purchase_approved_oxxo", "en"): (
        "Purchase approved: Curso de Repostería Profesional (OXXO payment)"
    ),
}


def load(name: str) -> Event:
    with (FIXTURES / f"{name}.json").open(encoding="utf-8") as handle:
        return parse_json_event(json.load(handle))


def notify(event: Event, locale: str = "es", *, is_test: bool = False) -> Notification:
    affiliate = event.affiliates[0] if event.affiliates else None
    return Notification(
        event=event,
        affiliate_code=affiliate.code if affiliate else "K0",
        affiliate_name=affiliate.name if affiliate else "",
        producer_name="Dulce Academia",
        locale=locale,
        is_test=is_test,
        message_id="msg_01TEST",
    )


def with_product_name(event: Event, name: str) -> Event:
    return event.model_copy(update={"product": event.product.model_copy(update={"name": name})})


@pytest.fixture
def templates() -> Templates:
    return Templates()


# --- emails from every fixture, in every locale ---------------------------------------


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("fixture", sorted(EXPECTED))
def test_email_holds_everything_the_affiliate_needs(
    templates: Templates, fixture: str, locale: str
) -> None:
    want = EXPECTED[fixture]
    email = templates.email(notify(load(fixture), locale))

    assert want["product"] in email.subject
    assert want["method"] in email.subject
    assert "\n" not in email.subject
    assert "\r" not in email.subject
    for body in (email.text, email.html):
        assert want["link"] in body
        assert want["code"] in body
        assert want["amount"][locale] in body
        assert want["buyer"] in body
        for contact in want["contact"]:
            assert contact in body
        assert "None" not in body


@pytest.mark.parametrize(("fixture", "locale"), sorted(SUBJECTS))
def test_subject_wording(templates: Templates, fixture: str, locale: str) -> None:
    assert templates.email(notify(load(fixture), locale)).subject == SUBJECTS[fixture, locale]


def test_pix_email_shows_qr_link_code_verbatim_and_expiry(templates: Templates) -> None:
    email = templates.email(notify(load("billet_printed_pix"), "pt"))
    assert "Pix copia e cola" in email.text
    assert f"\n{PIX_CODE}\n" in email.text  # on its own line, unchanged, for copying
    assert "QR Code do Pix:\nhttps://pay.hotmart.example/pix/qr/HP0970394999.png" in email.text
    assert "Vencimento: 28/11/2025 16:20 (horário de Brasília)" in email.text
    assert 'href="https://pay.hotmart.example/pix/qr/HP0970394999.png"' in email.html


def test_boleto_email_puts_the_linha_digitavel_on_its_own_line(templates: Templates) -> None:
    text = templates.email(notify(load("billet_printed_boleto"), "pt")).text
    assert "Linha digitável:\n34191.09669 36967.100540 89356.830003 5 10720000099700\n" in text
    assert "Link do boleto:\nhttps://hotm.art/bHP0970394859\n" in text


def test_locales_are_translations_not_copies(templates: Templates) -> None:
    event = load("billet_printed_oxxo")
    texts = {locale: templates.email(notify(event, locale)).text for locale in LOCALES}
    assert texts["es"].startswith("Hola Lucía Fernández:")
    assert texts["pt"].startswith("Olá Lucía Fernández,")
    assert texts["en"].startswith("Hello Lucía Fernández,")
    assert "Comprador\nNombre: María González" in texts["es"]
    assert "Comprador\nNome: María González" in texts["pt"]
    assert "Buyer\nName: María González" in texts["en"]
    htmls = {locale: templates.email(notify(event, locale)).html for locale in LOCALES}
    assert '<html lang="es">' in htmls["es"]
    assert '<html lang="pt-BR">' in htmls["pt"]
    assert "Open the payment slip" in htmls["en"]


@pytest.mark.parametrize("locale", LOCALES)
def test_generic_event_is_stated_in_words(templates: Templates, locale: str) -> None:
    event = load("purchase_approved_oxxo").model_copy(update={"event": "PURCHASE_EXPIRED"})
    email = templates.email(notify(event, locale))
    words = {"es": "Compra vencida", "pt": "Compra expirada", "en": "Purchase expired"}[locale]
    assert email.subject.startswith(f"{words}: Curso de Repostería Profesional")
    assert words in email.text
    assert words in email.html
    assert "HP1764271200123" in email.text


def test_approved_email_says_the_sale_was_paid(templates: Templates) -> None:
    event = load("purchase_approved_oxxo")
    assert "¡Buenas noticias! Se confirmó el pago (OXXO)" in templates.email(notify(event)).text
    assert "has been confirmed" in templates.email(notify(event, "en")).text


def test_without_buyer_data_the_email_has_no_buyer_section(templates: Templates) -> None:
    event = load("billet_printed_oxxo").model_copy(update={"buyer": None})
    email = templates.email(notify(event, "en"))
    assert "Buyer" not in email.text
    assert "María" not in email.html
    assert "9300 0004 2176 4271 2001 2300 0049 9007" in email.text


def test_event_without_slip_still_renders(templates: Templates) -> None:
    # Hotmart's "send test" button posts a credit card sale as BILLET_PRINTED.
    email = templates.email(notify(load("test_button_billet_printed"), "en"))
    assert email.subject == "Payment slip issued: Produto test postback2"
    assert "BRL 1.500,00" in email.text
    assert "Slip link" not in email.text


def all_fixture_events() -> list[Event]:
    events = [load(path.stem) for path in sorted(FIXTURES.glob("*.json"))]
    for path in sorted(FIXTURES.glob("*.form")):
        events.append(parse_v1_postback(dict(parse_qsl(path.read_text(encoding="utf-8")))))
    return events


@pytest.mark.parametrize("locale", LOCALES)
def test_every_fixture_renders_in_every_channel(templates: Templates, locale: str) -> None:
    events = all_fixture_events()
    assert len(events) == 16
    for event in events:
        email = templates.email(notify(event, locale))
        assert event.product.name in email.subject
        assert event.purchase.transaction in email.text
        assert event.purchase.transaction in email.html
        body = json.loads(templates.webhook_body(notify(event, locale)))
        assert body["event_id"] == event.id


# --- test mode ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("locale", "tag", "line"),
    [
        ("es", "[PRUEBA]", "PRUEBA: este es un aviso de prueba"),
        ("pt", "[TESTE]", "TESTE: este é um aviso de teste"),
        ("en", "[TEST]", "TEST: this is a test notice"),
    ],
)
@pytest.mark.parametrize("fixture", ["billet_printed_oxxo", "purchase_approved_oxxo"])
def test_test_notifications_are_marked(
    templates: Templates, fixture: str, locale: str, tag: str, line: str
) -> None:
    event = load(fixture)
    marked = templates.email(notify(event, locale, is_test=True))
    plain = templates.email(notify(event, locale, is_test=False))
    assert marked.subject == f"{tag} {plain.subject}"
    assert line in marked.text
    assert line in marked.html
    assert line not in plain.text
    assert tag not in plain.subject
    assert json.loads(templates.webhook_body(notify(event, locale, is_test=True)))["test"] is True
    assert json.loads(templates.webhook_body(notify(event, locale)))["test"] is False


def test_override_subject_cannot_drop_the_test_tag(tmp_path: Path) -> None:
    (tmp_path / "billet_printed.en.subject.txt").write_text("Slip for {{ product.name }}")
    email = Templates(tmp_path).email(notify(load("billet_printed_oxxo"), "en", is_test=True))
    assert email.subject == "[TEST] Slip for Curso de Repostería Profesional"


# --- injection and escaping -------------------------------------------------------------


def test_html_is_autoescaped_and_text_is_not(templates: Templates) -> None:
    event = with_product_name(load("billet_printed_oxxo"), "<script>alert(1)</script>")
    email = templates.email(notify(event, "en"))
    assert "<script>" not in email.html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in email.html
    assert '"<script>alert(1)</script>"' in email.text  # text/plain is shown, never run


def test_javascript_slip_url_never_becomes_a_link(templates: Templates) -> None:
    event = load("billet_printed_oxxo")
    payment = event.payment.model_copy(update={"slip_url": "javascript:alert(1)"})
    html = templates.email(notify(event.model_copy(update={"payment": payment}))).html
    assert 'href="javascript' not in html
    assert "javascript:alert(1)" in html  # still shown, as text


def test_line_breaks_in_data_cannot_add_headers(tmp_path: Path, templates: Templates) -> None:
    hostile = "María\r\nBcc: x@evil.example\u2028X-Evil: 1"
    event = with_product_name(load("billet_printed_oxxo"), hostile)
    event = event.model_copy(update={"buyer": Buyer(name=hostile, email="m@example.com")})
    subject = templates.email(notify(event)).subject
    assert subject == "Ficha OXXO generada: María Bcc: x@evil.example X-Evil: 1"
    # An override that puts the buyer's name in the subject is folded the same way.
    (tmp_path / "billet_printed.es.subject.txt").write_text("{{ buyer.name }}\n\nsecond line\n")
    assert Templates(tmp_path).email(notify(event)).subject == (
        "María Bcc: x@evil.example X-Evil: 1 second line"
    )


# --- webhook JSON -------------------------------------------------------------------------


def test_webhook_body_has_exactly_the_documented_keys(templates: Templates) -> None:
    body = json.loads(templates.webhook_body(notify(load("billet_printed_oxxo"))))
    assert body == {
        "event": "PURCHASE_BILLET_PRINTED",
        "event_id": "6d2b4c1e-0a3f-4e0b-9c1d-7f5e2a9b8c01",
        "occurred_at": "2025-11-27T19:20:00Z",
        "test": False,
        "notification": "slip",
        "affiliate": {"code": "K12345678M", "name": "Lucía Fernández"},
        "product": {
            "id": "3012345",
            "ucode": "a1b2c3d4-1111-4222-8333-944455556666",
            "name": "Curso de Repostería Profesional",
        },
        "purchase": {
            "transaction": "HP1764271200123",
            "status": "BILLET_PRINTED",
            "price": {"value": 499.0, "currency": "MXN"},
            "country": "MX",
        },
        "payment": {
            "type": "CASH_PAYMENT",
            "method": "OXXO",
            "slip_url": "https://pay.hotmart.example/oxxo/HP1764271200123",
            "slip_code": "93000004217642712001230000499007",
            "pix_code": None,
            "pix_qrcode": None,
            "expires_at": None,
        },
        "buyer": {
            "name": "María González",
            "email": "maria.gonzalez@example.com",
            "phone": "+52 55 1234 5678",
            "whatsapp_url": None,  # only with sale recovery
        },
    }


@pytest.mark.parametrize("fixture", sorted(EXPECTED))
def test_webhook_body_key_sets_for_every_fixture(templates: Templates, fixture: str) -> None:
    raw = templates.webhook_body(notify(load(fixture)))
    assert isinstance(raw, bytes)
    body = json.loads(raw.decode("utf-8"))
    assert set(body) == WEBHOOK_BODY_KEYS
    assert set(body["affiliate"]) == {"code", "name"}
    assert set(body["product"]) == {"id", "ucode", "name"}
    assert set(body["purchase"]) == {"transaction", "status", "price", "country"}
    assert set(body["purchase"]["price"]) == {"value", "currency"}
    assert set(body["payment"]) == WEBHOOK_PAYMENT_KEYS
    assert set(body["buyer"]) == {"name", "email", "phone", "whatsapp_url"}
    assert body["payment"]["method"] == EXPECTED[fixture]["method"]


def test_webhook_pix_fields(templates: Templates) -> None:
    body = json.loads(templates.webhook_body(notify(load("billet_printed_pix"), "pt")))
    assert body["payment"]["pix_code"] == PIX_CODE
    assert body["payment"]["pix_qrcode"] == "https://pay.hotmart.example/pix/qr/HP0970394999.png"
    assert body["payment"]["expires_at"] == "2025-11-28T19:20:00Z"
    assert body["payment"]["slip_url"] is None
    assert body["purchase"]["price"] == {"value": 997.0, "currency": "BRL"}


def test_webhook_price_is_an_exact_number_and_missing_buyer_is_null(
    templates: Templates,
) -> None:
    event = load("billet_printed_baloto")
    purchase = event.purchase.model_copy(update={"price": Decimal("189900.10")})
    event = event.model_copy(update={"purchase": purchase, "buyer": None})
    raw = templates.webhook_body(notify(event)).decode()
    assert '"value":189900.10,' in raw  # the Decimal's own digits, never a float's
    body = json.loads(raw, parse_float=Decimal)
    assert body["purchase"]["price"]["value"] == Decimal("189900.10")
    assert body["buyer"] == {"name": None, "email": None, "phone": None, "whatsapp_url": None}


def test_webhook_survives_hostile_data(templates: Templates) -> None:
    hostile = 'Curso "VIP" \\ </script>\n\u2028 ñ 🎂'
    event = with_product_name(load("billet_printed_oxxo"), hostile)
    body = json.loads(templates.webhook_body(notify(event)))
    assert body["product"]["name"] == hostile


# --- overrides, errors and check() ------------------------------------------------------


def test_override_file_wins_and_the_rest_stay_default(tmp_path: Path) -> None:
    (tmp_path / "billet_printed.es.txt").write_text("Código: {{ formatted_code }}\n")
    email = Templates(tmp_path).email(notify(load("billet_printed_oxxo")))
    assert email.text == "Código: 9300 0004 2176 4271 2001 2300 0049 9007\n"
    assert email.subject == "Ficha OXXO generada: Curso de Repostería Profesional"
    assert "Abrir la ficha de pago" in email.html


def test_override_webhook_body(tmp_path: Path) -> None:
    (tmp_path / "webhook.json").write_text('{"tx": {{ purchase.transaction|tojson }}}')
    body = Templates(tmp_path).webhook_body(notify(load("billet_printed_oxxo")))
    assert json.loads(body) == {"tx": "HP1764271200123"}


def test_a_template_edited_while_running_is_read_again_only_at_restart(tmp_path: Path) -> None:
    # Jinja's auto_reload would stat the file on every render; templates are checked at
    # start, so an edit takes effect when the relay (a new Templates) starts again.
    (tmp_path / "billet_printed.es.txt").write_text("first\n")
    running = Templates(tmp_path)
    assert running.email(notify(load("billet_printed_oxxo"))).text == "first\n"
    (tmp_path / "billet_printed.es.txt").write_text("second, and longer\n")
    assert running.email(notify(load("billet_printed_oxxo"))).text == "first\n"
    assert Templates(tmp_path).email(notify(load("billet_printed_oxxo"))).text == (
        "second, and longer\n"
    )


def test_override_with_a_syntax_error(tmp_path: Path) -> None:
    (tmp_path / "billet_printed.es.html").write_text("<p>\n\n{{ product.name }</p>\n")
    broken = Templates(tmp_path)
    with pytest.raises(RenderError, match=r"^billet_printed\.es\.html: line 3: unexpected '}'"):
        broken.email(notify(load("billet_printed_oxxo")))
    assert broken.check() == ["billet_printed.es.html: line 3: unexpected '}'"]
    assert broken.email(notify(load("billet_printed_oxxo"), "en")).subject  # others still work


def test_override_with_an_unknown_variable(tmp_path: Path) -> None:
    (tmp_path / "billet_printed.en.txt").write_text("Hi\n{{ buyer.nmae }}\n")
    broken = Templates(tmp_path)
    with pytest.raises(RenderError, match=r"^billet_printed\.en\.txt: line 2: .*nmae"):
        broken.email(notify(load("billet_printed_oxxo"), "en"))
    problems = broken.check()
    assert len(problems) == 1
    assert problems[0].startswith("billet_printed.en.txt: line 2:")


def test_override_that_renders_invalid_json(tmp_path: Path) -> None:
    (tmp_path / "webhook.json").write_text('{"name": "{{ product.name }}", }')
    broken = Templates(tmp_path)
    with pytest.raises(RenderError, match=r"^webhook\.json: rendered body is not valid JSON"):
        broken.webhook_body(notify(load("billet_printed_oxxo")))
    assert broken.check()[0].startswith("webhook.json: rendered body is not valid JSON")


def test_webhook_json_rejects_nan(tmp_path: Path) -> None:
    (tmp_path / "webhook.json").write_text('{"value": NaN}')
    with pytest.raises(RenderError, match="NaN"):
        Templates(tmp_path).webhook_body(notify(load("billet_printed_oxxo")))


def test_sandbox_refuses_internals(tmp_path: Path) -> None:
    (tmp_path / "generic.es.txt").write_text("{{ event.__class__.__mro__ }}")
    with pytest.raises(RenderError, match=r"^generic\.es\.txt: line 1: .*unsafe"):
        Templates(tmp_path).email(notify(load("purchase_approved_oxxo")))


def test_sandbox_is_immutable(tmp_path: Path) -> None:
    (tmp_path / "generic.es.txt").write_text("{% set xs = [1] %}{{ xs.append(2) }}")
    with pytest.raises(RenderError, match=r"^generic\.es\.txt: line 1: .*unsafe"):
        Templates(tmp_path).email(notify(load("purchase_approved_oxxo")))


def test_runtime_error_in_an_override_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "generic.pt.txt").write_text("ok\n{{ 1 // 0 }}\n")
    with pytest.raises(RenderError, match=r"^generic\.pt\.txt: line 2: ZeroDivisionError"):
        Templates(tmp_path).email(notify(load("purchase_approved_oxxo"), "pt"))


def test_missing_included_template(tmp_path: Path) -> None:
    (tmp_path / "alert.txt").write_text("{% include 'nowhere.txt' %}")
    alert = DestinationAlert("Acme", "acme/K1/0", "email a@example.com", "boom", 20)
    with pytest.raises(RenderError, match=r"^alert\.txt: template 'nowhere\.txt' not found"):
        Templates(tmp_path).alert_email(alert)


def test_defaults_check_clean(templates: Templates) -> None:
    assert templates.check() == []


def test_check_reports_a_missing_override_folder(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    assert Templates(missing).check() == [f"{missing}: templates folder does not exist"]


def test_unknown_locale_is_a_render_error(templates: Templates) -> None:
    with pytest.raises(RenderError, match="unknown locale 'fr'"):
        templates.email(notify(load("billet_printed_oxxo"), "fr"))


def test_default_templates_dir_is_the_source_tree_folder() -> None:
    folder = default_templates_dir()
    assert folder == Path(__file__).parent.parent / "templates"
    for locale in LOCALES:
        for kind in ("billet_printed", "generic"):
            for suffix in ("subject.txt", "txt", "html"):
                assert (folder / f"{kind}.{locale}.{suffix}").is_file()
    for name in ("webhook.json", "alert.subject.txt", "alert.txt"):
        assert (folder / name).is_file()


# --- the shared HTML layout and partials ---------------------------------------------------

HTML_LABELS = {
    "es": ("Producto", "Transacción", "Monto", "Medio de pago", "Comprador", "Nombre", "Correo"),
    "pt": ("Produto", "Transação", "Valor", "Forma de pagamento", "Comprador", "Nome", "E-mail"),
    "en": ("Product", "Transaction", "Amount", "Payment method", "Buyer", "Name", "Email"),
}
PARTIALS = (
    "_layout.html",
    "_billet_printed.html",
    "_generic.html",
    "_words.es.html",
    "_words.pt.html",
    "_words.en.html",
)


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("fixture", ["billet_printed_oxxo", "purchase_approved_oxxo"])
def test_html_labels_stay_translated(templates: Templates, fixture: str, locale: str) -> None:
    html = templates.email(notify(load(fixture), locale)).html
    for label in HTML_LABELS[locale]:
        assert f">{label}</" in html
    for other in LOCALES:
        if other != locale:
            assert f">{HTML_LABELS[other][0]}</" not in html  # Producto, Produto, Product


def test_portuguese_boleto_words_in_html(templates: Templates) -> None:
    html = templates.email(notify(load("billet_printed_boleto"), "pt")).html
    assert ">Abrir o boleto</a>" in html
    assert ">Linha digitável:</p>" in html
    html = templates.email(notify(load("billet_printed_oxxo"), "pt")).html
    assert ">Abrir a guia de pagamento</a>" in html
    assert ">Código de pagamento:</p>" in html


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("fixture", ["billet_printed_oxxo", "purchase_approved_oxxo"])
def test_layout_and_partials_are_autoescaped(
    templates: Templates, fixture: str, locale: str
) -> None:
    # The greeting, footer and banner come from _words.<locale>.html via _layout.html.
    script = "<script>alert(1)</script>"
    event = with_product_name(load(fixture), script)
    n = Notification(event, "K1", script, script, locale, True, "m")
    html = templates.email(n).html
    assert "<script>" not in html
    assert html.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 4  # title, hello, table, footer


def test_default_partials_exist_and_are_compiled_but_not_rendered_alone() -> None:
    folder = default_templates_dir()
    for name in PARTIALS:
        assert (folder / name).is_file()
    # Rendered alone, the layout would fail: it takes `locale` and more from the message.
    assert Templates().check() == []


def test_override_of_the_shared_layout_changes_every_html_email(tmp_path: Path) -> None:
    layout = (default_templates_dir() / "_layout.html").read_text(encoding="utf-8")
    wrapper = '<div style="max-width:560px;margin:0 auto;'
    assert wrapper in layout
    changed = layout.replace(wrapper, "<p>Logo of {{ producer_name }}</p>\n" + wrapper, 1)
    (tmp_path / "_layout.html").write_text(changed, encoding="utf-8")
    overridden = Templates(tmp_path)
    assert overridden.check() == []
    for fixture in ("billet_printed_oxxo", "purchase_approved_oxxo"):
        for locale in LOCALES:
            n = notify(load(fixture), locale)
            email = overridden.email(n)
            default = Templates().email(n)
            assert "<p>Logo of Dulce Academia</p>\n<div" in email.html
            assert email.html.replace("<p>Logo of Dulce Academia</p>\n", "") == default.html
            assert email.text == default.text


def test_override_of_one_locales_words(tmp_path: Path) -> None:
    words = (default_templates_dir() / "_words.es.html").read_text(encoding="utf-8")
    (tmp_path / "_words.es.html").write_text(words.replace('"Comprador"', '"Cliente"'))
    overridden = Templates(tmp_path)
    event = load("billet_printed_oxxo")
    assert ">Cliente</h3>" in overridden.email(notify(event, "es")).html
    assert ">Comprador</h3>" in overridden.email(notify(event, "pt")).html
    assert "Comprador\n" in overridden.email(notify(event, "es")).text  # text has its own


def test_override_of_a_whole_html_email_without_the_layout(tmp_path: Path) -> None:
    (tmp_path / "billet_printed.es.html").write_text("<p>{{ product.name }}</p>\n")
    overridden = Templates(tmp_path)
    event = load("billet_printed_oxxo")
    assert overridden.email(notify(event)).html == "<p>Curso de Repostería Profesional</p>\n"
    assert overridden.email(notify(event, "en")).html == Templates().email(notify(event, "en")).html
    assert overridden.check() == []


def test_override_of_an_email_that_extends_the_shared_layout(tmp_path: Path) -> None:
    (tmp_path / "billet_printed.es.html").write_text(
        '{% extends "_billet_printed.html" %}\n'
        "{% block title %}Ficha: {{ product.name }}{% endblock %}\n"
        "{% block message %}\n<p>Mensaje de {{ producer_name }}</p>\n{% endblock %}\n"
    )
    html = Templates(tmp_path).email(notify(load("billet_printed_oxxo"))).html
    assert "<title>Ficha: Curso de Repostería Profesional</title>" in html
    assert "<p>Mensaje de Dulce Academia</p>\n<p><a href=" in html
    assert ">Abrir la ficha de pago</a>" in html
    assert ">Comprador</h3>" in html


@pytest.mark.parametrize(
    ("partial", "fixture", "locale"),
    [
        ("_layout.html", "purchase_approved_oxxo", "en"),
        ("_billet_printed.html", "billet_printed_oxxo", "es"),
        ("_generic.html", "purchase_approved_oxxo", "pt"),
        ("_words.pt.html", "billet_printed_oxxo", "pt"),
    ],
)
def test_syntax_error_in_a_partial_names_the_partial(
    tmp_path: Path, partial: str, fixture: str, locale: str
) -> None:
    (tmp_path / partial).write_text("<p>\n\n{{ product.name }</p>\n")
    broken = Templates(tmp_path)
    problem = f"{partial}: line 3: unexpected '}}'"
    with pytest.raises(RenderError) as caught:
        broken.email(notify(load(fixture), locale))
    assert str(caught.value) == problem
    assert broken.check() == [problem]  # once, though several emails use it
    assert broken.webhook_body(notify(load(fixture), locale))  # the rest still work


def test_runtime_error_in_a_partial_names_the_partial_and_line(tmp_path: Path) -> None:
    (tmp_path / "_generic.html").write_text(
        '{% extends "_layout.html" %}\n{% block title %}{{ product.nmae }}{% endblock %}\n'
    )
    broken = Templates(tmp_path)
    with pytest.raises(RenderError, match=r"^_generic\.html: line 2: .*nmae"):
        broken.email(notify(load("purchase_approved_oxxo"), "en"))
    problems = broken.check()
    assert len(problems) == 1
    assert problems[0].startswith("_generic.html: line 2: ")
    assert broken.email(notify(load("billet_printed_oxxo"), "en")).html  # not used there


def test_partials_are_compiled_but_never_rendered_alone(tmp_path: Path) -> None:
    (tmp_path / "_unused.html").write_text("{{ only_given_by_a_message_that_includes_it }}\n")
    assert Templates(tmp_path).check() == []
    (tmp_path / "_unused.html").write_text("{% if %}\n")
    assert Templates(tmp_path).check() == [
        "_unused.html: line 1: Expected an expression, got 'end of statement block'"
    ]


# --- the alert ------------------------------------------------------------------------------


def test_alert_email(templates: Templates) -> None:
    alert = DestinationAlert(
        producer_name="Dulce Academia",
        destination_key="acme/K12345678M/1",
        destination_label="webhook https://ana.example.com/hooks",
        last_error="HTTP 500: <html>oops</html>\r\nX-Evil: 1",
        consecutive_failures=20,
    )
    email = templates.alert_email(alert)
    assert email.subject == "relay: destination acme/K12345678M/1 disabled after 20 failures"
    assert "webhook https://ana.example.com/hooks" in email.text
    assert "HTTP 500: <html>oops</html>" in email.text
    assert "relay destinations --enable acme/K12345678M/1" in email.text
    assert "&lt;html&gt;oops&lt;/html&gt;" in email.html
    assert "<html>" not in email.html


# --- formatting helpers ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "method", "shown"),
    [
        (
            "34191096693696710054089356830003510720000099700",
            "Boleto",
            "34191.09669 36967.100540 89356.830003 5 10720000099700",
        ),
        (
            "858900000001234567890123456789012345678901234567",
            "Boleto",
            "8589 0000 0001 2345 6789 0123 4567 8901 2345 6789 0123 4567",
        ),
        ("93000004217642712001230000499007", "OXXO", "9300 0004 2176 4271 2001 2300 0049 9007"),
        ("770001764271300456", "Baloto", "7700 0176 4271 3004 56"),
        ("123", None, "123"),
        ("ABC-123 x", "OXXO", "ABC-123 x"),
        ("0002010102", "Pix", "0002010102"),  # all digits, still never regrouped
        (PIX_CODE, "Pix", PIX_CODE),
        ("١٢٣٤٥٦", None, "١٢٣٤٥٦"),  # non-ASCII digits are not a barcode
        ("", "OXXO", ""),
        (None, None, ""),
    ],
)
def test_format_code(code: str | None, method: str | None, shown: str) -> None:
    assert format_code(code, method) == shown


@pytest.mark.parametrize(
    ("value", "currency", "locale", "shown"),
    [
        (Decimal("499"), "MXN", "en", "MXN 499.00"),
        (Decimal("499"), "MXN", "es", "MXN 499.00"),  # Mexico writes point decimals
        (Decimal("1499.5"), "MXN", "pt", "MXN 1,499.50"),
        (Decimal("10"), "XYZ", "pt", "XYZ 10,00"),  # unknown currency: the reader's locale
        (Decimal("997.0"), "BRL", "pt", "R$ 997,00"),
        (Decimal("997.0"), "BRL", "en", "BRL 997,00"),
        (Decimal("1234567.891"), "BRL", "pt", "R$ 1.234.567,89"),
        (Decimal("1234567.891"), "USD", "en", "USD 1,234,567.89"),
        (Decimal("189900.0"), "COP", "es", "COP 189.900"),
        (Decimal("189900.5"), "cop", "en", "COP 189.901"),  # half rounds up
        (Decimal("15990"), "CLP", "es", "CLP 15.990"),
        (Decimal("0.005"), "MXN", "en", "MXN 0.01"),
        (Decimal("-12.5"), "MXN", "es", "MXN -12.50"),
        (Decimal("12"), "", "en", "12.00"),
        (None, "MXN", "es", ""),
        (Decimal("NaN"), "MXN", "es", ""),
    ],
)
def test_format_amount(value: Decimal | None, currency: str, locale: str, shown: str) -> None:
    assert format_amount(value, currency, locale) == shown


def test_format_amount_beyond_decimal_precision_is_shown_raw() -> None:
    assert format_amount(Decimal("1E+40"), "MXN", "en") == "MXN 1E+40"


def test_dates() -> None:
    assert format_expiry(1_764_357_600_000) == "2025-11-28 19:20 UTC"
    assert format_expiry(None) == ""
    assert iso_utc(1_764_357_600_000) == "2025-11-28T19:20:00Z"
    assert iso_utc(1_764_357_600_123) == "2025-11-28T19:20:00.123Z"
    assert iso_utc(None) is None
    assert iso_utc(10**20) is None  # out of range is unknown, not a crash
    assert format_expiry(10**20) == ""


def test_single_line() -> None:
    assert single_line("a\r\nBcc: b\u2028c\x85d\x00e\tf  g\n") == "a Bcc: b c d e f g"
    assert single_line("Curso de Repostería") == "Curso de Repostería"


def test_http_url() -> None:
    assert http_url("https://x.example/a?b=1") == "https://x.example/a?b=1"
    assert http_url(" HTTP://x.example ") == "HTTP://x.example"
    assert http_url("javascript:alert(1)") == ""
    assert http_url("data:text/html,x") == ""
    assert http_url(None) == ""


def test_event_title() -> None:
    assert event_title("PURCHASE_APPROVED", "es") == "Compra aprobada"
    assert event_title("PURCHASE_APPROVED", "pt") == "Compra aprovada"
    assert event_title("PURCHASE_APPROVED", "en") == "Purchase approved"
    assert event_title("SOMETHING_NEW", "es") == "SOMETHING_NEW"


@pytest.mark.parametrize("locale", LOCALES)
def test_filters_are_usable_from_overrides(tmp_path: Path, locale: str) -> None:
    (tmp_path / f"billet_printed.{locale}.txt").write_text(
        "{{ payment.pix_code|format_code(payment.method) }}|"
        "{{ purchase.price|format_amount(purchase.currency, locale) }}|"
        "{{ payment.expires_at_ms|format_expiry }}|{{ event.created_at_ms|iso_utc }}"
    )
    text = Templates(tmp_path).email(notify(load("billet_printed_pix"), locale)).text
    amount = EXPECTED["billet_printed_pix"]["amount"][locale]
    assert text == f"{PIX_CODE}|{amount}|2025-11-28 19:20 UTC|2025-11-27T19:20:00Z"


# --- what real bodies bring to the emails (issue 7 §1 and §4) --------------------------------


@pytest.mark.parametrize(
    ("country", "locale", "shown"),
    [
        ("BR", "pt", "28/11/2025 16:20 (horário de Brasília)"),
        ("BR", "en", "2025-11-28 16:20 (Brasília time)"),
        ("MX", "es", "28/11/2025 13:20 (hora de Ciudad de México)"),
        ("MX", "pt", "28/11/2025 13:20 (horário de Cidade do México)"),
        ("MX", "en", "2025-11-28 13:20 (Mexico City time)"),
        ("CO", "es", "28/11/2025 14:20 (hora de Bogotá)"),
        ("cl", "es", "28/11/2025 16:20 (hora de Santiago)"),  # Chile's summer time
        ("ES", "es", "28/11/2025 20:20 (hora de Madrid)"),
        ("US", "es", "28/11/2025 19:20 UTC"),  # several zones, none dominant: UTC, named
        ("", "es", "28/11/2025 19:20 UTC"),
        ("", "en", "2025-11-28 19:20 UTC"),
        ("BR", "", "2025-11-28 16:20 (Brasília time)"),
    ],
)
def test_expiry_is_shown_in_the_buyer_countrys_zone_named(
    country: str, locale: str, shown: str
) -> None:
    assert format_expiry(1_764_357_600_000, country, locale) == shown


def test_the_mexican_summer_time_is_gone_and_the_zone_data_knows() -> None:
    # Mexico dropped summer time in 2022: July is UTC-6 too. A fixed offset table would
    # have got one of these wrong; the IANA data gets both right.
    july = int(datetime(2026, 7, 1, 18, tzinfo=UTC).timestamp() * 1000)
    assert format_expiry(july, "MX", "es") == "01/07/2026 12:00 (hora de Ciudad de México)"


def test_a_zone_this_machine_lacks_falls_back_to_utc_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert zone_for("Nowhere/Atlantis") is UTC
    assert zone_for("../etc/passwd") is UTC
    # Fault injection: Brazil's zone missing from this machine's data.
    monkeypatch.setitem(local_time._COUNTRY_ZONES, "BR", ("Nowhere/Atlantis", "Brasília"))
    assert format_expiry(1_764_357_600_000, "BR", "pt") == "28/11/2025 19:20 UTC"


def test_the_email_expiry_uses_the_currency_when_the_country_is_empty(
    templates: Templates,
) -> None:
    event = load("billet_printed_affiliate_without_code")  # checkout_country is {}, BRL
    text = templates.email(notify(event, "pt")).text
    assert "Vencimento: 29/11/2025 16:20 (horário de Brasília)" in text


@pytest.mark.parametrize(
    ("phone", "country", "shown"),
    [
        ("31991234567", "BR", "+55 31 99123-4567"),
        ("1133334444", "BR", "+55 11 3333-4444"),
        ("+5531991234567", "", "+55 31 99123-4567"),
        ("5531991234567", "BR", "+55 31 99123-4567"),
        ("+55 (31) 99123-4567", "MX", "+55 31 99123-4567"),
        ("+52 55 1234 5678", "BR", "+52 55 1234 5678"),  # a Mexican number, as sent
        ("5512345678", "MX", "5512345678"),
        ("123", "BR", "123"),  # not a Brazilian shape: left for a person to read
        ("", "BR", ""),
        (None, "BR", ""),
    ],
)
def test_format_phone(phone: str | None, country: str, shown: str) -> None:
    assert format_phone(phone, country) == shown


@pytest.mark.parametrize("locale", LOCALES)
def test_a_brazilian_buyer_phone_is_formatted_in_emails_and_raw_in_the_webhook(
    templates: Templates, locale: str
) -> None:
    event = load("billet_printed_financed_billet")
    email = templates.email(notify(event, locale))
    assert "+55 31 99123-4567" in email.text
    assert "+55 31 99123-4567" in email.html
    sent = json.loads(templates.webhook_body(notify(event, locale)))
    assert sent["buyer"]["phone"] == "31991234567"  # area code joined, digits as sent


def test_a_financed_billet_is_a_boleto(templates: Templates) -> None:
    event = load("billet_printed_financed_billet")
    email = templates.email(notify(event, "pt"))
    assert email.subject == "Boleto gerado: Método Confeitaria Lucrativa"
    assert "23793.38128 60008.234516 96001.234508 8 13240000019970" in email.text
    assert json.loads(templates.webhook_body(notify(event)))["payment"] == {
        "type": "FINANCED_BILLET",
        "method": "Boleto",
        "slip_url": "https://hotm.art/bHP1764271600321",
        "slip_code": "23793381286000823451696001234508813240000019970",
        "pix_code": None,
        "pix_qrcode": None,
        "expires_at": None,  # no boleto expiry exists in any body
    }


@pytest.mark.parametrize(
    ("locale", "subject", "line"),
    [
        ("es", "Ficha de pago generada: ", "generó una ficha de pago para comprar"),
        ("pt", "Guia de pagamento gerada: ", "gerou uma guia de pagamento para comprar"),
        ("en", "Payment slip issued: ", "issued a payment slip to buy"),
    ],
)
def test_a_slip_of_unsure_brand_is_worded_neutrally_in_each_language(
    templates: Templates, locale: str, subject: str, line: str
) -> None:
    event = load("billet_printed_cash_co")
    assert event.payment.method == CASH_SLIP
    email = templates.email(notify(event, locale))
    assert email.subject == subject + "Curso de Repostería Profesional"
    assert line in email.text
    assert CASH_SLIP not in email.text  # the English label is for machines
    assert "https://pay.hotmart.example/slip/HP1764271700654" in email.text
    sent = json.loads(templates.webhook_body(notify(event, locale)))
    assert sent["payment"]["method"] == CASH_SLIP


def test_the_pix_qr_link_and_table_values_can_break_on_a_narrow_screen(
    templates: Templates,
) -> None:
    # A long unbroken link overflowed the card at 375 px (measured in Chromium: the page
    # scrolled to 982 px; 375 px with these rules). The rules are what makes it fit.
    html = templates.email(notify(load("billet_printed_pix"), "pt")).html
    qr = html.index("QR Code do Pix")
    assert "word-break:break-all;overflow-wrap:anywhere;" in html[qr - 80 : qr]
    assert '<td style="vertical-align:top;overflow-wrap:anywhere;word-break:break-word;">' in html
    assert "max-width:560px" in html
    assert 'name="viewport" content="width=device-width' in html


@pytest.mark.parametrize("locale", LOCALES)
def test_send_test_samples_look_like_real_slips(templates: Templates, locale: str) -> None:
    event = sample_slip_event("K1", "Ana", locale, 1_764_271_200_000)
    assert event.payment.has_slip
    assert event.payment.expires_at_ms is None  # real boleto and OXXO slips carry none
    email = templates.email(notify(event, locale, is_test=True))
    assert email.subject.startswith(TEST_TAGS[locale])
    assert format_code(event.payment.slip_code, event.payment.method) in email.text
