"""Helpers for the admin page's tests: a config with an admin token, signing in, forms."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from tests.conftest import SECRET, base_config_dict, fixture_json
from tests.test_ingest import post_json

ADMIN_TOKEN = "adm-9f3c2b7e4d1a6058-the-admin-token"
SMTP_PASSWORD = "smtp-pw-5e1f0c9a77"
BEARER = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
LUCIA = "K12345678M"  # the oxxo fixture's affiliate: buyer_data = true
JOAO = "P98765432X"  # the boleto fixture's affiliate


def admin_config_dict(tmp_path: Path, webhook_url: str | None = None) -> dict[str, Any]:
    """The suite's usual config with an admin token and a secret in every place one goes;
    with `webhook_url`, Lucía's destination is a signed webhook there (id `crm`)."""
    raw = copy.deepcopy(base_config_dict(tmp_path))
    raw["admin"] = {"token": ADMIN_TOKEN}
    raw["email"]["smtp"] = {"username": "relay", "password": SMTP_PASSWORD}
    if webhook_url is not None:
        lucia = next(a for a in raw["producers"][0]["affiliates"] if a["code"] == LUCIA)
        lucia["destinations"] = [
            {"kind": "webhook", "id": "crm", "url": webhook_url, "secret": SECRET}
        ]
    return raw


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "the page has no form with a CSRF token"
    return found.group(1)


async def log_in(client: TestClient[Any, Any]) -> str:
    """Sign in through the login form; return the CSRF token the pages' forms carry."""
    resp = await client.post(
        "/admin/login", data={"token": ADMIN_TOKEN, "next": "/admin/deliveries"}
    )
    assert resp.status == 200, await resp.text()
    return csrf_of(await resp.text())


async def post_fixture(client: TestClient[Any, Any], name: str) -> dict[str, Any]:
    body: dict[str, Any] = await (await post_json(client, fixture_json(name))).json()
    return body


async def api_json(client: TestClient[Any, Any], method: str, path: str, **kw: Any) -> Any:
    resp = await client.request(method, path, headers=BEARER, **kw)
    return resp.status, await resp.json()
