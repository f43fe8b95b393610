"""The default webhook body built in Python means what templates/webhook.json renders.

`relay.webhook_body` replaces a Jinja render of the default template; a producer's own
`webhook.json` is still rendered by Jinja. Both are held to the same JSON, value for
value, on every fixture and on events hypothesis mangles from them.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay.hotmart import Event, MalformedEvent, parse_json_event
from relay.records import Notice
from relay.render import Notification, RenderError, Templates, default_templates_dir
from relay.sandbox import MAX_BODY_CHARS
from tests.hotmart_bodies import FIXTURE_FILES, fixture_event, hotmart_like
from tests.test_render import notify

SETTINGS = settings(
    max_examples=150,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module")
def jinja_templates(tmp_path_factory: pytest.TempPathFactory) -> Templates:
    """The default webhook.json as an override: rendered by Jinja, as it always was."""
    folder = tmp_path_factory.mktemp("override")
    (folder / "webhook.json").write_bytes((default_templates_dir() / "webhook.json").read_bytes())
    return Templates(folder)


@pytest.fixture(scope="module")
def python_templates() -> Templates:
    return Templates()


def notifications(event: Event) -> list[Notification]:
    """The event as each kind of message: test or not, each notice, with a WhatsApp link."""
    return [
        replace(notify(event, locale, is_test=is_test), notification=notice, whatsapp=whatsapp)
        for locale, is_test, notice, whatsapp in (
            ("es", False, None, False),
            ("pt", True, Notice.REMINDER, True),
            ("en", False, Notice.PAID, True),
        )
    ]


def assert_same_meaning(python: Templates, jinja: Templates, event: Event) -> None:
    for n in notifications(event):
        fast = python.webhook_body(n)
        assert json.loads(fast) == json.loads(jinja.webhook_body(n))
        fast.decode("utf-8")  # UTF-8, as the signature is computed over


@pytest.mark.parametrize("path", FIXTURE_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_fixture_gets_the_body_the_template_renders(
    path: Path, python_templates: Templates, jinja_templates: Templates
) -> None:
    assert_same_meaning(python_templates, jinja_templates, fixture_event(path))


def test_the_fixtures_include_the_shared_set_and_a_whatsapp_link(
    python_templates: Templates,
) -> None:
    assert any(path.parent.name == "shared" for path in FIXTURE_FILES)
    event = fixture_event(FIXTURE_FILES[0].parent / "billet_printed_oxxo.json")
    body = json.loads(python_templates.webhook_body(notifications(event)[1]))
    assert body["buyer"]["whatsapp_url"].startswith("https://wa.me/")
    assert body["purchase"]["price"]["value"] == 499.0
    # The exact Decimal text, as `tojson` writes it, never a float's repr.
    exact = f'"value":{event.purchase.price}'.encode()
    assert exact in python_templates.webhook_body(notifications(event)[1])


@SETTINGS
@given(body=hotmart_like(), name=st.text(max_size=30))
def test_mangled_events_get_the_body_the_template_renders(
    body: dict[str, object], name: str, python_templates: Templates, jinja_templates: Templates
) -> None:
    try:
        event = parse_json_event(body)
    except MalformedEvent:
        return
    product = event.product.model_copy(update={"name": name})  # quotes, controls, any script
    assert_same_meaning(
        python_templates, jinja_templates, event.model_copy(update={"product": product})
    )


def test_an_override_is_still_rendered_by_jinja(tmp_path: Path) -> None:
    (tmp_path / "webhook.json").write_text('{"tx": {{ purchase.transaction|tojson }}}')
    event = fixture_event(FIXTURE_FILES[0].parent / "billet_printed_oxxo.json")
    body = Templates(tmp_path).webhook_body(notifications(event)[0])
    assert json.loads(body) == {"tx": "HP1764271200123"}


def test_an_override_folder_without_webhook_json_gets_the_python_body(tmp_path: Path) -> None:
    (tmp_path / "billet_printed.es.txt").write_text("only the email is overridden\n")
    event = fixture_event(FIXTURE_FILES[0].parent / "billet_printed_oxxo.json")
    n = notifications(event)[0]
    assert Templates(tmp_path).webhook_body(n) == Templates().webhook_body(n)


def test_the_size_bound_holds_for_the_python_body(python_templates: Templates) -> None:
    event = fixture_event(FIXTURE_FILES[0].parent / "billet_printed_oxxo.json")
    # Values are bounded when parsed; a config's affiliate name is not, so it can reach it.
    wide = notifications(event)[0]
    for name, fits in (("é" * (MAX_BODY_CHARS // 2), True), ("x" * MAX_BODY_CHARS, False)):
        n = Notification(**{**wide.__dict__, "affiliate_name": name})
        if fits:
            assert len(python_templates.webhook_body(n)) > MAX_BODY_CHARS  # bytes over, chars not
        else:
            with pytest.raises(RenderError, match="over 262144 characters"):
                python_templates.webhook_body(n)
