"""Shared test helpers: fixtures on disk, a config builder, the real app on a real SQLite file."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from relay.app import init_app
from relay.app_keys import RELAY
from relay.config import Config, parse_config
from relay.destination_ids import address_of, derived_id, destination_key
from relay.engine import Relay

# `store` (each store test on SQLite and on PostgreSQL), `backend_dsn`, `postgres_dsn`.
pytest_plugins = ["tests.store_backends"]

FIXTURES = Path(__file__).parent / "fixtures"
HOTTOK = "test-hottok-acme"  # the token the v1 fixture carries
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


# SPEC §6: the default webhook body, and its payment object (plus our "test" flag).
WEBHOOK_BODY_KEYS = frozenset(
    {
        "event",
        "event_id",
        "occurred_at",
        "affiliate",
        "product",
        "purchase",
        "payment",
        "buyer",
        "test",
        "notification",  # slip, reminder, paid, expired or event (sale recovery)
    }
)
WEBHOOK_PAYMENT_KEYS = frozenset(
    {"type", "method", "slip_url", "slip_code", "pix_code", "pix_qrcode", "expires_at"}
)


def fixture_json(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text(encoding="utf-8"))
    return data


def fixture_text(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8").strip()


def base_config_dict(tmp_path: Path) -> dict[str, Any]:
    """acme with four affiliates; only P0000000NP is denied buyer data."""
    return {
        "storage": {"sqlite_path": str(tmp_path / "relay.sqlite3")},
        "delivery": {
            "retry_delays": ["10ms", "10ms", "10ms", "10ms"],
            "timeout": "2s",
            "allow_private_networks": True,
            "shutdown_grace": "2s",
        },
        "email": {
            "from": "Relay <relay@example.com>",
            "transport": "maildir",
            "maildir": str(tmp_path / "mail"),
        },
        "producers": [
            {
                "id": "acme",
                "name": "Acme Cursos",
                "hottok": HOTTOK,
                "alert_email": "ops@acme.example",
                "affiliates": [
                    {
                        "code": "K12345678M",
                        "name": "Lucía",
                        "buyer_data": True,
                        "events": ["PURCHASE_BILLET_PRINTED", "PURCHASE_APPROVED"],
                        "locale": "es",
                        "destinations": [{"kind": "email", "to": "lucia@example.com"}],
                    },
                    {
                        "code": "P98765432X",
                        "name": "João",
                        "buyer_data": True,
                        "locale": "pt",
                        "destinations": [{"kind": "email", "to": "joao@example.com"}],
                    },
                    {
                        "code": "Q58388177J",
                        "buyer_data": True,
                        "destinations": [{"kind": "email", "to": "ana@example.com"}],
                    },
                    {
                        "code": "P0000000NP",
                        "buyer_data": False,
                        "destinations": [{"kind": "email", "to": "denied@example.com"}],
                    },
                ],
            }
        ],
    }


def build_config(raw: dict[str, Any], tmp_path: Path) -> Config:
    return parse_config(copy.deepcopy(raw), {}, base_dir=tmp_path)


@pytest.fixture
def config_dict(tmp_path: Path) -> dict[str, Any]:
    return base_config_dict(tmp_path)


ClientFactory = Callable[[Config], Any]


@pytest.fixture
def relay_client(aiohttp_client: Callable[..., Any]) -> Callable[[Config], Any]:
    """Start the real app (store, channels, dispatcher) for a config; returns a test client."""

    async def start(config: Config) -> TestClient[Any, Any]:
        client: TestClient[Any, Any] = await aiohttp_client(init_app(config))
        return client

    return start


def relay_of(client: TestClient[Any, Any]) -> Relay:
    return client.app[RELAY]


def key_of(raw: dict[str, Any], code: str, index: int = 0) -> str:
    """The key the relay gives destination `index` of affiliate `code` in a raw config:
    `producer/affiliate/id`, with the id as written or derived from kind and address."""
    producer = raw["producers"][0]
    (affiliate,) = [a for a in producer["affiliates"] if a["code"] == code]
    destination = affiliate["destinations"][index]
    address = address_of(destination["kind"], destination)
    assert address is not None
    destination_id = destination.get("id") or derived_id(destination["kind"], address)
    return destination_key(producer["id"], code, destination_id)


def pytest_collection_finish(session: pytest.Session) -> None:
    from tests.bench_smoke import start_bench

    start_bench(session)


def pytest_sessionfinish(session: pytest.Session) -> None:
    from tests.bench_smoke import stop_bench

    stop_bench(session)
