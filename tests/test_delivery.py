"""End to end: ingest -> dispatcher -> real SMTP server and real webhook receiver (issue 3)."""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from standardwebhooks import Webhook

from relay.attempt_outcome import (
    MAX_OUTGOING_BYTES,
    MAX_STORED_PAYLOAD_BYTES,
    MAX_STORED_RESPONSE_BYTES,
)
from relay.destination_ids import derived_id
from relay.outcomes import CUT_MARK
from relay.records import HistoryFilter
from tests.conftest import (
    SECRET,
    WEBHOOK_BODY_KEYS,
    WEBHOOK_PAYMENT_KEYS,
    base_config_dict,
    build_config,
    fixture_json,
    relay_of,
)
from tests.peers import (
    SmtpRecorder,
    WebhookSink,
    slow,
    smtp_server,
    status,
    wait_until,
    webhook_sink,
)
from tests.test_ingest import post_json

SLIPS = {
    # fixture: (affiliate, link, code as it must appear in the email)
    "billet_printed_oxxo.json": (
        "K12345678M",
        "https://pay.hotmart.example/oxxo/HP1764271200123",
        "9300 0004 2176 4271 2001 2300 0049 9007",
    ),
    "billet_printed_baloto.json": (
        "K12345678M",
        "https://pay.hotmart.example/baloto/HP1764271300456",
        "7700 0176 4271 3004 56",
    ),
    "billet_printed_boleto.json": (
        "P98765432X",
        "https://hotm.art/bHP0970394859",
        "34191.09669 36967.100540 89356.830003 5 10720000099700",
    ),
    "billet_printed_pix.json": (
        "P98765432X",
        "https://pay.hotmart.example/pix/qr/HP0970394999.png",
        "00020101021226870014br.gov.bcb.pix",
    ),
}
METHODS = {
    "billet_printed_oxxo.json": "OXXO",
    "billet_printed_baloto.json": "Baloto",
    "billet_printed_boleto.json": "Boleto",
    "billet_printed_pix.json": "Pix",
}


@pytest.fixture
async def peers() -> AsyncIterator[tuple[SmtpRecorder, int, WebhookSink]]:
    async with smtp_server() as (recorder, port), webhook_sink() as sink:
        yield recorder, port, sink


def wired_config(tmp_path: Path, smtp_port: int, sink: WebhookSink, **delivery: Any) -> Any:
    raw = base_config_dict(tmp_path)
    raw["email"] = {
        "from": "Relay <relay@example.com>",
        "transport": "smtp",
        "smtp": {"host": "127.0.0.1", "port": smtp_port, "pool_size": 2},
    }
    raw["delivery"].update(delivery)
    for affiliate in raw["producers"][0]["affiliates"]:
        affiliate["destinations"].append(
            {
                "kind": "webhook",
                "id": "hook",
                "url": sink.url(f"/{affiliate['code']}"),
                "secret": SECRET,
            }
        )
    return raw


# Lucía's destinations under wired_config: the email's id is derived from its address.
LUCIA_MAIL = f"acme/K12345678M/{derived_id('email', 'lucia@example.com')}"
LUCIA_HOOK = "acme/K12345678M/hook"


async def settled(client: Any) -> bool:
    rows = await relay_of(client).store.history(HistoryFilter(limit=1000))
    return bool(rows) and all(row.status != "pending" for row in rows)


async def history(client: Any, **filters: Any) -> list[Any]:
    return await relay_of(client).store.history(HistoryFilter(limit=1000, **filters))


