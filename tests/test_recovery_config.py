"""`[recovery]` (issue 11 §5): off unless present, strict types, dotted-path errors, an
affiliate's opt-out, and what check-config says when it is on; and the pure rules sale
recovery follows at send time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from relay.attempt_outcome import Unsent
from relay.config import DEFAULT_REMIND_BEFORE_S
from relay.records import DeliveryStatus, Notice
from relay.recovery import message_options, refusal_at_send, slip_expiry_ms
from relay.targets import Target
from tests.conftest import fixture_json
from tests.test_config import (
    AFF,
    affiliate,
    minimal,
    parse,
    problems,
    run_check_config,
    write_config,
)


def test_recovery_is_off_unless_its_table_is_there() -> None:
    assert parse(minimal()).recovery is None
    raw = minimal()
    raw["recovery"] = {}
    recovery = parse(raw).recovery
    assert recovery is not None
    assert (recovery.enabled, recovery.remind_before_s, recovery.slip_validity_s) == (
        True,
        DEFAULT_REMIND_BEFORE_S,
        {},
    )
    assert (recovery.notify_paid, recovery.notify_expired) == (True, False)
    assert parse(raw).producers[0].affiliates[0].recovery is True  # opted in by default


def test_the_keys_parse_as_written() -> None:
    raw = minimal()
    raw["recovery"] = {
        "enabled": False,
        "remind_before": "90m",
        "slip_validity": {"BILLET": "3d", "CASH_PAYMENT": "2d"},
        "notify_paid": False,
        "notify_expired": True,
    }
    affiliate(raw)["recovery"] = False
    config = parse(raw)
    assert config.recovery is not None
    assert config.recovery.remind_before_s == 5400
    assert config.recovery.slip_validity_s == {"BILLET": 3 * 86400, "CASH_PAYMENT": 2 * 86400}
    assert (config.recovery.enabled, config.recovery.notify_expired) == (False, True)
    assert config.producers[0].affiliates[0].recovery is False


@pytest.mark.parametrize(
    ("recovery", "where", "says"),
    [
        ({"enabled": "yes"}, "recovery.enabled", "true or false"),
        ({"notify_paid": 1}, "recovery.notify_paid", "true or false"),
        ({"remind_before": "6 hours"}, "recovery.remind_before", "is not a duration"),
        ({"remind_before": "0s"}, "recovery.remind_before", "greater than 0"),
        (
            {"slip_validity": {"BOLETO": "3d"}},
            "recovery.slip_validity.BOLETO",
            "did you mean BILLET",
        ),
        ({"slip_validity": {"OXXO": "3d"}}, "recovery.slip_validity.OXXO", "not a Hotmart payment"),
        ({"slip_validity": {"BILLET": "soon"}}, "recovery.slip_validity.BILLET", "not a duration"),
        ({"slip_validity": {"PIX": "0s"}}, "recovery.slip_validity.PIX", "over 0"),
        ({"slip_validity": "3d"}, "recovery.slip_validity", "dictionary"),
        ({"remind_after": "1h"}, "recovery.remind_after", "unknown key"),
    ],
)
def test_each_mistake_is_reported_at_its_dotted_path(
    recovery: dict[str, Any], where: str, says: str
) -> None:
    raw = minimal()
    raw["recovery"] = recovery
    ((path, reason),) = problems(raw)
    assert path == where and says in reason, (path, reason)


def test_an_affiliates_opt_out_is_a_strict_boolean() -> None:
    raw = minimal()
    affiliate(raw)["recovery"] = "no"
    ((path, reason),) = problems(raw)
    assert path == f"{AFF}.recovery" and "true or false" in reason


def test_check_config_says_what_hotmart_must_send_when_recovery_is_on(tmp_path: Path) -> None:
    raw = minimal()
    result = run_check_config(write_config(tmp_path, raw), tmp_path)
    assert "note:" not in result.stdout  # off: nothing to say

    raw["recovery"] = {"remind_before": "6h", "slip_validity": {"BILLET": "3d", "PIX": "6h"}}
    result = run_check_config(write_config(tmp_path, raw), tmp_path)
    assert result.returncode == 0, result.stderr
    (note,) = [line for line in result.stdout.splitlines() if line.startswith("note:")]
    for event in (
        "PURCHASE_APPROVED",
        "PURCHASE_COMPLETE",
        "PURCHASE_CANCELED",
        "PURCHASE_EXPIRED",
        "PURCHASE_REFUNDED",
    ):
        assert event in note
    assert "whether or not any affiliate subscribes" in note
    (warning,) = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert warning == (
        "warning: recovery.slip_validity.PIX: 6h is not longer than recovery.remind_before "
        "(6h): no PIX slip ever gets a reminder"
    )

    raw["recovery"] = {}
    result = run_check_config(write_config(tmp_path, raw), tmp_path)
    notes = [line for line in result.stdout.splitlines() if line.startswith("note:")]
    assert len(notes) == 2 and "only Pix codes" in notes[1]


# -- the pure rules at send time -------------------------------------------------------------


def lucia(**recovery: Any) -> tuple[Any, Target]:
    raw = minimal()
    raw["recovery"] = recovery
    affiliate(raw)["buyer_data"] = True
    config = parse(raw)
    producer = config.producers[0]
    aff = producer.affiliates[0]
    return config, Target(producer=producer, affiliate=aff, destination=aff.destinations[0])


def pix(**payment: Any) -> Any:
    from relay.hotmart import parse_json_event

    body = fixture_json("billet_printed_pix.json")
    body["data"]["purchase"]["payment"].update(payment)
    return parse_json_event(body)


def test_refusals_when_a_follow_up_falls_due() -> None:
    event = pix()
    expiry = event.payment.expires_at_ms
    assert expiry is not None
    config, target = lucia()
    withheld = target.affiliate.model_copy(update={"buyer_data": False})
    gated = Target(target.producer, withheld, target.destination)
    assert refusal_at_send(config, gated, event, Notice.PAID, 0, None) == Unsent(
        DeliveryStatus.WITHHELD,
        "at send time: affiliate is not permitted to see buyer data (buyer_data = false)",
    )
    assert refusal_at_send(config, target, event, Notice.PAID, 0, None) is None
    assert refusal_at_send(config, target, event, Notice.EXPIRED, 0, None) == Unsent(
        DeliveryStatus.SKIPPED, "at send time: recovery.notify_expired = false"
    )
    quiet, target = lucia(notify_paid=False, notify_expired=True)
    assert refusal_at_send(quiet, target, event, Notice.PAID, 0, None) == Unsent(
        DeliveryStatus.SKIPPED, "at send time: recovery.notify_paid = false"
    )
    assert refusal_at_send(quiet, target, event, Notice.EXPIRED, 0, None) is None
    assert refusal_at_send(config, target, event, Notice.REMINDER, expiry - 1, None) is None
    assert refusal_at_send(config, target, event, Notice.REMINDER, expiry, None) == Unsent(
        DeliveryStatus.CANCELLED, "the slip expired before its reminder went out"
    )
    refunded = refusal_at_send(config, target, event, Notice.REMINDER, 0, "PURCHASE_REFUNDED")
    assert refunded == Unsent(
        DeliveryStatus.CANCELLED, "refunded before the reminder was due (PURCHASE_REFUNDED)"
    )


def test_the_expiry_and_what_a_message_carries() -> None:
    config, target = lucia(slip_validity={"BILLET": "3d"})
    assert config.recovery is not None
    event = pix()
    assert slip_expiry_ms(event, config.recovery) == event.payment.expires_at_ms
    boleto = event.model_copy(
        update={
            "payment": event.payment.model_copy(update={"type": "BILLET", "expires_at_ms": None})
        }
    )
    ordered = boleto.purchase.order_date_ms
    assert ordered is not None
    assert slip_expiry_ms(boleto, config.recovery) == ordered + 3 * 86_400_000
    undated = boleto.model_copy(
        update={
            "purchase": boleto.purchase.model_copy(update={"order_date_ms": None}),
            "created_at_ms": None,
        }
    )
    assert slip_expiry_ms(undated, config.recovery) is None
    cash = boleto.model_copy(
        update={"payment": boleto.payment.model_copy(update={"type": "CASH_PAYMENT"})}
    )
    assert slip_expiry_ms(cash, config.recovery) is None  # no validity for its type

    affiliate = target.affiliate
    assert message_options(config, affiliate, boleto, Notice.REMINDER) == (
        True,
        ordered + 3 * 86_400_000,
    )
    assert message_options(config, affiliate, event, Notice.PAID) == (False, None)
    assert message_options(config, affiliate, event, Notice.SLIP) == (True, None)
    opted_out = affiliate.model_copy(update={"recovery": False})
    assert message_options(config, opted_out, event, Notice.SLIP) == (False, None)
