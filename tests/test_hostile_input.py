"""Issue 6, defects 1, 5 and the id above 2^64: hostile values from a body or a template.

Each test asserts on a size or on the outcome, never on time: a poisoned value must be
refused or bounded before anything large is built, not merely built quickly.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from relay.formatting import json_dumps
from relay.hotmart import Event, MalformedEvent, parse_json_event
from relay.render import Notification, RenderError, Templates
from relay.sandbox import MAX_BODY_CHARS, join_bounded
from tests.conftest import fixture_json

# What every default render of a real event fits in, with a wide margin.
SMALL_RENDER_CHARS = 64 * 1024
HOSTILE_PRICES = ["1E+999999999", "-1E-999999999", 1e308, "1e308", "-1E-9999999", "1E+9999999"]
MALFORMED_URL = "https://pay.hotmart.example[/x"  # urlsplit raises ValueError on it


def oxxo() -> dict[str, Any]:
    return fixture_json("billet_printed_oxxo.json")


def notify(event: Event, locale: str = "es") -> Notification:
    return Notification(event, "K12345678M", "Lucía", "Dulce Academia", locale, False, "msg_1")


def rendered_sizes(templates: Templates, event: Event) -> list[int]:
    sizes = [len(templates.webhook_body(notify(event)))]
    for locale in ("es", "pt", "en"):
        email = templates.email(notify(event, locale))
        sizes += [len(email.subject), len(email.text), len(email.html)]
    return sizes


# --- defect 1: a poisoned price ------------------------------------------------------------


@pytest.mark.parametrize("value", HOSTILE_PRICES)
def test_a_hostile_price_is_unknown_and_the_slip_still_goes_out(value: Any) -> None:
    body = oxxo()
    body["data"]["purchase"]["price"]["value"] = value
    event = parse_json_event(body)
    assert event.purchase.price is None
    assert event.payment.has_slip
    assert event.payment.slip_code == "93000004217642712001230000499007"
    sent = json.loads(Templates().webhook_body(notify(event)))
    assert sent["purchase"]["price"] == {"value": None, "currency": "MXN"}
    assert max(rendered_sizes(Templates(), event)) < SMALL_RENDER_CHARS


@pytest.mark.parametrize("value", ["1E+9999999", "-1E-9999999", "1E+999999999", "-1E-999999999"])
def test_a_hostile_price_already_in_an_event_renders_small(value: str) -> None:
    """An event stored before the parse-time bound, or built in code, still renders small."""
    event = parse_json_event(oxxo())
    event = event.model_copy(
        update={"purchase": event.purchase.model_copy(update={"price": Decimal(value)})}
    )
    assert max(rendered_sizes(Templates(), event)) < SMALL_RENDER_CHARS
    json.loads(Templates().webhook_body(notify(event)))  # still valid JSON


# --- the render itself is bounded, whatever a template does ------------------------------


def test_a_template_that_writes_without_end_is_stopped_at_the_bound(tmp_path: Path) -> None:
    # 10^10 characters if it ran to the end; it must stop at the bound instead.
    (tmp_path / "webhook.json").write_text(
        "{% for i in range(100000) %}{% for j in range(100000) %}xxxxxxxxxx{% endfor %}{% endfor %}"
    )
    with pytest.raises(RenderError, match=r"^webhook\.json: .*over .* characters"):
        Templates(tmp_path).webhook_body(notify(parse_json_event(oxxo())))


@pytest.mark.parametrize("name", ["billet_printed.es.txt", "billet_printed.es.html"])
def test_an_email_body_over_the_bound_is_a_render_error(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_text("{% for i in range(1000) %}{{ 'y' * 1000 }}{% endfor %}")
    with pytest.raises(RenderError, match=rf"^{name}: .*over .* characters"):
        Templates(tmp_path).email(notify(parse_json_event(oxxo())))


def test_a_subject_over_the_bound_is_a_render_error(tmp_path: Path) -> None:
    (tmp_path / "billet_printed.es.subject.txt").write_text(
        "{% for i in range(100) %}{{ product.name }}{% endfor %}"
    )
    with pytest.raises(RenderError, match=r"^billet_printed\.es\.subject\.txt: .*over"):
        Templates(tmp_path).email(notify(parse_json_event(oxxo())))


def test_repeating_a_string_in_a_template_cannot_build_a_huge_one(tmp_path: Path) -> None:
    # Without a check this builds the whole string in one expression, before any bound.
    (tmp_path / "webhook.json").write_text('{"x": "{{ "x" * 1000000 }}"}')
    with pytest.raises(RenderError, match=r"^webhook\.json: "):
        Templates(tmp_path).webhook_body(notify(parse_json_event(oxxo())))


def test_the_render_stops_pulling_output_at_the_bound() -> None:
    pulled = 0

    def endless() -> Iterator[str]:
        nonlocal pulled
        for _ in itertools.count():
            pulled += 1
            yield "x" * 100

    with pytest.raises(RenderError, match=r"^t\.txt: rendered output is over"):
        join_bounded(endless(), MAX_BODY_CHARS, "t.txt")
    assert pulled == MAX_BODY_CHARS // 100 + 1  # not one chunk more than needed to know


# --- defect 5: a malformed slip URL ------------------------------------------------------


@pytest.mark.parametrize("field", ["billet_url", "pix_qrcode"])
def test_a_malformed_url_is_dropped_at_parse_and_the_code_is_kept(field: str) -> None:
    body = oxxo()
    body["data"]["purchase"]["payment"][field] = MALFORMED_URL
    payment = parse_json_event(body).payment
    assert getattr(payment, {"billet_url": "slip_url"}.get(field, field)) is None
    assert payment.slip_code == "93000004217642712001230000499007"
    assert payment.has_slip


@pytest.mark.parametrize("locale", ["es", "pt", "en"])
def test_a_malformed_url_in_an_event_renders_as_no_link(locale: str) -> None:
    event = parse_json_event(oxxo())
    payment = event.payment.model_copy(
        update={"slip_url": MALFORMED_URL, "pix_qrcode": MALFORMED_URL + "/qr"}
    )
    event = event.model_copy(update={"payment": payment})
    email = Templates().email(notify(event, locale))
    assert "href=" not in email.html
    for body in (email.text, email.html):
        assert "9300 0004 2176 4271 2001 2300 0049 9007" in body
    sent = json.loads(Templates().webhook_body(notify(event, locale)))
    assert sent["payment"]["slip_code"] == "93000004217642712001230000499007"


# --- defect 10: an integer id above 2^64 --------------------------------------------------


@pytest.mark.parametrize("raw", [b"123456789012345678901234567890", b"18446744073709551616"])
def test_an_integer_id_above_64_bits_gets_a_precise_reason(raw: bytes) -> None:
    body = orjson.loads(b'{"id": ' + raw + b', "event": "PURCHASE_BILLET_PRINTED"}')
    with pytest.raises(MalformedEvent) as caught:
        parse_json_event(body)
    assert caught.value.field == "id"
    assert caught.value.reason == "a number too large to keep exactly; send it as a string"


def test_an_integer_id_within_64_bits_is_kept_exactly() -> None:
    body = orjson.loads(b'{"id": 18446744073709551615, "event": "PURCHASE_BILLET_PRINTED"}')
    assert parse_json_event(body).id == "18446744073709551615"


@pytest.mark.parametrize(
    ("expression", "shown"),
    [
        ("2 ** 10", "1024"),
        ("2 ** -1", "0.5"),
        ("1 ** 100000", "1"),
        ("'ab' * 3", "ababab"),
        ("3 * 'ab'", "ababab"),
        ("6 * 7", "42"),
        ("1.5 * 2", "3.0"),
    ],
)
def test_ordinary_arithmetic_in_a_template_still_works(
    tmp_path: Path, expression: str, shown: str
) -> None:
    (tmp_path / "webhook.json").write_text(f'{{"x": "{{{{ {expression} }}}}"}}')
    body = Templates(tmp_path).webhook_body(notify(parse_json_event(oxxo())))
    assert json.loads(body) == {"x": shown}


@pytest.mark.parametrize(
    "expression",
    ["10 ** 100000", "(10 ** 1000) ** 1000", "[1] * 10 ** 9", "10 ** 1000 * 10 ** 1000"],
)
def test_a_template_cannot_make_a_huge_value_in_one_step(tmp_path: Path, expression: str) -> None:
    (tmp_path / "webhook.json").write_text(f'{{"x": "{{{{ {expression} }}}}"}}')
    with pytest.raises(RenderError, match=r"^webhook\.json: line 1: .*over"):
        Templates(tmp_path).webhook_body(notify(parse_json_event(oxxo())))


@pytest.mark.parametrize(
    ("value", "written"),
    [
        ("189900.10", "189900.10"),
        ("1E+2", "100"),
        ("1E+999999999", "1E+999999999"),
        ("-1E-999999999", "-1E-999999999"),
        ("NaN", "null"),
        ("Infinity", "null"),
    ],
)
def test_a_decimal_is_written_as_a_short_json_number(value: str, written: str) -> None:
    assert json_dumps(Decimal(value)) == written