@pytest.mark.parametrize("name", sorted(SLIPS))
async def test_slip_reaches_permitted_affiliate_by_email_and_webhook(
    relay_client: Any, peers: Any, tmp_path: Path, name: str
) -> None:
    recorder, port, sink = peers
    client = await relay_client(build_config(wired_config(tmp_path, port, sink), tmp_path))
    payload = fixture_json(name)
    assert (await post_json(client, payload)).status == 200
    await wait_until(lambda: settled(client))
    code, link, shown_code = SLIPS[name]

    (hit,) = sink.at(f"/{code}")
    body = Webhook(SECRET).verify(hit.body.decode(), hit.headers)  # raises if the signature is bad
    assert body["event_id"] == payload["id"]
    assert body["payment"]["method"] == METHODS[name]
    assert body["affiliate"]["code"] == code
    assert link in (body["payment"]["slip_url"], body["payment"]["pix_qrcode"])

    address = "lucia@example.com" if code == "K12345678M" else "joao@example.com"
    (mail,) = recorder.to(address)
    text = mail.get_body(preferencelist=("plain",))
    assert text is not None
    content = text.get_content()
    assert link in content
    assert shown_code in content
    assert METHODS[name] in str(mail["Subject"])
    rows = await history(client, status="delivered")
    assert {row.channel for row in rows} == {"email", "webhook"}


async def test_non_permitted_affiliate_receives_nothing_on_either_channel(
    relay_client: Any, peers: Any, tmp_path: Path
) -> None:
    recorder, port, sink = peers
    client = await relay_client(build_config(wired_config(tmp_path, port, sink), tmp_path))
    payload = copy.deepcopy(fixture_json("billet_printed_oxxo.json"))
    payload["data"]["affiliates"].append({"affiliate_code": "P0000000NP", "name": "Denied"})
    payload["data"]["affiliates"].append({"affiliate_code": "UNKNOWN999", "name": "Stranger"})
    await post_json(client, payload)
    await wait_until(lambda: settled(client))
    assert sink.at("/P0000000NP") == []
    assert recorder.to("denied@example.com") == []
    assert len(sink.at("/K12345678M")) == 1
    withheld = await history(client, status="withheld")
    assert {(r.affiliate_code, r.channel) for r in withheld} == {
        ("P0000000NP", "email"),
        ("P0000000NP", "webhook"),
        ("UNKNOWN999", None),
    }


async def test_500_then_503_then_200_is_three_attempts_under_one_webhook_id(
    relay_client: Any, peers: Any, tmp_path: Path
) -> None:
    recorder, port, sink = peers
    sink.on("/K12345678M", status(500), status(503, {"Retry-After": "0"}), status(200))
    client = await relay_client(build_config(wired_config(tmp_path, port, sink), tmp_path))
    await post_json(client, fixture_json("billet_printed_oxxo.json"))
    await wait_until(lambda: settled(client))
    hits = sink.at("/K12345678M")
    assert [h.headers["webhook-id"] for h in hits] == [hits[0].headers["webhook-id"]] * 3
    for hit in hits:
        Webhook(SECRET).verify(hit.body.decode(), hit.headers)
    (row,) = await history(client, channel="webhook", affiliate_code="K12345678M")
    assert (row.status, row.attempts) == ("delivered", 3)
    detail = await relay_of(client).store.delivery(row.id)
    assert detail is not None
    assert [a.status_code for a in detail.attempts] == [500, 503, 200]
    assert all(a.request_payload for a in detail.attempts)


async def test_410_disables_the_destination_and_alerts_the_producer_once(
    relay_client: Any, peers: Any, tmp_path: Path
) -> None:
    recorder, port, sink = peers
    sink.on("/K12345678M", status(410))
    client = await relay_client(build_config(wired_config(tmp_path, port, sink), tmp_path))
    await post_json(client, fixture_json("billet_printed_oxxo.json"))
    await wait_until(lambda: settled(client))
    await wait_until(lambda: len(recorder.to("ops@acme.example")) == 1)
    health = await relay_of(client).store.destination_health()
    assert health[LUCIA_HOOK].enabled is False
    (alert,) = recorder.to("ops@acme.example")
    alert_text = alert.get_body(preferencelist=("plain",))
    assert alert_text is not None and LUCIA_HOOK in alert_text.get_content()

    # The next slip for that destination is skipped (and replayable); no second alert.
    await post_json(client, fixture_json("billet_printed_baloto.json"))
    await wait_until(lambda: settled(client))
    skipped = await history(client, status="skipped", channel="webhook")
    assert len(skipped) == 1 and skipped[0].reason.startswith("destination disabled")
    assert len(sink.at("/K12345678M")) == 1
    assert len(recorder.to("ops@acme.example")) == 1
    assert len(recorder.to("lucia@example.com")) == 2  # the email destination is unaffected


