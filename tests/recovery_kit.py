"""What the sale recovery tests share: a config with `[recovery]`, Hotmart bodies of one
sale as it moves on (slip, approval, cancel...), and a clock the test moves by hand."""

from __future__ import annotations

import copy
import itertools
import json
import time
from pathlib import Path
from typing import Any

from relay.config import Config
from relay.records import DeliveryRow, HistoryFilter
from relay.store import Store
from tests.conftest import SECRET, base_config_dict, build_config, fixture_json
from tests.peers import WebhookSink

HOUR_MS = 3_600_000
LUCIA = "K12345678M"  # es, buyer_data = true
DENIED = "P0000000NP"  # buyer_data = false
TRANSACTION = "HP0970394999"
_ids = itertools.count(1)


class ManualClock:
    """Wall time that moves only when the test says so; it starts at the real time, so
    what is signed at the start still verifies."""

    def __init__(self) -> None:
        self.start_ms = time.time_ns() // 1_000_000
        self.now = self.start_ms

    def now_ms(self) -> int:
        return self.now

    def at(self, hours: float) -> int:
        """The moment `hours` after the start."""
        return self.start_ms + int(hours * HOUR_MS)


def recovery_config(
    tmp_path: Path,
    sink: WebhookSink,
    smtp_port: int | None = None,
    **recovery: Any,
) -> dict[str, Any]:
    """acme with Lucía (permitted; an email and a webhook destination) and P0000000NP
    (not permitted); `[recovery]` with what is given."""
    raw = base_config_dict(tmp_path)
    if smtp_port is not None:
        raw["email"] = {
            "from": "Relay <relay@example.com>",
            "transport": "smtp",
            "smtp": {"host": "127.0.0.1", "port": smtp_port, "pool_size": 2},
        }
    producer = raw["producers"][0]
    producer["affiliates"] = [
        a for a in producer["affiliates"] if a["code"] in (LUCIA, "P0000000NP")
    ]
    for affiliate in producer["affiliates"]:
        affiliate["destinations"] = [
            {"kind": "email", "id": "mail", "to": f"{affiliate['code'].lower()}@example.com"},
            {
                "kind": "webhook",
                "id": "hook",
                "url": sink.url(f"/{affiliate['code']}"),
                "secret": SECRET,
            },
        ]
    raw["recovery"] = {"remind_before": "1h", "slip_validity": {"BILLET": "3d"}, **recovery}
    return raw


def config_of(raw: dict[str, Any], tmp_path: Path) -> Config:
    return build_config(copy.deepcopy(raw), tmp_path)


def pix_slip(expires_at_ms: int, affiliate: str = LUCIA, transaction: str = TRANSACTION) -> Any:
    """A Pix slip printed through `affiliate`'s link, expiring at `expires_at_ms`."""
    body = fixture_json("billet_printed_pix.json")
    body["id"] = f"slip-{next(_ids)}"
    body["data"]["affiliates"] = [{"affiliate_code": affiliate, "name": "x"}]
    body["data"]["purchase"]["transaction"] = transaction
    body["data"]["purchase"]["payment"]["pix_expiration_date"] = expires_at_ms
    return body


def boleto_slip(order_date_ms: int, affiliate: str = LUCIA, transaction: str = "HP1") -> Any:
    body = fixture_json("billet_printed_boleto.json")
    body["id"] = f"slip-{next(_ids)}"
    body["data"]["affiliates"] = [{"affiliate_code": affiliate, "name": "x"}]
    body["data"]["purchase"]["transaction"] = transaction
    body["data"]["purchase"]["order_date"] = order_date_ms
    return body


def later(slip: Any, event: str, status: str) -> Any:
    """What Hotmart posts for the same sale when it moves on: same transaction, new id."""
    body = copy.deepcopy(slip)
    body["id"] = f"{event.lower()}-{next(_ids)}"
    body["event"] = event
    body["data"]["purchase"]["status"] = status
    return body


def approved(slip: Any) -> Any:
    return later(slip, "PURCHASE_APPROVED", "APPROVED")


async def rows(store: Store, **filters: Any) -> list[DeliveryRow]:
    return await store.history(HistoryFilter(limit=1000, **filters))


async def notices(store: Store, notification: str) -> list[DeliveryRow]:
    return await rows(store, notification=notification)


def bodies(sink: WebhookSink, affiliate: str = LUCIA) -> list[dict[str, Any]]:
    return [json.loads(hit.body) for hit in sink.at(f"/{affiliate}")]


def said(sink: WebhookSink, notification: str, affiliate: str = LUCIA) -> list[dict[str, Any]]:
    """The webhook bodies `affiliate` received that say `notification`."""
    return [body for body in bodies(sink, affiliate) if body["notification"] == notification]
