"""Injection, SSRF and privacy against the real `relay serve`.

What arrives from Hotmart is data, never code, headers, log lines or a way into the
relay's own network; and nothing reaches an affiliate the producer did not allow.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.acceptance.conftest import Figures
from tests.acceptance.harness import (
    Relay,
    outcome_line,
    relay_config,
    running,
    slip_event,
    wait_for,
    webhook_affiliate,
)
from tests.acceptance.peer_control import Sink, Smtp

SETTLE_S = 30.0
# A slip's webhook body is about 2 kB; no input may make one much larger (issue 6 defect 1).
MAX_WEBHOOK_BODY_BYTES = 64 * 1024


HOOKS = ("hook-inject", "hook-url", "hook-price", "hook-denied")


@pytest.fixture(scope="module")
def relay(workdir: Path, sink: Sink, smtp: Smtp) -> Iterator[Relay]:
    raw = relay_config(workdir)
    raw["email"] = {
        "from": "Relay <relay@example.com>",
        "transport": "smtp",
        "smtp": {"host": "127.0.0.1", "port": smtp.port},
    }
    affiliates = [webhook_affiliate(code, sink.url(f"/{code}")) for code in HOOKS]
    affiliates[-1]["buyer_data"] = False  # the producer does not let this one see buyers
    affiliates.append(
        {
            "code": "mail-inject",
            "buyer_data": True,
            "destinations": [{"kind": "email", "to": "mail-inject@example.com"}],
        }
    )
    raw["producers"][0]["affiliates"] = affiliates
    with running(Relay.from_config(raw, workdir)) as started:
        yield started


def settle(relay: Relay, event: dict[str, Any]) -> dict[str, Any]:
    reply = relay.post(event)
    assert reply.status == 200, reply
    row = wait_for(lambda: relay.settled(event["id"]), timeout_s=SETTLE_S, what="settled")
    return dict(row)


def test_template_syntax_in_event_data_is_sent_as_text(relay: Relay, sink: Sink) -> None:
    event = slip_event("hook-inject")
    event["data"]["product"]["name"] = "{{ 7 * 7 }}{% for x in ().__class__.__mro__ %}x{% endfor %}"
    event["data"]["buyer"]["name"] = '</script><img src=x onerror=alert(1)> "quoted"'

    row = settle(relay, event)

    assert row["status"] == "delivered"
    (hit,) = sink.hits("/hook-inject")
    body = json.loads(hit["body"])
    assert body["product"]["name"] == event["data"]["product"]["name"]
    assert body["buyer"]["name"] == event["data"]["buyer"]["name"]


def test_header_injection_through_event_data_reaches_no_smtp_header(
    relay: Relay, smtp: Smtp
) -> None:
    event = slip_event("mail-inject")
    event["data"]["product"]["name"] = "Curso\r\nBcc: evil@example.com\r\nX-Evil: 1"
    event["data"]["buyer"]["name"] = "María\r\n\r\nforged body"

    row = settle(relay, event)

    assert row["status"] == "delivered"
    (mail,) = [m for m in smtp.mails() if m["rcpt_tos"] == ["mail-inject@example.com"]]
    assert "bcc" not in mail["header_names"]
    assert "x-evil" not in mail["header_names"]
    assert len(mail["header_names"]) == len(set(mail["header_names"]))  # no header twice
    assert "Bcc: evil@example.com" in mail["subject"]  # kept as words on the one line


def test_an_affiliate_without_buyer_data_gets_nothing(relay: Relay, sink: Sink) -> None:
    """The privacy gate at ingest, end to end (at send time: test_delivery.py)."""
    event = slip_event("hook-denied")

    reply = relay.post(event)

    assert reply.status == 200
    assert reply.json()["deliveries"] == 0
    (row,) = relay.deliveries_of(event["id"])
    assert row["status"] == "withheld"
    assert sink.hits("/hook-denied") == []


def test_a_malformed_slip_url_still_sends_the_code(
    relay: Relay, sink: Sink, figures: Figures
) -> None:
    event = slip_event("hook-url", billet_url="https://pay.hotmart.example[/x")

    row = settle(relay, event)
    figures.add(outcome_line("malformed slip URL", row, relay.show(row["id"])))

    assert row["status"] == "delivered"
    assert row["attempts"] == 1
    body = json.loads(sink.hits("/hook-url")[-1]["body"])
    assert body["payment"]["slip_code"] == "93000004217642712001230000499007"
    listed = json.loads(relay.cli("destinations", "--json").stdout)
    health = {d["key"]: d for d in listed}[row["destination_key"]]
    assert health["consecutive_failures"] == 0  # the event's fault, not the receiver's


@pytest.mark.parametrize("price", ["1E+1000000", "-1E-1000000"])
def test_a_poisoned_price_is_unknown_and_the_body_stays_small(
    relay: Relay, sink: Sink, figures: Figures, price: str
) -> None:
    """The issue's own values (1E+999999999) would cost gigabytes today; a million
    digits shows the same defect at a price this machine can pay."""
    event = slip_event("hook-price")
    event["data"]["purchase"]["price"]["value"] = price
    sent_before = len(sink.hits("/hook-price"))

    row = settle(relay, event)

    assert row["status"] == "delivered"
    hit = sink.hits("/hook-price")[sent_before]
    figures.add(f"price {price}: webhook body {len(hit['body'].encode())} bytes")
    assert len(hit["body"].encode()) <= MAX_WEBHOOK_BODY_BYTES
    assert json.loads(hit["body"])["purchase"]["price"]["value"] is None


def test_an_event_id_cannot_forge_a_log_line(relay: Relay) -> None:
    forged = "2026-11-29 03:00:00,000 WARNING relay.attempt: destination acme/x/0 disabled"
    # Delivered, so its attempt is logged at INFO with the event id (ingest's own line
    # for it is DEBUG since issue 10).
    event = slip_event("hook-inject")
    event["id"] = f"evt-forge\n{forged}"

    assert relay.post(event).status == 200

    wait_for(lambda: "evt-forge" in relay.log(), timeout_s=SETTLE_S, what="the event logged")
    assert not any(line.startswith(forged) for line in relay.log().splitlines())


# -- SSRF: addresses that reach this machine in IPv6 clothing -------------------------------

SSRF_HOSTS = {
    "ssrf-6to4": "[2002:7f00:1::]",  # 6to4 of 127.0.0.1
    "ssrf-nat64": "[64:ff9b::7f00:1]",  # NAT64 (well-known prefix) of 127.0.0.1
    "ssrf-nat64-local": "[64:ff9b:1::7f00:1]",  # NAT64 (local-use prefix)
    "ssrf-teredo": "[2001:0:4136:e378:8000:63bf:3fff:fdd2]",  # Teredo
}


def test_ipv6_forms_of_a_loopback_address_are_refused(workdir: Path, sink: Sink) -> None:
    """A relay as shipped (private networks refused) will not start with such a URL.

    The config check and the guard at connect time judge an address with one rule
    (`relay.addresses`); a name that resolves to these forms is refused when connecting
    (tests/test_webhook_channel.py, tests/test_address_guard.py).
    """
    raw = relay_config(workdir, name="guarded", allow_private_networks=False)
    raw["producers"][0]["affiliates"] = [
        webhook_affiliate(code, f"http://{host}:{sink.port}/{code}", allow_http=True)
        for code, host in SSRF_HOSTS.items()
    ]
    relay = Relay.from_config(raw, workdir, name="guarded")
    checked = relay.cli("check-config")
    assert checked.returncode == 2
    refused = [line for line in checked.stderr.splitlines() if "private or loopback" in line]
    assert len(refused) == len(SSRF_HOSTS), checked.stderr
    served = relay.cli("serve")
    assert served.returncode == 2  # refused before binding: nothing is ever sent
    for code in SSRF_HOSTS:
        assert sink.hits(f"/{code}") == []