async def test_sustained_failures_disable_after_the_threshold(
    relay_client: Any, peers: Any, tmp_path: Path
) -> None:
    recorder, port, sink = peers
    sink.on("/K12345678M", *[status(404)] * 10)
    raw = wired_config(tmp_path, port, sink, disable_after_failures=2)
    client = await relay_client(build_config(raw, tmp_path))
    for name in ("billet_printed_oxxo.json", "billet_printed_baloto.json"):
        await post_json(client, fixture_json(name))
        await wait_until(lambda: settled(client))
    await wait_until(lambda: len(recorder.to("ops@acme.example")) == 1)
    health = await relay_of(client).store.destination_health()
    assert not health[LUCIA_HOOK].enabled
    assert health[LUCIA_HOOK].consecutive_failures == 2
    failed = await history(client, status="failed")
    assert [r.attempts for r in failed] == [1, 1]  # a 404 is permanent: no retries


async def test_timeout_is_retried(relay_client: Any, peers: Any, tmp_path: Path) -> None:
    recorder, port, sink = peers
    sink.on("/K12345678M", slow(1.0), status(200))
    raw = wired_config(tmp_path, port, sink, timeout="200ms")
    client = await relay_client(build_config(raw, tmp_path))
    await post_json(client, fixture_json("billet_printed_oxxo.json"))
    await wait_until(lambda: settled(client))
    (row,) = await history(client, channel="webhook", affiliate_code="K12345678M")
    assert (row.status, row.attempts) == ("delivered", 2)
    detail = await relay_of(client).store.delivery(row.id)
    assert detail is not None
    assert detail.attempts[0].outcome == "transient"
    assert (
        "timed out" in detail.attempts[0].detail.lower()
        or "timeout" in detail.attempts[0].detail.lower()
    )


async def test_redirect_is_not_followed(relay_client: Any, peers: Any, tmp_path: Path) -> None:
    recorder, port, sink = peers
    target = sink.url("/elsewhere")
    sink.on("/K12345678M", *[status(302, {"Location": target})] * 5)
    client = await relay_client(build_config(wired_config(tmp_path, port, sink), tmp_path))
    await post_json(client, fixture_json("billet_printed_oxxo.json"))
    await wait_until(lambda: settled(client))
    assert sink.at("/elsewhere") == []
    (row,) = await history(client, channel="webhook", affiliate_code="K12345678M")
    assert row.status == "failed"
    assert row.attempts == 5  # the default 5 attempts, then kept for replay


async def test_smtp_4xx_is_retried_and_5xx_fails_at_once(
    relay_client: Any, peers: Any, tmp_path: Path
) -> None:
    recorder, port, sink = peers
    recorder.script.extend(["451 4.3.0 try again later"])
    client = await relay_client(build_config(wired_config(tmp_path, port, sink), tmp_path))
    await post_json(client, fixture_json("billet_printed_oxxo.json"))
    await wait_until(lambda: settled(client))
    (row,) = await history(client, channel="email")
    assert (row.status, row.attempts) == ("delivered", 2)

    recorder.script.extend(["550 5.1.1 no such user"])
    await post_json(client, fixture_json("billet_printed_baloto.json"))
    await wait_until(lambda: settled(client))
    failed = await history(client, channel="email", status="failed")
    assert len(failed) == 1 and failed[0].attempts == 1
    detail = await relay_of(client).store.delivery(failed[0].id)
    assert detail is not None and detail.attempts[0].status_code == 550


