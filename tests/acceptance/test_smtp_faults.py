"""SMTP faults against the real `relay serve` and an aiosmtpd server in its own process."""

from __future__ import annotations

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
)
from tests.acceptance.peer_control import Smtp, peer
from tests.peers import free_port

SETTLE_S = 30.0


def email_affiliate(code: str) -> dict[str, Any]:
    return {
        "code": code,
        "name": f"Affiliate {code}",
        "buyer_data": True,
        "destinations": [{"kind": "email", "to": f"{code}@example.com"}],
    }


def smtp_relay_config(
    workdir: Path, smtp_port: int, codes: list[str], **smtp: Any
) -> dict[str, Any]:
    raw = relay_config(workdir, timeout="2s", retry_delays=["50ms"])
    raw["email"] = {
        "from": "Relay <relay@example.com>",
        "transport": "smtp",
        "smtp": {"host": "127.0.0.1", "port": smtp_port, **smtp},
    }
    raw["producers"][0]["affiliates"] = [email_affiliate(code) for code in codes]
    return raw


def outcomes(detail: dict[str, Any]) -> list[tuple[str, int | None]]:
    return [(a["outcome"], a["status_code"]) for a in detail["attempts"]]


def send_one(relay: Relay, code: str, figures: Figures) -> tuple[dict[str, Any], dict[str, Any]]:
    event = slip_event(code)
    assert relay.post(event).status == 200
    row = wait_for(lambda: relay.settled(event["id"]), timeout_s=SETTLE_S, what=f"{code} settled")
    detail = relay.show(row["id"])
    figures.add(outcome_line(code, row, detail))
    return dict(row), detail


def mails_to(smtp: Smtp, code: str) -> list[dict[str, Any]]:
    return [m for m in smtp.mails() if m["rcpt_tos"] == [f"{code}@example.com"]]


def message_id_of(row: dict[str, Any], mails: list[dict[str, Any]]) -> None:
    """Every copy carries the delivery's own Message-ID."""
    assert mails
    assert {m["message_id"] for m in mails} == {f"<{row['message_id']}@relay>"}


# -- one plain server, scripted per recipient --------------------------------------------

PLAIN_CODES = ["smtp-421", "smtp-451", "smtp-550"]


@pytest.fixture(scope="module")
def relay(workdir: Path, smtp: Smtp) -> Iterator[Relay]:
    raw = smtp_relay_config(workdir, smtp.port, PLAIN_CODES)
    with running(Relay.from_config(raw, workdir)) as started:
        yield started


def test_451_is_retried(relay: Relay, smtp: Smtp, figures: Figures) -> None:
    smtp.script({"smtp-451@example.com": ["451 4.3.0 try again later"]})

    row, detail = send_one(relay, "smtp-451", figures)

    assert row["status"] == "delivered"
    assert outcomes(detail) == [("transient", 451), ("success", 250)]
    mails = mails_to(smtp, "smtp-451")
    assert [m["answer"][:3] for m in mails] == ["451", "250"]
    message_id_of(row, mails)


def test_421_is_retried_on_a_new_connection(relay: Relay, smtp: Smtp, figures: Figures) -> None:
    """421 closes the channel. The pool may retry at once on a fresh connection (one
    attempt recorded) or leave it to the schedule (two): either way it arrives once."""
    smtp.script({"smtp-421@example.com": ["421 4.3.2 closing, try later"]})

    row, detail = send_one(relay, "smtp-421", figures)

    assert row["status"] == "delivered"
    assert outcomes(detail) in ([("success", 250)], [("transient", 421), ("success", 250)])
    mails = mails_to(smtp, "smtp-421")
    assert [m["answer"][:3] for m in mails] == ["421", "250"]
    message_id_of(row, mails)


