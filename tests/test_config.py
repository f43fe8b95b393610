"""relay.toml → frozen models (SPEC §4): defaults, env:, durations, cross-checks, dotted paths."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pydantic
import pytest

from relay.config import (
    Config,
    ConfigError,
    EmailDestination,
    WebhookDestination,
    load_config,
    parse_config,
)
from relay.durations import parse_duration_s, parse_since_ms
from relay.hotmart import KNOWN_EVENTS, SLIP_EVENT

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config.example.toml"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
AFF = "producers.0.affiliates.0"


def minimal() -> dict[str, Any]:
    """One producer, one affiliate, one destination: the smallest useful config."""
    return {
        "producers": [
            {
                "id": "acme",
                "hottok": "tok-acme",
                "affiliates": [
                    {"code": "K12345678M", "destinations": [{"kind": "email", "to": "a@b.example"}]}
                ],
            }
        ]
    }


def parse(raw: dict[str, Any], environ: Mapping[str, str] | None = None) -> Config:
    return parse_config(copy.deepcopy(raw), environ or {}, base_dir=Path("."))


def problems(
    raw: dict[str, Any], environ: Mapping[str, str] | None = None
) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as caught:
        parse(raw, environ)
    assert caught.value.problems, "a ConfigError must say what is wrong"
    return caught.value.problems


def paths(raw: dict[str, Any], environ: Mapping[str, str] | None = None) -> list[str]:
    return [path for path, _ in problems(raw, environ)]


def affiliate(raw: dict[str, Any], index: int = 0) -> dict[str, Any]:
    found: dict[str, Any] = raw["producers"][0]["affiliates"][index]
    return found


def with_webhook(url: str, **extra: Any) -> dict[str, Any]:
    raw = minimal()
    affiliate(raw)["destinations"] = [{"kind": "webhook", "url": url, "secret": SECRET, **extra}]
    return raw


# --- defaults and models -------------------------------------------------------------------


def test_minimal_config_gets_sensible_defaults() -> None:
    config = parse(minimal())
    assert config.server.host == "127.0.0.1"
    assert config.server.port == 8080
    assert config.server.path == "/hotmart/webhook"
    assert config.server.max_body_bytes == 1_048_576
    assert config.storage.sqlite_path == "var/relay.sqlite3"
    assert config.storage.retention_s == 30 * 86400
    assert config.admin.token is None
    assert config.delivery.retry_delays_s == (60.0, 300.0, 1800.0, 7200.0)
    assert config.delivery.max_attempts == 5  # 1 try + 4 retries, as Hotmart does
    assert config.delivery.timeout_s == 10.0
    assert config.delivery.allow_private_networks is False
    assert config.email.transport == "smtp"
    assert config.email.smtp.security == "none"
    producer = config.producers[0]
    assert (producer.id, producer.hottok, producer.name) == ("acme", "tok-acme", "")
    aff = producer.affiliates[0]
    assert aff.buyer_data is False  # privacy gate: absent means nothing is sent
    assert aff.products == "all"
    assert aff.events == (SLIP_EVENT,)
    assert aff.locale == "es"
    assert aff.destinations == (EmailDestination(kind="email", to="a@b.example"),)
    assert aff.destinations[0].enabled is True


def test_full_spec_example_parses() -> None:
    raw = {
        "server": {"host": "192.0.2.1", "port": 9000, "path": "/hm", "max_body_bytes": 2048},
        "storage": {"sqlite_path": "/var/lib/relay.db", "retention": "7d"},
        "admin": {"token": "env:RELAY_ADMIN_TOKEN"},
        "delivery": {
            "retry_delays": ["500ms", "30s", "5m", "2h"],
            "timeout": "10s",
            "concurrency": 8,
            "disable_after_failures": 3,
            "allow_private_networks": False,
        },
        "email": {
            "from": "Avisos <avisos@example.com>",
            "transport": "maildir",
            "maildir": "var/mail",
            "smtp": {
                "host": "smtp.example.com",
                "port": 587,
                "security": "starttls",
                "username": "relay",
                "password": "env:SMTP_PASSWORD",
            },
        },
        "producers": [
            {
                "id": "acme",
                "name": "Productora SA",
                "hottok": "env:HOTMART_HOTTOK",
                "alert_email": "ops@acme.example",
                "affiliates": [
                    {
                        "code": "Q58388177J",
                        "name": "Ana",
                        "buyer_data": True,
                        "products": [3012345, "a1b2c3d4-ucode"],
                        "events": ["PURCHASE_BILLET_PRINTED", "PURCHASE_APPROVED"],
                        "locale": "pt",
                        "destinations": [
                            {"kind": "email", "to": "ana@example.com"},
                            {
                                "kind": "webhook",
                                "url": "https://ana.example.com/hooks/hotmart",
                                "secret": "env:ANA_WEBHOOK_SECRET",
                            },
                        ],
                    }
                ],
            }
        ],
    }
    environ = {
        "RELAY_ADMIN_TOKEN": "admin-tok",
        "SMTP_PASSWORD": "pw",
        "HOTMART_HOTTOK": "hot-tok",
        "ANA_WEBHOOK_SECRET": SECRET,
    }
    config = parse(raw, environ)
    assert config.server.host == "192.0.2.1"
    assert config.storage.retention_s == 7 * 86400
    assert config.admin.token == "admin-tok"
    assert config.delivery.retry_delays_s == (0.5, 30.0, 300.0, 7200.0)
    assert config.delivery.concurrency == 8
    assert config.email.from_address == "Avisos <avisos@example.com>"
    assert config.email.smtp.password == "pw"
    producer = config.producers[0]
    assert producer.hottok == "hot-tok"
    ana = producer.affiliates[0]
    assert ana.products == ("3012345", "a1b2c3d4-ucode")  # ints compare as text
    assert ana.locale == "pt"
    webhook = ana.destinations[1]
    assert isinstance(webhook, WebhookDestination)
    assert webhook.secret == SECRET
    assert webhook.allow_http is False


def test_models_are_frozen() -> None:
    config = parse(minimal())
    with pytest.raises(pydantic.ValidationError):
        config.producers[0].affiliates[0].buyer_data = True  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError):
        config.delivery.timeout_s = 1.0  # type: ignore[misc]


def test_lookup_helpers(tmp_path: Path) -> None:
    raw = minimal()
    raw["producers"].append({"id": "other", "hottok": "tok-other"})
    config = parse_config(raw, {}, base_dir=tmp_path)
    assert config.producer("acme") is config.producers[0]
    assert config.producer("nobody") is None
    assert config.producers[0].affiliate("K12345678M") is config.producers[0].affiliates[0]
    assert config.producers[0].affiliate("k12345678m") is None  # codes are exact
    assert config.resolve_path("var/x.db") == tmp_path / "var/x.db"
    assert config.resolve_path("/abs/x.db") == Path("/abs/x.db")


# --- durations -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("30s", 30.0),
        ("5m", 300.0),
        ("2h", 7200.0),
        ("7d", 604800.0),
        ("1.5h", 5400.0),
        ("0s", 0.0),
        (" 10 s ", 10.0),
        (12, 12.0),
        (2.5, 2.5),
    ],
)
def test_parse_duration(text: object, seconds: float) -> None:
    assert parse_duration_s(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "bad",
    [
        "5",
        "",
        "5 minutes",
        "1w",
        "-1s",
        "5M",
        "s",
        "1e3s",
        True,
        None,
        [1],
        -3,
        float("inf"),
        float("nan"),
        10**400,
        "9" * 400 + "d",
    ],
)
def test_parse_duration_rejects(bad: object) -> None:
    with pytest.raises(ValueError, match=r"\S"):
        parse_duration_s(bad)


def test_parse_since_ms() -> None:
    now = 1_764_271_200_000
    assert parse_since_ms("2h", now) == now - 7_200_000
    assert parse_since_ms("500ms", now) == now - 500
    assert parse_since_ms("2025-11-27T19:20:00+00:00", now) == 1_764_271_200_000
    assert parse_since_ms("2025-11-27T19:20:00", now) == 1_764_271_200_000  # naive is UTC
    with pytest.raises(ValueError, match="neither"):
        parse_since_ms("yesterday", now)


def test_durations_in_config_and_aliases() -> None:
    raw = minimal()
    raw["delivery"] = {"timeout": "500ms", "retry_delays": ["1m", "5m"], "shutdown_grace": "3s"}
    raw["storage"] = {"retention": "2h"}
    config = parse(raw)
    assert config.delivery.timeout_s == 0.5
    assert config.delivery.retry_delays_s == (60.0, 300.0)
    assert config.delivery.max_attempts == 3
    assert config.delivery.shutdown_grace_s == 3.0
    assert config.storage.retention_s == 7200.0
    # The Python names are not config keys: the file speaks `timeout`, not `timeout_s`.
    raw = minimal()
    raw["delivery"] = {"timeout_s": 5}
    raw["storage"] = {"retention_s": 5}
    assert sorted(problems(raw)) == [
        ("delivery.timeout_s", "unknown key"),
        ("storage.retention_s", "unknown key"),
    ]


def test_bad_durations_are_reported_with_paths() -> None:
    raw = minimal()
    raw["delivery"] = {"timeout": "0s", "retry_delays": ["1m", "soon", "-5s"]}
    raw["storage"] = {"retention": "3 weeks"}
    found = dict(problems(raw))
    assert set(found) == {
        "delivery.timeout",
        "delivery.retry_delays.1",
        "delivery.retry_delays.2",
        "storage.retention",
    }
    assert "soon" in found["delivery.retry_delays.1"]
    assert "3 weeks" in found["storage.retention"]


def test_non_finite_durations_are_refused() -> None:
    raw = minimal()
    raw["delivery"] = {"timeout": float("inf"), "retry_delays": [float("nan")]}
    assert set(paths(raw)) == {"delivery.timeout", "delivery.retry_delays.0"}


# --- env: references -------------------------------------------------------------------------


def test_env_references_are_resolved_everywhere() -> None:
    raw = minimal()
    raw["server"] = {"port": "env:PORT"}
    raw["producers"][0]["hottok"] = "env:HOTTOK"
    affiliate(raw)["destinations"].append(
        {"kind": "webhook", "url": "env:HOOK_URL", "secret": "env:HOOK_SECRET"}
    )
    environ = {
        "PORT": "9090",
        "HOTTOK": "from-env",
        "HOOK_URL": "https://hooks.example.com/x",
        "HOOK_SECRET": SECRET,
    }
    config = parse(raw, environ)
    assert config.server.port == 9090
    assert config.producers[0].hottok == "from-env"
    hook = config.producers[0].affiliates[0].destinations[1]
    assert isinstance(hook, WebhookDestination)
    assert (hook.url, hook.secret) == ("https://hooks.example.com/x", SECRET)


def test_env_is_read_from_the_mapping_given_not_the_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RELAY_TEST_ONLY_IN_OS", "x")
    raw = minimal()
    raw["producers"][0]["hottok"] = "env:RELAY_TEST_ONLY_IN_OS"
    assert problems(raw, {}) == [
        ("producers.0.hottok", "environment variable RELAY_TEST_ONLY_IN_OS is not set")
    ]


def test_missing_env_var_is_one_problem_naming_the_path() -> None:
    raw = with_webhook("https://hooks.example.com/x")
    affiliate(raw)["destinations"][0]["secret"] = "env:ANA_SECRET"
    raw["admin"] = {"token": "env:ADMIN"}
    # The unresolved value would also fail the whsec_ check; only the cause is reported.
    assert sorted(problems(raw)) == [
        ("admin.token", "environment variable ADMIN is not set"),
        (f"{AFF}.destinations.0.secret", "environment variable ANA_SECRET is not set"),
    ]


def test_env_value_is_validated_like_a_literal() -> None:
    raw = with_webhook("https://hooks.example.com/x")
    affiliate(raw)["destinations"][0]["secret"] = "env:S"
    found = problems(raw, {"S": "not-a-secret"})
    assert [p for p, _ in found] == [f"{AFF}.destinations.0.secret"]
    assert "whsec_" in found[0][1]


# --- unknown keys ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mutate", "path"),
    [
        (lambda r: r.update(bogus=1), "bogus"),
        (lambda r: r.update(server={"hots": "x"}), "server.hots"),
        (lambda r: r.update(email={"form": "x"}), "email.form"),
        (lambda r: r.update(email={"smtp": {"tls": True}}), "email.smtp.tls"),
        (lambda r: r["producers"][0].update(hotok="x"), "producers.0.hotok"),
        (lambda r: r["producers"][0]["affiliates"][0].update(buyerdata=True), f"{AFF}.buyerdata"),
        (
            lambda r: r["producers"][0]["affiliates"][0]["destinations"][0].update(cc="x"),
            f"{AFF}.destinations.0.cc",
        ),
        (lambda r: r.update(base_dir="/etc"), "base_dir"),
    ],
)
def test_unknown_key_is_an_error_with_its_dotted_path(mutate: Any, path: str) -> None:
    raw = minimal()
    mutate(raw)
    assert problems(raw) == [(path, "unknown key")]


def test_unknown_key_in_a_webhook_destination_has_no_union_tag_in_its_path() -> None:
    raw = with_webhook("https://hooks.example.com/x", retries=3)
    assert problems(raw) == [(f"{AFF}.destinations.0.retries", "unknown key")]


def test_field_errors_in_the_email_table_keep_the_email_prefix() -> None:
    raw = minimal()
    raw["email"] = {"transport": "pigeon", "smtp": {"port": 0, "security": "ssl"}}
    assert sorted(paths(raw)) == ["email.smtp.port", "email.smtp.security", "email.transport"]


# --- field checks ----------------------------------------------------------------------------


def test_required_keys() -> None:
    assert paths({}) == ["producers"]
    assert paths({"producers": []}) == ["producers"]
    assert sorted(paths({"producers": [{}]})) == ["producers.0.hottok", "producers.0.id"]
    raw = minimal()
    del affiliate(raw)["code"]
    assert paths(raw) == [f"{AFF}.code"]


def test_a_producer_without_affiliates_is_valid() -> None:
    config = parse({"producers": [{"id": "acme", "hottok": "t"}]})
    assert config.producers[0].affiliates == ()


def test_server_checks() -> None:
    raw = minimal()
    raw["server"] = {"port": 70000, "path": "hotmart", "max_body_bytes": 0}
    assert sorted(paths(raw)) == ["server.max_body_bytes", "server.path", "server.port"]


@pytest.mark.parametrize("locale", ["es", "pt", "en"])
def test_locales_accepted(locale: str) -> None:
    raw = minimal()
    affiliate(raw)["locale"] = locale
    assert parse(raw).producers[0].affiliates[0].locale == locale


@pytest.mark.parametrize("locale", ["fr", "ES", "pt-BR", ""])
def test_other_locales_refused(locale: str) -> None:
    raw = minimal()
    affiliate(raw)["locale"] = locale
    assert paths(raw) == [f"{AFF}.locale"]


def test_every_known_event_can_be_subscribed() -> None:
    raw = minimal()
    affiliate(raw)["events"] = sorted(KNOWN_EVENTS)
    assert set(parse(raw).producers[0].affiliates[0].events) == KNOWN_EVENTS
    assert len(KNOWN_EVENTS) == 15


@pytest.mark.parametrize("name", ["PURCHASE_BILLET_PRINT", "purchase_billet_printed", "BILLET"])
def test_unknown_event_names_refused(name: str) -> None:
    raw = minimal()
    affiliate(raw)["events"] = ["PURCHASE_APPROVED", name]
    found = problems(raw)
    assert [p for p, _ in found] == [f"{AFF}.events"]
    assert name in found[0][1]


def test_products_all_or_list_compared_as_text() -> None:
    raw = minimal()
    affiliate(raw)["products"] = [3012345, "ucode-1"]
    aff = parse(raw).producers[0].affiliates[0]
    assert aff.products == ("3012345", "ucode-1")
    assert aff.covers_product("3012345", "")
    assert aff.covers_product("999", "ucode-1")
    assert not aff.covers_product("999", "ucode-2")
    assert not aff.covers_product("999", "")
    affiliate(raw)["products"] = "all"
    assert parse(raw).producers[0].affiliates[0].covers_product("anything", "")


@pytest.mark.parametrize("bad", ["some", "ALL", 3012345, [{"id": 1}], [True]])
def test_bad_products_is_one_clear_problem(bad: Any) -> None:
    raw = minimal()
    affiliate(raw)["products"] = bad
    found = problems(raw)
    assert [p for p, _ in found] == [f"{AFF}.products"]


@pytest.mark.parametrize(
    "to", ["not-an-address", "@example.com", "ana@", "ana@example.com\r\nBcc: x@evil.example"]
)
def test_bad_email_destination(to: str) -> None:
    raw = minimal()
    affiliate(raw)["destinations"] = [{"kind": "email", "to": to}]
    assert paths(raw) == [f"{AFF}.destinations.0.to"]


def test_email_destination_must_be_a_string() -> None:
    raw = minimal()
    affiliate(raw)["destinations"] = [{"kind": "email", "to": ["ana@example.com"]}]
    assert paths(raw) == [f"{AFF}.destinations.0.to"]


@pytest.mark.parametrize("to", ["ana@example.com", "Ana <ana@example.com>", "lucia@localhost"])
def test_good_email_destinations(to: str) -> None:
    raw = minimal()
    affiliate(raw)["destinations"] = [{"kind": "email", "to": to}]
    assert parse(raw).producers[0].affiliates[0].destinations[0] == EmailDestination(
        kind="email", to=to
    )


def test_destination_kind_is_required_and_known() -> None:
    raw = minimal()
    affiliate(raw)["destinations"] = [{"to": "a@b.example"}, {"kind": "sms", "to": "123"}]
    assert paths(raw) == [f"{AFF}.destinations.0", f"{AFF}.destinations.1"]


def test_webhook_destination_missing_fields() -> None:
    raw = minimal()
    affiliate(raw)["destinations"] = [{"kind": "webhook"}]
    assert sorted(paths(raw)) == [f"{AFF}.destinations.0.secret", f"{AFF}.destinations.0.url"]


@pytest.mark.parametrize("secret", ["abc", "whsec_", "WHSEC_abc", "env-secret"])
def test_webhook_secret_must_be_whsec(secret: str) -> None:
    raw = with_webhook("https://hooks.example.com/x")
    affiliate(raw)["destinations"][0]["secret"] = secret
    found = problems(raw)
    assert [p for p, _ in found] == [f"{AFF}.destinations.0.secret"]
    assert "whsec_" in found[0][1]


# --- webhook URLs ----------------------------------------------------------------------------


def test_https_webhook_is_accepted() -> None:
    hook = parse(with_webhook("https://hooks.example.com:8443/h?x=1")).producers[0]
    assert isinstance(hook.affiliates[0].destinations[0], WebhookDestination)


@pytest.mark.parametrize(
    "url",
    [
        "not a url",
        "hooks.example.com/x",
        "ftp://hooks.example.com/x",
        "https://",
        "https:///path",
        "https://hooks.example.com:99999/x",
        "https://hooks.example.com:port/x",
        "https://hooks example.com/x",
        "https://[::1/x",
        "",
    ],
)
def test_invalid_webhook_url(url: str) -> None:
    found = problems(with_webhook(url))
    assert [p for p, _ in found] == [f"{AFF}.destinations.0.url"]


def test_plain_http_needs_an_opt_in() -> None:
    found = problems(with_webhook("http://hooks.example.com/x"))
    assert [p for p, _ in found] == [f"{AFF}.destinations.0.url"]
    assert "https" in found[0][1]
    assert parse(with_webhook("http://hooks.example.com/x", allow_http=True))
    raw = with_webhook("http://hooks.example.com/x")
    raw["delivery"] = {"allow_private_networks": True}
    assert parse(raw)


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/x",
        "https://localhost:8443/x",
        "https://api.localhost/x",
        "https://10.1.2.3/x",
        "https://192.168.0.10/x",
        "https://[::1]/x",
        "https://169.254.169.254/latest",
        # IPv6 forms that reach a loopback IPv4 host: the same rule as at connect time.
        "https://[2002:7f00:1::]/x",
        "https://[64:ff9b::7f00:1]/x",
        "https://[::ffff:127.0.0.1]/x",
    ],
)
def test_private_literal_addresses_need_allow_private_networks(url: str) -> None:
    found = problems(with_webhook(url))
    assert [p for p, _ in found] == [f"{AFF}.destinations.0.url"]
    assert "allow_private_networks" in found[0][1]
    raw = with_webhook(url)
    raw["delivery"] = {"allow_private_networks": True}
    assert parse(raw)


def test_http_to_loopback_with_allow_http_is_still_private() -> None:
    found = problems(with_webhook("http://127.0.0.1:9000/x", allow_http=True))
    assert [p for p, _ in found] == [f"{AFF}.destinations.0.url"]
    assert "private" in found[0][1]


# --- cross-checks ----------------------------------------------------------------------------


def test_duplicate_producer_ids_and_hottoks() -> None:
    raw = minimal()
    raw["producers"] += [
        {"id": "acme", "hottok": "tok-2"},
        {"id": "beta", "hottok": "tok-acme"},
        {"id": "beta", "hottok": "tok-2"},
    ]
    assert problems(raw) == [
        ("producers.1.id", "duplicate of producers.0.id"),
        ("producers.2.hottok", "same token as producers.0.hottok"),
        ("producers.3.id", "duplicate of producers.2.id"),
        ("producers.3.hottok", "same token as producers.1.hottok"),
    ]


def test_tokens_from_env_are_compared_after_resolution() -> None:
    raw = minimal()
    raw["producers"].append({"id": "beta", "hottok": "env:BETA_TOKEN"})
    assert problems(raw, {"BETA_TOKEN": "tok-acme"}) == [
        ("producers.1.hottok", "same token as producers.0.hottok")
    ]


def test_affiliate_code_unique_within_a_producer_only() -> None:
    raw = minimal()
    raw["producers"][0]["affiliates"] += [{"code": "OTHER"}, {"code": "K12345678M"}]
    assert problems(raw) == [
        ("producers.0.affiliates.2.code", "duplicate of producers.0.affiliates.0")
    ]
    raw = minimal()
    raw["producers"].append(
        {"id": "beta", "hottok": "tok-beta", "affiliates": [{"code": "K12345678M"}]}
    )
    assert len(parse(raw).producers) == 2  # the same code under two producers is fine


def test_several_mistakes_are_all_reported_with_exact_paths() -> None:
    raw = {
        "server": {"port": "eighty"},
        "delivery": {"timeout": "10 seconds", "retry_delays": ["1m", "1y"]},
        "email": {"transport": "smtp", "smpt": {}},
        "producers": [
            {
                "id": "acme",
                "hottok": "tok-acme",
                "affiliates": [
                    {"code": "A1", "locale": "fr"},
                    {
                        "code": "A2",
                        "buyer_data": True,
                        "events": ["PURCHASE_BILLET_PRINTED", "PURCHASE_PRINTED"],
                        "destinations": [
                            {"kind": "webhook", "url": "http://a2.example.com/h", "secret": SECRET},
                            {"kind": "webhook", "url": "https://a2.example.com", "secret": "s3"},
                            {"kind": "email", "to": "nobody"},
                            {"kind": "webhook", "url": "https://x.example", "secret": "env:NOPE"},
                        ],
                    },
                    {"code": "A1", "colour": "blue"},
                ],
            },
            {"id": "acme", "hottok": "tok-acme", "affiliates": [{"code": ""}]},
        ],
    }
    found = problems(raw)
    assert sorted(path for path, _ in found) == sorted(
        [
            "producers.0.affiliates.1.destinations.3.secret",  # env first
            "server.port",
            "delivery.timeout",
            "delivery.retry_delays.1",
            "email.smpt",
            "producers.0.affiliates.0.locale",
            "producers.0.affiliates.1.events",
            "producers.0.affiliates.1.destinations.1.secret",
            "producers.0.affiliates.1.destinations.2.to",
            "producers.0.affiliates.2.colour",
            "producers.1.affiliates.0.code",
            # cross-checks, reported in the same pass as the field errors
            "producers.0.affiliates.1.destinations.0.url",
            "producers.0.affiliates.2.code",
            "producers.1.id",
            "producers.1.hottok",
        ]
    )
    assert len(found) == len({path for path, _ in found}), "each problem once"
    reasons = dict(found)
    assert reasons["email.smpt"] == "unknown key"
    assert reasons["producers.0.affiliates.2.colour"] == "unknown key"
    assert "PURCHASE_PRINTED" in reasons["producers.0.affiliates.1.events"]
    assert "NOPE" in reasons["producers.0.affiliates.1.destinations.3.secret"]
    assert "https" in reasons["producers.0.affiliates.1.destinations.0.url"]
    assert reasons["producers.1.id"] == "duplicate of producers.0.id"
    assert reasons["producers.0.affiliates.2.code"] == "duplicate of producers.0.affiliates.0"
    # The message lists every problem, one per line.
    with pytest.raises(ConfigError) as caught:
        parse(raw)
    text = str(caught.value)
    assert text.count("\n") == len(found) - 1
    assert "producers.0.affiliates.1.destinations.0.url: must be https" in text


def test_cross_checks_respect_allow_flags_even_when_other_fields_fail() -> None:
    raw = with_webhook("http://hooks.example.com/x", allow_http=True)
    affiliate(raw)["locale"] = "fr"
    assert paths(raw) == [f"{AFF}.locale"]
    raw = with_webhook("http://127.0.0.1/x")
    raw["delivery"] = {"allow_private_networks": True, "timeout": "never"}
    assert paths(raw) == ["delivery.timeout"]


# --- files -----------------------------------------------------------------------------------


def test_load_config_reads_toml_and_anchors_paths(tmp_path: Path) -> None:
    path = tmp_path / "relay.toml"
    path.write_text(
        '[storage]\nretention = "1d"\n\n'
        '[[producers]]\nid = "acme"\nhottok = "env:TOK"\n\n'
        '[[producers.affiliates]]\ncode = "K1"\nbuyer_data = true\nproducts = [3012345]\n\n'
        '[[producers.affiliates.destinations]]\nkind = "webhook"\n'
        'url = "https://k1.example.com/h"\nsecret = "env:K1_SECRET"\n',
        encoding="utf-8",
    )
    config = load_config(path, {"TOK": "t", "K1_SECRET": SECRET})
    assert config.base_dir == tmp_path.resolve()
    sqlite_path = config.resolve_path(config.storage.sqlite_path)
    assert sqlite_path == tmp_path.resolve() / "var/relay.sqlite3"
    assert config.storage.retention_s == 86400.0
    assert config.producers[0].affiliates[0].products == ("3012345",)


def test_load_config_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as caught:
        load_config(path, {})
    assert caught.value.problems == [("(file)", f"{path} does not exist")]


def test_load_config_toml_syntax_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text('[[producers]]\nid = "acme\nhottok = "x"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path, {})
    [(where, reason)] = caught.value.problems
    assert where == "(file)"
    assert "not valid TOML" in reason
    assert "line 2" in reason


def test_load_config_unreadable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path, {})  # a directory
    assert caught.value.problems[0][0] == "(file)"
    binary = tmp_path / "latin1.toml"
    binary.write_bytes(b'name = "Luc\xeda"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(binary, {})
    assert caught.value.problems[0][0] == "(file)"


def test_example_config_loads_with_an_empty_environment() -> None:
    config = load_config(EXAMPLE, {})
    assert config.base_dir == ROOT
    assert config.email.transport == "maildir"
    [producer] = config.producers
    assert producer.id == "demo"
    by_code = {a.code: a for a in producer.affiliates}
    assert set(by_code) == {"K12345678M", "Q58388177J", "P98765432X"}
    assert by_code["K12345678M"].buyer_data is True
    assert by_code["K12345678M"].events == ("PURCHASE_BILLET_PRINTED", "PURCHASE_APPROVED")
    assert by_code["Q58388177J"].buyer_data is True
    assert by_code["P98765432X"].buyer_data is False
    assert all(a.destinations for a in producer.affiliates)


# --- the CLI contract ------------------------------------------------------------------------


def run_check_config(path: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("RELAY")}
    return subprocess.run(
        [sys.executable, "-m", "relay", "--config", str(path), "check-config"],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**environ, "PYTHONPATH": str(ROOT)},
        timeout=30,
        check=False,
    )


def test_cli_check_config_bad_config_exits_2_with_dotted_paths(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        '[delivery]\ntimeout = "soon"\n\n'
        '[[producers]]\nid = "acme"\nhottok = "t"\n\n'
        '[[producers.affiliates]]\ncode = "A"\nlocale = "fr"\n\n'
        '[[producers.affiliates.destinations]]\nkind = "webhook"\n'
        'url = "http://a.example.com/h"\nsecret = "whsec_abc"\n',
        encoding="utf-8",
    )
    result = run_check_config(path, tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output
    assert "delivery.timeout" in output
    assert "producers.0.affiliates.0.locale" in output
    assert "producers.0.affiliates.0.destinations.0.url" in output


def test_cli_check_config_missing_or_broken_file_exits_2(tmp_path: Path) -> None:
    result = run_check_config(tmp_path / "absent.toml", tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stdout + result.stderr
    assert "does not exist" in result.stderr
    broken = tmp_path / "broken.toml"
    broken.write_text("[[producers]\n", encoding="utf-8")
    result = run_check_config(broken, tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stdout + result.stderr
    assert "not valid TOML" in result.stderr


def test_cli_check_config_example_exits_0(tmp_path: Path) -> None:
    result = run_check_config(EXAMPLE, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr


# --- strict booleans and the warnings check-config prints -------------------------------------


@pytest.mark.parametrize("value", ["yes", "true", "sim", 1, 0, "false", "", 1.0])
@pytest.mark.parametrize(
    ("where", "key"),
    [
        (lambda r: affiliate(r), "buyer_data"),
        (lambda r: affiliate(r)["destinations"][0], "enabled"),
        (lambda r: r.setdefault("delivery", {}), "allow_private_networks"),
    ],
    ids=["buyer_data", "enabled", "allow_private_networks"],
)
def test_booleans_must_be_booleans(value: object, where: Any, key: str) -> None:
    raw = minimal()
    where(raw)[key] = value
    found = problems(raw)
    assert len(found) == 1
    path, reason = found[0]
    assert path.endswith(key)
    assert "true or false" in reason


def test_allow_http_must_be_a_boolean_and_a_bad_one_does_not_open_http() -> None:
    raw = with_webhook("http://hooks.example.com/x", allow_http="yes")
    assert sorted(paths(raw)) == [f"{AFF}.destinations.0.allow_http"]
    raw = with_webhook("http://hooks.example.com/x", allow_http=True)
    assert parse(raw).producers[0].affiliates[0].destinations[0].enabled is True


def test_a_boolean_from_the_environment_is_refused_with_a_reason() -> None:
    raw = minimal()
    affiliate(raw)["buyer_data"] = "env:ANA_BUYER_DATA"
    ((path, reason),) = problems(raw, {"ANA_BUYER_DATA": "true"})
    assert path == f"{AFF}.buyer_data" and "true or false" in reason


def write_config(tmp_path: Path, raw: dict[str, Any]) -> Path:
    from tests.test_cli import write_toml

    return write_toml(raw, tmp_path / "relay.toml")


def test_buyer_data_without_destinations_is_a_warning_not_an_error(tmp_path: Path) -> None:
    raw = minimal()
    raw["producers"][0]["affiliates"].append({"code": "EMPTY1", "buyer_data": True})
    raw["producers"][0]["affiliates"].append({"code": "EMPTY2"})  # not permitted: nothing to say
    result = run_check_config(write_config(tmp_path, raw), tmp_path)
    assert result.returncode == 0, result.stderr
    assert "config ok" in result.stdout and "1 warning" in result.stdout
    (warning,) = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert "producers.0.affiliates.1" in warning and "no destinations" in warning
    assert "EMPTY2" not in result.stderr


def test_a_template_file_that_matches_no_template_name_is_a_warning(tmp_path: Path) -> None:
    overrides = tmp_path / "acme-templates"
    (overrides / "old").mkdir(parents=True)
    (overrides / "billet_printed.es.html").write_text("<p>{{ event.product.name }}</p>")
    (overrides / "billet_printed.es.htm").write_text("typo")
    (overrides / "old" / "webhook.json").write_text("{}")
    (overrides / ".billet_printed.es.html.swp").write_text("editor noise")
    raw = minimal()
    raw["producers"][0]["templates_dir"] = str(overrides)
    result = run_check_config(write_config(tmp_path, raw), tmp_path)
    assert result.returncode == 0, result.stderr
    warnings = sorted(line for line in result.stderr.splitlines() if line.startswith("warning:"))
    assert len(warnings) == 2, result.stderr
    assert "billet_printed.es.htm matches no template name" in warnings[0]
    assert "did you mean billet_printed.es.html" in warnings[0]
    assert "old/webhook.json matches no template name" in warnings[1]
    assert all("producers.0.templates_dir" in w for w in warnings)
    assert "2 warnings" in result.stdout