async def test_revoking_buyer_data_stops_queued_deliveries(
    relay_client: Any, peers: Any, tmp_path: Path
) -> None:
    """The gate is checked again at send time, against the config then in force."""
    recorder, port, sink = peers
    raw = wired_config(tmp_path, port, sink)
    first = await relay_client(build_config(raw, tmp_path))
    # Queue a delivery far in the future, so it is still pending when the config changes.
    store = relay_of(first).store
    await post_json(first, fixture_json("billet_printed_oxxo.json"))
    await wait_until(lambda: settled(first))
    rows = await history(first, status="delivered", channel="webhook")
    await store.requeue([rows[0].id], now_ms=0)
    await first.close()

    raw["producers"][0]["affiliates"][0]["buyer_data"] = False
    second = await relay_client(build_config(raw, tmp_path))
    await wait_until(lambda: settled(second))
    (row,) = await history(second, channel="webhook", affiliate_code="K12345678M")
    assert row.status == "withheld"
    assert row.reason.startswith("at send time")
    assert len(sink.at("/K12345678M")) == 1  # only the first, permitted, delivery


async def test_webhook_body_has_the_spec_keys(
    relay_client: Any, peers: Any, tmp_path: Path
) -> None:
    recorder, port, sink = peers
    client = await relay_client(build_config(wired_config(tmp_path, port, sink), tmp_path))
    await post_json(client, fixture_json("billet_printed_oxxo.json"))
    await wait_until(lambda: settled(client))
    (hit,) = sink.at("/K12345678M")
    body = json.loads(hit.body)
    assert set(body) == WEBHOOK_BODY_KEYS  # what arrives is the whole SPEC body
    assert set(body["payment"]) == WEBHOOK_PAYMENT_KEYS
    assert body["buyer"]["email"] == "maria.gonzalez@example.com"
    assert body["notification"] == "slip"
    assert body["buyer"]["whatsapp_url"] is None  # sale recovery is off: no [recovery]


async def test_one_slow_destination_cannot_take_every_slot(
    relay_client: Any, peers: Any, tmp_path: Path
) -> None:
    recorder, port, sink = peers
    in_flight: dict[str, int] = {"now": 0, "max": 0}

    async def tracked(request: Any) -> Any:
        in_flight["now"] += 1
        in_flight["max"] = max(in_flight["max"], in_flight["now"])
        try:
            return await slow(0.5)(request)  # long enough that the fast one clearly overtakes
        finally:
            in_flight["now"] -= 1

    sink.on("/K12345678M", *[tracked] * 12)
    raw = wired_config(tmp_path, port, sink, per_destination_concurrency=2, concurrency=8)
    raw["producers"][0]["affiliates"][0]["destinations"] = [
        {"kind": "webhook", "url": sink.url("/K12345678M"), "secret": SECRET}
    ]
    client = await relay_client(build_config(raw, tmp_path))
    for i in range(6):
        payload = fixture_json("billet_printed_oxxo.json")
        payload["id"] = f"slow-{i}"
        await post_json(client, payload)
    # While the slow destination works through its queue, another affiliate is served.
    await post_json(client, fixture_json("billet_printed_boleto.json"))
    await wait_until(lambda: len(sink.at("/P98765432X")) == 1)
    assert len(sink.at("/K12345678M")) < 6  # the fast one did not wait behind the slow queue
    await wait_until(lambda: settled(client))
    assert len(sink.at("/K12345678M")) == 6
    assert in_flight["max"] == 2


async def test_shutdown_waits_for_attempts_in_flight_and_records_them(
    relay_client: Any, peers: Any, tmp_path: Path
) -> None:
    recorder, port, sink = peers
    sink.on("/K12345678M", slow(0.3))
    client = await relay_client(build_config(wired_config(tmp_path, port, sink), tmp_path))
    store = relay_of(client).store
    await post_json(client, fixture_json("billet_printed_oxxo.json"))
    await wait_until(lambda: len(sink.at("/K12345678M")) == 1)
    await client.close()  # cleanup drains: the slow attempt finishes and is written
    reopened = await relay_client(build_config(wired_config(tmp_path, port, sink), tmp_path))
    (row,) = await history(reopened, channel="webhook", affiliate_code="K12345678M")
    assert (row.status, row.attempts) == ("delivered", 1)
    assert store is not relay_of(reopened).store