def test_550_fails_at_once(relay: Relay, smtp: Smtp, figures: Figures) -> None:
    smtp.script({"smtp-550@example.com": ["550 5.1.1 no such mailbox"]})

    row, detail = send_one(relay, "smtp-550", figures)

    assert row["status"] == "failed"
    assert outcomes(detail) == [("permanent", 550)]
    assert len(mails_to(smtp, "smtp-550")) == 1
    assert row["last_error"].startswith("permanent failure: SMTP 550")


# -- each fault that needs a server of its own ----------------------------------------------


def test_server_down_then_back_loses_nothing(tmp_path: Path, figures: Figures) -> None:
    smtp_port = free_port()  # nothing listens here yet
    codes = [f"down-{n}" for n in range(5)]
    raw = smtp_relay_config(tmp_path, smtp_port, codes, pool_size=2)
    # Enough retries that the server's start-up, however slow, comes before they run out.
    raw["delivery"]["retry_delays"] = ["100ms", "500ms", "1s", "2s", "5s", "10s"]
    with running(Relay.from_config(raw, tmp_path)) as relay:
        events = [slip_event(code) for code in codes]
        for event in events:
            assert relay.post(event).status == 200

        def all_failed_once() -> bool:
            rows = [relay.deliveries_of(e["id"]) for e in events]
            return all(r and r[0]["attempts"] >= 1 for r in rows)

        wait_for(all_failed_once, timeout_s=SETTLE_S, what="every delivery failed once")
        with peer("smtp", tmp_path, "--port", str(smtp_port)) as process:
            smtp = Smtp(process)
            rows = [
                wait_for(lambda e=e: relay.settled(e["id"]), timeout_s=SETTLE_S, what="settled")
                for e in events
            ]
            mails = smtp.mails()
    figures.add(
        f"smtp down, then back: {len(events)} posted, "
        f"{sum(r['status'] == 'delivered' for r in rows)} delivered, {len(mails)} received, "
        f"attempts {[r['attempts'] for r in rows]}"
    )
    assert [r["status"] for r in rows] == ["delivered"] * len(codes)
    assert sorted(m["message_id"] for m in mails) == sorted(
        f"<{r['message_id']}@relay>" for r in rows
    )  # each exactly once
    first = relay.show(rows[0]["id"])["attempts"][0]
    assert first["outcome"] == "transient"
    assert first["detail"].startswith("SMTP connection failed")


@pytest.mark.parametrize("mode", ["starttls-refused", "starttls-untrusted"])
def test_starttls_offered_but_failing_never_falls_back_to_clear_text(
    tmp_path: Path, mode: str, figures: Figures
) -> None:
    with peer("smtp", tmp_path, "--mode", mode) as process:
        smtp = Smtp(process)
        raw = smtp_relay_config(tmp_path, smtp.port, ["tls"], security="starttls")
        with running(Relay.from_config(raw, tmp_path)) as relay:
            row, detail = send_one(relay, "tls", figures)
        assert smtp.mails() == []  # not one message went out in clear text
    assert row["status"] == "failed"
    if mode == "starttls-refused":
        assert outcomes(detail) == [("transient", 454)] * 2
    else:
        # An operator fixes a certificate: retried like the same fault on a webhook, and
        # the reason says it is the certificate, not the message.
        assert [outcome for outcome, _ in outcomes(detail)] == ["transient"] * 2
        assert "TLS" in detail["attempts"][-1]["detail"]
        assert "certificate verify failed" in detail["attempts"][-1]["detail"]


def test_auth_refused_fails_at_once(tmp_path: Path, figures: Figures) -> None:
    with peer("smtp", tmp_path, "--mode", "auth-refused") as process:
        smtp = Smtp(process)
        raw = smtp_relay_config(tmp_path, smtp.port, ["auth"], username="relay", password="wrong")
        with running(Relay.from_config(raw, tmp_path)) as relay:
            row, detail = send_one(relay, "auth", figures)
        assert smtp.mails() == []
    assert row["status"] == "failed"
    assert outcomes(detail) == [("permanent", 535)]
