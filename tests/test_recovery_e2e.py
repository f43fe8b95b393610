"""Sale recovery end to end, in real (short) time, against real peers: Hotmart posts a
slip and then its approval; the affiliate's mail server (aiosmtpd) and webhook (an
aiohttp server, verifying every signature with the `standardwebhooks` library) get the
slip, the reminder when it falls due, and the paid notice."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks import Webhook

from relay.records import HistoryFilter
from tests.conftest import SECRET, relay_of
from tests.peers import SmtpRecorder, WebhookSink, smtp_server, wait_until, webhook_sink
from tests.recovery_kit import LUCIA, approved, config_of, pix_slip, recovery_config
from tests.test_ingest import post_json


@pytest.fixture
async def peers() -> AsyncIterator[tuple[SmtpRecorder, int, WebhookSink]]:
    async with smtp_server() as (recorder, port), webhook_sink() as sink:
        yield recorder, port, sink


def verified(sink: WebhookSink) -> list[dict[str, Any]]:
    """Every body Lucía's webhook received, each signature checked as a receiver would."""
    found = []
    for hit in sink.at(f"/{LUCIA}"):
        headers = {k.lower(): v for k, v in hit.headers.items()}
        found.append(Webhook(SECRET).verify(hit.body, headers))
    return found


def subjects(recorder: SmtpRecorder) -> list[str]:
    return [str(m["Subject"]) for m in recorder.to("k12345678m@example.com")]


async def test_a_slip_then_its_approval_as_hotmart_posts_them(
    relay_client: Any, peers: Any, tmp_path: Path
) -> None:
    recorder, port, sink = peers
    raw = recovery_config(tmp_path, sink, port, remind_before="1s")
    client = await relay_client(config_of(raw, tmp_path))
    now_ms = time.time_ns() // 1_000_000

    # One sale is reminded for real: its Pix code lapses in 2.5 s, the reminder is due 1 s
    # before. Another is paid before its reminder (due in an hour) can come.
    reminded = pix_slip(expires_at_ms=now_ms + 2500, transaction="HPE2E1")
    paid = pix_slip(expires_at_ms=now_ms + 3_600_000 + 1000, transaction="HPE2E2")
    for body in (reminded, paid):
        assert (await post_json(client, body)).status == 200
    await wait_until(lambda: len(sink.at(f"/{LUCIA}")) == 2 and len(recorder.received) == 2)
    assert [b["notification"] for b in verified(sink)] == ["slip", "slip"]

    assert (await post_json(client, approved(paid))).status == 200
    await wait_until(lambda: any(b["notification"] == "paid" for b in verified(sink)))
    await wait_until(lambda: any(b["notification"] == "reminder" for b in verified(sink)))
    await wait_until(lambda: len(recorder.received) == 4)

    by_notice = {(b["notification"], b["purchase"]["transaction"]) for b in verified(sink)}
    assert by_notice == {
        ("slip", "HPE2E1"),
        ("slip", "HPE2E2"),
        ("paid", "HPE2E2"),
        ("reminder", "HPE2E1"),
    }
    reminder = next(b for b in verified(sink) if b["notification"] == "reminder")
    assert reminder["payment"]["pix_code"] == reminded["data"]["purchase"]["payment"]["pix_code"]
    assert reminder["buyer"]["whatsapp_url"].startswith("https://wa.me/5511987654321?text=")
    assert sorted(subjects(recorder)) == [
        "Código Pix generado: Método Confeitaria Lucrativa",
        "Código Pix generado: Método Confeitaria Lucrativa",
        "Pagado: Método Confeitaria Lucrativa (Pix)",
        "Recordatorio: el código Pix de Método Confeitaria Lucrativa vence pronto",
    ]
    store = relay_of(client).store
    cancelled = await store.history(HistoryFilter(status="cancelled"))
    assert [(r.notification, r.transaction_code) for r in cancelled] == [
        ("reminder", "HPE2E2"),
        ("reminder", "HPE2E2"),
    ]
