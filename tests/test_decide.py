"""The privacy gate (relay.decide): every reason, one row per affiliate x destination, and a
property test that nothing reaches `deliver` without buyer_data = true and the product in scope."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.config import (
    AffiliateConfig,
    EmailDestination,
    ProducerConfig,
    WebhookDestination,
    parse_config,
)
from relay.decide import Decision, Outcome, decide
from relay.destination_ids import derived_id
from relay.hotmart import KNOWN_EVENTS, SLIP_EVENT, Event, parse_json_event

FIXTURES = Path(__file__).parent / "fixtures"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
LUCIA = "K12345678M"
# Keys derived from kind and address (no `id` given): see tests/test_destination_ids.py.
LUCIA_MAIL = f"acme/{LUCIA}/{derived_id('email', 'lucia@example.com')}"
LUCIA_HOOK = f"acme/{LUCIA}/{derived_id('webhook', 'https://lucia.example.com/h')}"
JOAO_HOOK = derived_id("webhook", "https://joao.example.com/h")


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text(encoding="utf-8"))
    return data


def event_from(name: str = "billet_printed_oxxo.json", **changes: Any) -> Event:
    """A fixture event, optionally with other affiliates, product or event name."""
    body = load(name)
    if "affiliates" in changes:
        body["data"]["affiliates"] = [
            {"affiliate_code": code, "name": ""} for code in changes.pop("affiliates")
        ]
    if "product_id" in changes:
        body["data"]["product"]["id"] = changes.pop("product_id")
    if "ucode" in changes:
        body["data"]["product"]["ucode"] = changes.pop("ucode")
    if "event" in changes:
        body["event"] = changes.pop("event")
    if "payment" in changes:
        body["data"]["purchase"]["payment"] = changes.pop("payment")
    assert not changes, changes
    return parse_json_event(body)


def email(to: str = "lucia@example.com", **extra: Any) -> dict[str, Any]:
    return {"kind": "email", "to": to, **extra}


def webhook(url: str = "https://lucia.example.com/h", **extra: Any) -> dict[str, Any]:
    return {"kind": "webhook", "url": url, "secret": SECRET, **extra}


def producer(*affiliates: dict[str, Any], producer_id: str = "acme") -> ProducerConfig:
    raw = {"producers": [{"id": producer_id, "hottok": "tok", "affiliates": list(affiliates)}]}
    return parse_config(copy.deepcopy(raw), {}, base_dir=Path(".")).producers[0]


def lucia(**overrides: Any) -> dict[str, Any]:
    """An affiliate who may receive everything; tests take permissions away one by one."""
    return {
        "code": LUCIA,
        "buyer_data": True,
        "products": "all",
        "events": [SLIP_EVENT, "PURCHASE_APPROVED"],
        "destinations": [email()],
        **overrides,
    }


def only(decisions: list[Decision]) -> Decision:
    assert len(decisions) == 1, decisions
    return decisions[0]


# --- deliver ---------------------------------------------------------------------------------


def test_permitted_affiliate_gets_a_delivery() -> None:
    decision = only(decide(producer(lucia()), event_from()))
    assert decision.outcome is Outcome.DELIVER
    assert decision.affiliate_code == LUCIA
    assert decision.destination_key == LUCIA_MAIL
    assert decision.channel == "email"
    assert "buyer_data" in decision.reason


@pytest.mark.parametrize(
    "fixture",
    ["billet_printed_oxxo.json", "billet_printed_baloto.json", "billet_printed_pix.json"],
)
def test_every_slip_kind_is_delivered(fixture: str) -> None:
    decision = only(decide(producer(lucia()), event_from(fixture, affiliates=[LUCIA])))
    assert decision.outcome is Outcome.DELIVER


def test_one_row_per_affiliate_and_destination() -> None:
    joao = lucia(code="P98765432X", destinations=[webhook("https://joao.example.com/h")])
    destinations = [email(), webhook(id="crm"), email("l2@example.com", enabled=False, id="old")]
    config = producer(lucia(destinations=destinations), joao)
    decisions = decide(config, event_from(affiliates=[LUCIA, "P98765432X"]))
    assert [(d.affiliate_code, d.destination_key, d.channel, d.outcome) for d in decisions] == [
        (LUCIA, LUCIA_MAIL, "email", Outcome.DELIVER),
        (LUCIA, f"acme/{LUCIA}/crm", "webhook", Outcome.DELIVER),
        (LUCIA, f"acme/{LUCIA}/old", "email", Outcome.SKIPPED),
        ("P98765432X", f"acme/P98765432X/{JOAO_HOOK}", "webhook", Outcome.DELIVER),
    ]


def test_repeated_affiliate_in_the_event_is_decided_once() -> None:
    decisions = decide(producer(lucia()), event_from(affiliates=[LUCIA, "", LUCIA]))
    assert [d.outcome for d in decisions] == [Outcome.DELIVER]


def test_a_non_slip_event_is_delivered_when_subscribed() -> None:
    event = event_from("purchase_approved_oxxo.json")
    assert only(decide(producer(lucia()), event)).outcome is Outcome.DELIVER


# --- withheld --------------------------------------------------------------------------------


@pytest.mark.parametrize("buyer_data", [False, None])
def test_withheld_without_buyer_data(buyer_data: bool | None) -> None:
    aff = lucia(destinations=[email(), webhook()])
    if buyer_data is None:
        del aff["buyer_data"]  # absent means nothing is sent
    else:
        aff["buyer_data"] = buyer_data
    decisions = decide(producer(aff), event_from())
    assert [d.outcome for d in decisions] == [Outcome.WITHHELD, Outcome.WITHHELD]
    assert [d.destination_key for d in decisions] == [LUCIA_MAIL, LUCIA_HOOK]
    assert all("buyer_data = false" in d.reason for d in decisions)


def test_privacy_is_judged_before_anything_else() -> None:
    aff = lucia(
        buyer_data=False,
        products=["999"],
        events=["PURCHASE_APPROVED"],
        destinations=[email(enabled=False)],
    )
    event = event_from("test_button_billet_printed.json")
    assert only(decide(producer(aff), event)).outcome is Outcome.WITHHELD


def test_unknown_affiliate_is_withheld_without_a_destination() -> None:
    decision = only(decide(producer(lucia()), event_from(affiliates=["Z99999999Z"])))
    assert decision.outcome is Outcome.WITHHELD
    assert decision.affiliate_code == "Z99999999Z"
    assert decision.destination_key is None
    assert decision.channel is None
    assert "unknown affiliate Z99999999Z" in decision.reason
    assert "acme" in decision.reason


def test_affiliate_codes_are_matched_exactly() -> None:
    decision = only(decide(producer(lucia()), event_from(affiliates=[LUCIA.lower()])))
    assert decision.outcome is Outcome.WITHHELD


def test_known_and_unknown_affiliates_in_one_event() -> None:
    decisions = decide(producer(lucia()), event_from(affiliates=["Z1", LUCIA]))
    assert [(d.affiliate_code, d.outcome) for d in decisions] == [
        ("Z1", Outcome.WITHHELD),
        (LUCIA, Outcome.DELIVER),
    ]


def test_affiliate_without_destinations() -> None:
    decision = only(decide(producer(lucia(destinations=[])), event_from()))
    assert decision.outcome is Outcome.SKIPPED
    assert decision.reason == "affiliate has no destinations"
    assert decision.affiliate_code == LUCIA
    assert decision.destination_key is None
    denied = only(decide(producer(lucia(destinations=[], buyer_data=False)), event_from()))
    assert denied.outcome is Outcome.WITHHELD
    assert "buyer_data = false" in denied.reason


# --- skipped ---------------------------------------------------------------------------------


def test_skipped_when_event_not_subscribed() -> None:
    decision = only(decide(producer(lucia(events=["PURCHASE_APPROVED"])), event_from()))
    assert decision.outcome is Outcome.SKIPPED
    assert decision.reason == f"event {SLIP_EVENT} is not subscribed"
    assert decision.destination_key == LUCIA_MAIL


def test_default_events_are_the_slip_event_only() -> None:
    aff = lucia()
    del aff["events"]
    config = producer(aff)
    assert only(decide(config, event_from())).outcome is Outcome.DELIVER
    approved = event_from("purchase_approved_oxxo.json")
    assert only(decide(config, approved)).outcome is Outcome.SKIPPED


@pytest.mark.parametrize(
    ("products", "product_id", "ucode", "outcome"),
    [
        ("all", 3012345, "u-1", Outcome.DELIVER),
        ([3012345], 3012345, "u-1", Outcome.DELIVER),  # int in config, int in event
        (["3012345"], 3012345, "u-1", Outcome.DELIVER),  # text in config, int in event
        ([3012345], "3012345", "u-1", Outcome.DELIVER),  # int in config, text in event
        ([3012345], 3012345.0, "u-1", Outcome.DELIVER),
        (["u-1"], 555, "u-1", Outcome.DELIVER),  # by ucode
        ([111, "u-2"], 3012345, "u-1", Outcome.SKIPPED),
        ([], 3012345, "u-1", Outcome.SKIPPED),
        (["301234"], 3012345, "u-1", Outcome.SKIPPED),  # no prefix matching
        ([""], 3012345, "", Outcome.SKIPPED),  # an empty ucode never matches
    ],
)
def test_product_scope(products: Any, product_id: Any, ucode: str, outcome: Outcome) -> None:
    config = producer(lucia(products=products))
    decision = only(decide(config, event_from(product_id=product_id, ucode=ucode)))
    assert decision.outcome is outcome
    if outcome is Outcome.SKIPPED:
        assert "out of this affiliate's scope" in decision.reason


def test_skipped_when_destination_disabled_in_config() -> None:
    config = producer(lucia(destinations=[email(enabled=False), webhook()]))
    first, second = decide(config, event_from())
    assert first.outcome is Outcome.SKIPPED
    assert first.reason == "destination disabled in config (enabled = false)"
    assert second.outcome is Outcome.DELIVER


def test_test_button_with_credit_card_is_skipped_plainly() -> None:
    config = producer(lucia(code="Q58388177J"))
    decision = only(decide(config, event_from("test_button_billet_printed.json")))
    assert decision.outcome is Outcome.SKIPPED
    assert "test button" in decision.reason
    assert "CREDIT_CARD" in decision.reason
    assert decision.destination_key is not None
    assert decision.destination_key.startswith("acme/Q58388177J/email-")
    # A producer's first click must read as the success it is.
    assert decision.reason.startswith("Hotmart's test button: received fine.")
    assert "failed" not in decision.reason


@pytest.mark.parametrize("product_id", [0, "0", "00000"])
def test_every_spelling_of_the_test_product_gets_the_plain_reason(product_id: Any) -> None:
    config = producer(lucia(code="Q58388177J"))
    event = event_from("test_button_billet_printed.json", product_id=product_id)
    assert "received fine" in only(decide(config, event)).reason


@pytest.mark.parametrize(
    "fixture", ["billet_printed_financed_billet.json", "billet_printed_cash_co.json"]
)
def test_real_shaped_slips_of_every_type_are_delivered(fixture: str) -> None:
    decision = only(decide(producer(lucia()), event_from(fixture, affiliates=[LUCIA])))
    assert decision.outcome is Outcome.DELIVER


@pytest.mark.parametrize("kind", ["CREDIT_CARD", "FINANCED_BILLET", "SOMETHING_NEW", ""])
def test_a_slip_is_delivered_whatever_the_payment_type(kind: str) -> None:
    payment = {"type": kind, "billet_url": "https://pay.hotmart.example/x/1"}
    assert only(decide(producer(lucia()), event_from(payment=payment))).outcome is Outcome.DELIVER


def test_an_affiliate_entry_without_a_code_is_a_direct_sale() -> None:
    event = event_from("billet_printed_affiliate_without_code.json")
    assert only(decide(producer(lucia()), event)).outcome is Outcome.IGNORED


@pytest.mark.parametrize(
    ("products", "outcome"), [([4116023], Outcome.DELIVER), ([3012345], Outcome.SKIPPED)]
)
def test_a_subscription_event_is_scoped_by_the_product_under_subscription(
    products: list[int], outcome: Outcome
) -> None:
    body = load("switch_plan.json")
    body["data"]["affiliates"] = [{"affiliate_code": LUCIA, "name": ""}]
    config = producer(lucia(products=products, events=["SWITCH_PLAN"]))
    assert only(decide(config, parse_json_event(body))).outcome is outcome


def test_slip_event_without_slip_data_is_skipped() -> None:
    event = event_from(payment={"type": "CREDIT_CARD"})
    decision = only(decide(producer(lucia()), event))
    assert decision.outcome is Outcome.SKIPPED
    assert decision.reason == "no slip data for payment type CREDIT_CARD"
    event = event_from(payment={})
    assert only(decide(producer(lucia()), event)).reason == "no slip data for payment type unknown"


# --- ignored ---------------------------------------------------------------------------------


@pytest.mark.parametrize("affiliates", [[], [""], ["", "  "]])
def test_no_affiliate_is_ignored(affiliates: list[str]) -> None:
    decision = only(decide(producer(lucia()), event_from(affiliates=affiliates)))
    assert decision.outcome is Outcome.IGNORED
    assert decision.affiliate_code == ""
    assert decision.destination_key is None
    assert "no affiliate" in decision.reason


def test_no_affiliate_fixture_is_ignored() -> None:
    event = event_from("billet_printed_no_affiliate.json")
    assert only(decide(producer(lucia()), event)).outcome is Outcome.IGNORED


def test_producer_without_affiliates() -> None:
    decision = only(decide(producer(), event_from()))
    assert decision.outcome is Outcome.WITHHELD


def test_outcome_values_are_the_stored_words() -> None:
    assert [o.value for o in Outcome] == ["deliver", "withheld", "skipped", "ignored"]


def test_decide_on_models_built_directly() -> None:
    config = ProducerConfig(
        id="acme",
        hottok="tok",
        affiliates=(
            AffiliateConfig(
                code=LUCIA,
                buyer_data=True,
                destinations=(
                    EmailDestination(kind="email", to="l@example.com"),
                    WebhookDestination(kind="webhook", url="https://l.example.com", secret=SECRET),
                ),
            ),
        ),
    )
    decisions = decide(config, event_from())
    assert [(d.outcome, d.channel) for d in decisions] == [
        (Outcome.DELIVER, "email"),
        (Outcome.DELIVER, "webhook"),
    ]


# --- the property: nothing leaks -------------------------------------------------------------

CODES = ["A", "B", "C", "D", "E"]
PRODUCT_POOL: list[int | str] = [3012345, "3012345", 7, "7", 0, "ucode-a", "ucode-b"]
EVENT_NAMES = [SLIP_EVENT, "PURCHASE_APPROVED", "PURCHASE_CANCELED", "SWITCH_PLAN"]

destinations_st = st.lists(
    st.one_of(
        st.builds(
            lambda enabled, n: {"kind": "email", "to": f"x{n}@example.com", "enabled": enabled},
            st.booleans(),
            st.integers(0, 9),
        ),
        st.builds(
            lambda enabled, n: {
                "kind": "webhook",
                "url": f"https://h{n}.example.com/hook",
                "secret": SECRET,
                "enabled": enabled,
            },
            st.booleans(),
            st.integers(0, 9),
        ),
    ),
    max_size=3,
    # One address twice in an affiliate is a config error (the same derived key).
    unique_by=lambda d: (d["kind"], d.get("to") or d["url"]),
)


@st.composite
def affiliate_st(draw: st.DrawFn, code: str) -> dict[str, Any]:
    raw: dict[str, Any] = {"code": code, "destinations": draw(destinations_st)}
    buyer_data = draw(st.sampled_from([True, False, None]))
    if buyer_data is not None:
        raw["buyer_data"] = buyer_data
    raw["products"] = draw(
        st.one_of(st.just("all"), st.lists(st.sampled_from(PRODUCT_POOL), max_size=3))
    )
    if draw(st.booleans()):
        raw["events"] = draw(st.lists(st.sampled_from(sorted(KNOWN_EVENTS)), max_size=4))
    return raw


@st.composite
def config_st(draw: st.DrawFn) -> dict[str, Any]:
    producers = []
    for index in range(draw(st.integers(1, 3))):
        codes = draw(st.lists(st.sampled_from(CODES), max_size=4, unique=True))
        producers.append(
            {
                "id": f"p{index}",
                "hottok": f"tok-{index}",
                "affiliates": [draw(affiliate_st(code)) for code in codes],
            }
        )
    return {"producers": producers}


PAYMENTS = st.one_of(
    st.fixed_dictionaries(
        {"type": st.sampled_from(["BILLET", "CASH_PAYMENT", "OXXO", "PAGO_EFECTIVO"])},
        optional={
            "billet_url": st.just("https://pay.example/slip"),
            "billet_barcode": st.just("3419 1096"),
        },
    ),
    st.fixed_dictionaries(
        {"type": st.just("PIX")},
        optional={"pix_code": st.just("000201pix"), "pix_qrcode": st.just("https://qr")},
    ),
    st.fixed_dictionaries(
        {"type": st.sampled_from(["CREDIT_CARD", "PAYPAL", ""])},
        optional={"billet_url": st.just("https://pay.example/slip")},
    ),
)


@st.composite
def event_st(draw: st.DrawFn) -> dict[str, Any]:
    affiliate_codes = st.sampled_from([*CODES, "", " A", "a", "Z"])
    return {
        "id": "evt-1",
        "event": draw(st.sampled_from([*EVENT_NAMES, *sorted(KNOWN_EVENTS), "NOT_AN_EVENT"])),
        "data": {
            "product": {
                "id": draw(st.sampled_from(PRODUCT_POOL)),
                "ucode": draw(st.sampled_from(["", "ucode-a", "ucode-b", "ucode-c"])),
            },
            "affiliates": [
                {"affiliate_code": code} for code in draw(st.lists(affiliate_codes, max_size=4))
            ],
            "purchase": {
                "checkout_country": {"iso": draw(st.sampled_from(["MX", "CO", "BR", ""]))},
                "payment": draw(PAYMENTS),
            },
        },
    }


def in_scope(raw_affiliate: dict[str, Any], event: Event) -> bool:
    """Product scope computed independently of AffiliateConfig.covers_product."""
    products = raw_affiliate.get("products", "all")
    if products == "all":
        return True
    as_text = {str(item) for item in products}
    return event.product.id in as_text or (
        event.product.ucode != "" and event.product.ucode in as_text
    )


@settings(max_examples=300, deadline=None)
@given(raw_config=config_st(), raw_event=event_st())
def test_nothing_is_delivered_without_permission(
    raw_config: dict[str, Any], raw_event: dict[str, Any]
) -> None:
    config = parse_config(copy.deepcopy(raw_config), {}, base_dir=Path("."))
    event = parse_json_event(copy.deepcopy(raw_event))
    named = {
        str(a["affiliate_code"]).strip()
        for a in raw_event["data"]["affiliates"]
        if str(a["affiliate_code"]).strip()
    }
    for raw_producer, producer_config in zip(
        raw_config["producers"], config.producers, strict=True
    ):
        raw_by_code = {a["code"]: a for a in raw_producer["affiliates"]}
        decisions = decide(producer_config, event)
        assert decisions == decide(producer_config, event), "decide is pure"
        if not named:
            assert [d.outcome for d in decisions] == [Outcome.IGNORED]
            continue
        assert {d.affiliate_code for d in decisions} == named
        for code in named:
            rows = [d for d in decisions if d.affiliate_code == code]
            known = raw_by_code.get(code)
            expected_rows = max(1, len(known["destinations"])) if known else 1
            assert len(rows) == expected_rows
            if known is None or known.get("buyer_data") is not True:
                assert all(d.outcome is Outcome.WITHHELD for d in rows)
        for decision in decisions:
            assert decision.outcome is not Outcome.IGNORED
            if decision.outcome is not Outcome.DELIVER:
                continue
            raw_affiliate = raw_by_code[decision.affiliate_code]
            assert decision.affiliate_code in named
            assert raw_affiliate.get("buyer_data") is True
            assert in_scope(raw_affiliate, event)
            assert event.event in raw_affiliate.get("events", [SLIP_EVENT])
            # The destination key points at an existing, enabled destination of this affiliate.
            assert decision.destination_key is not None
            producer_id, code, destination_id = decision.destination_key.split("/")
            assert (producer_id, code) == (raw_producer["id"], decision.affiliate_code)
            (destination,) = [
                d
                for d in raw_affiliate["destinations"]
                if derived_id(d["kind"], d.get("to") or d["url"]) == destination_id
            ]
            assert destination["enabled"] is True
            assert decision.channel == destination["kind"]
            if event.event == SLIP_EVENT:
                assert event.payment.has_slip