async def test_attempt_cut_off_by_shutdown_is_sent_again_after_restart_with_same_id(
    relay_client: Any, peers: Any, tmp_path: Path
) -> None:
    recorder, port, sink = peers
    sink.on("/K12345678M", slow(1.5))
    raw = wired_config(tmp_path, port, sink, shutdown_grace="100ms")
    client = await relay_client(build_config(raw, tmp_path))
    await post_json(client, fixture_json("billet_printed_oxxo.json"))
    await wait_until(lambda: len(sink.at("/K12345678M")) == 1)
    await client.close()  # grace runs out: the attempt is cancelled, its lease kept
    reopened = await relay_client(build_config(raw, tmp_path))
    await wait_until(lambda: settled(reopened))
    hits = sink.at("/K12345678M")
    assert len(hits) == 2
    assert hits[0].headers["webhook-id"] == hits[1].headers["webhook-id"]
    (row,) = await history(reopened, channel="webhook", affiliate_code="K12345678M")
    assert row.status == "delivered"


async def test_an_internal_error_is_a_bounded_failed_attempt_without_buyer_data_in_logs(
    relay_client: Any, peers: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Fault injection: the stored payload is corrupt. Retries stop; the log names no buyer."""
    recorder, port, sink = peers
    client = await relay_client(build_config(wired_config(tmp_path, port, sink), tmp_path))
    store = relay_of(client).store
    await store.set_destination_enabled(LUCIA_MAIL, False, "hold", now_ms=0)
    await store.set_destination_enabled(LUCIA_HOOK, False, "hold", now_ms=0)
    await post_json(client, fixture_json("billet_printed_oxxo.json"))
    await wait_until(lambda: settled(client))
    await store.run(
        lambda c: c.execute(
            'UPDATE events SET payload_json = \'{"buyer": "maria.gonzalez@example.com"}\''
        )
    )
    await store.set_destination_enabled(LUCIA_HOOK, True, "", now_ms=0)
    rows = await history(client, channel="webhook")
    assert await store.requeue([rows[0].id], now_ms=0) == [rows[0].id]
    relay_of(client).wake_dispatcher()
    await wait_until(lambda: settled(client))
    (row,) = await history(client, channel="webhook")
    assert (row.status, row.attempts) == ("failed", 5)
    assert "internal error: ValidationError" in row.last_error
    assert "maria.gonzalez" not in caplog.text
    # Defect 10: the bug can be found: its traceback is logged (without its message).
    logged = [r for r in caplog.records if "internal error (ValidationError)" in r.getMessage()]
    assert logged and all(r.exc_info for r in logged)
    assert "model_validate_json" in caplog.text


async def test_a_malformed_slip_url_never_disables_a_healthy_destination(
    relay_client: Any, peers: Any, tmp_path: Path
) -> None:
    """Defect 5: the event's fault is recorded, but it is not the destination's."""
    recorder, port, sink = peers
    raw = wired_config(tmp_path, port, sink, disable_after_failures=1)
    client = await relay_client(build_config(raw, tmp_path))
    payload = fixture_json("billet_printed_oxxo.json")
    payload["data"]["purchase"]["payment"]["billet_url"] = "https://pay.hotmart.example[/x"
    assert (await post_json(client, payload)).status == 200
    await wait_until(lambda: settled(client))
    health = await relay_of(client).store.destination_health()
    for key in (LUCIA_MAIL, LUCIA_HOOK):
        assert key not in health or (health[key].enabled, health[key].consecutive_failures) == (
            True,
            0,
        )
    assert recorder.to("ops@acme.example") == []  # nobody was told it was disabled


async def settled_with_webhook_template(
    relay_client: Any, peers: Any, tmp_path: Path, template: str
) -> Any:
    """Serve with acme's webhook.json overridden by `template` and destinations disabled
    after one failed delivery; post the OXXO slip; return the client once settled."""
    recorder, port, sink = peers
    overrides = tmp_path / "override-templates"
    overrides.mkdir()
    (overrides / "webhook.json").write_text(template, encoding="utf-8")
    raw = wired_config(tmp_path, port, sink, disable_after_failures=1)
    raw["producers"][0]["templates_dir"] = str(overrides)
    client = await relay_client(build_config(raw, tmp_path))
    await post_json(client, fixture_json("billet_printed_oxxo.json"))
    await wait_until(lambda: settled(client))
    assert sink.at("/K12345678M") == []  # nothing was sent...
    health = await relay_of(client).store.destination_health()
    assert LUCIA_HOOK not in health or health[LUCIA_HOOK].enabled
    assert recorder.to("ops@acme.example") == []  # ...and it cost the destination nothing
    return client


async def test_our_template_error_is_recorded_without_touching_destination_health(
    relay_client: Any, peers: Any, tmp_path: Path
) -> None:
    client = await settled_with_webhook_template(
        relay_client, peers, tmp_path, "{ this is not json"
    )
    (row,) = await history(client, channel="webhook", affiliate_code="K12345678M")
    assert row.status == "failed" and "template error" in row.last_error


async def test_a_render_over_the_bound_is_never_sent_and_costs_the_destination_nothing(
    relay_client: Any, peers: Any, tmp_path: Path
) -> None:
    """Defect 1: no input may make one request body, or one stored attempt, unbounded."""
    # Two bytes a character: under the render's character bound, over the byte bound.
    huge = MAX_OUTGOING_BYTES // 2 + 1
    client = await settled_with_webhook_template(
        relay_client, peers, tmp_path, f'{{"pad": "{{{{ "é" * {huge} }}}}"}}'
    )
    (row,) = await history(client, channel="webhook", affiliate_code="K12345678M")
    assert (row.status, row.attempts) == ("failed", 1)  # ours, permanent: no retries
    assert f"over the {MAX_OUTGOING_BYTES}-byte bound" in row.last_error
    detail = await relay_of(client).store.delivery(row.id)
    assert detail is not None
    (kept,) = detail.attempts
    assert len(kept.request_payload.encode()) <= MAX_STORED_PAYLOAD_BYTES
    assert kept.request_payload.endswith(CUT_MARK)


async def test_a_huge_response_is_kept_cut_and_marked(
    relay_client: Any, peers: Any, tmp_path: Path
) -> None:
    recorder, port, sink = peers
    sink.on("/K12345678M", lambda request: web.Response(status=500, text="e" * 200_000))
    client = await relay_client(build_config(wired_config(tmp_path, port, sink), tmp_path))
    await post_json(client, fixture_json("billet_printed_oxxo.json"))
    await wait_until(lambda: settled(client))
    (row,) = await history(client, channel="webhook", affiliate_code="K12345678M")
    detail = await relay_of(client).store.delivery(row.id)
    assert detail is not None
    first = detail.attempts[0]
    assert first.status_code == 500
    assert len(first.response_excerpt.encode()) <= MAX_STORED_RESPONSE_BYTES
    assert first.response_excerpt.startswith("eeee") and first.response_excerpt.endswith(CUT_MARK)
    assert not detail.attempts[-1].response_excerpt.endswith(CUT_MARK)  # the short "ok"


async def test_attempt_lines_let_an_event_be_followed_without_buyer_data(
    relay_client: Any, peers: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    recorder, port, sink = peers
    sink.on("/K12345678M", status(503, {"Retry-After": "0"}), status(200))
    client = await relay_client(build_config(wired_config(tmp_path, port, sink), tmp_path))
    caplog.set_level(logging.INFO)
    payload = fixture_json("billet_printed_oxxo.json")
    await post_json(client, payload)
    await wait_until(lambda: settled(client))
    (row,) = await history(client, channel="webhook", affiliate_code="K12345678M")
    lines = [r.getMessage() for r in caplog.records if r.name == "relay.attempt"]
    prefix = f"event {payload['id']} delivery {row.id} to {LUCIA_HOOK}"
    retrying = [line for line in lines if line.startswith(f"{prefix} attempt 1:")]
    assert len(retrying) == 1
    assert "retrying, status 503, next retry at 20" in retrying[0]
    assert f"{prefix} attempt 2: delivered, status 200" in lines
    logged = "\n".join(lines)
    for pii in ("maria.gonzalez", "María", "Gonz", "+52"):
        assert pii not in logged
