"""The JSON API: its OpenAPI document names every route, keys with slashes work either
way, and schemathesis's generated requests against a running `relay serve` get no 5xx
and only answers the document describes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.acceptance.harness import Relay, relay_config, running
from tests.admin.admin_kit import (
    ADMIN_TOKEN,
    BEARER,
    LUCIA,
    admin_config_dict,
    api_json,
    post_fixture,
)
from tests.admin.test_admin_auth import routes_under
from tests.conftest import build_config, fixture_json

# Generated requests per operation: enough to try each parameter's edges, few enough that
# the whole run takes seconds in `make test` (RELAY_SCHEMATHESIS_EXAMPLES raises it).
EXAMPLES = int(os.environ.get("RELAY_SCHEMATHESIS_EXAMPLES", "25"))


async def test_the_openapi_document_names_every_api_route(
    relay_client: Any, tmp_path: Path
) -> None:
    client = await relay_client(build_config(admin_config_dict(tmp_path), tmp_path))
    status_code, document = await api_json(client, "GET", "/api/openapi.json")
    assert status_code == 200
    assert document["openapi"].startswith("3.1")
    documented = {
        (method.upper(), path.replace("{id}", "1").replace("{key}", "acme/K12345678M/crm"))
        for path, operations in document["paths"].items()
        for method in operations
    }
    assert set(routes_under(client.app, "/api")) == documented
    for operations in document["paths"].values():
        for operation in operations.values():
            assert {"401", "429"} <= set(operation["responses"])


async def test_a_destination_key_works_with_its_slashes_plain_or_encoded(
    relay_client: Any, tmp_path: Path
) -> None:
    raw = admin_config_dict(tmp_path, "https://crm.example/hook?token=abc")
    client = await relay_client(build_config(raw, tmp_path))
    key = f"acme/{LUCIA}/crm"
    status_code, body = await api_json(client, "POST", f"/api/destinations/{key}/disable")
    assert status_code == 200, body
    assert body["destination"]["enabled"] is False
    assert body["destination"]["target"] == "webhook https://crm.example/hook?…"
    encoded = quote(key, safe="")
    status_code, body = await api_json(client, "POST", f"/api/destinations/{encoded}/enable")
    assert status_code == 200, body
    assert body["destination"]["enabled"] is True
    status_code, body = await api_json(client, "POST", "/api/destinations/acme%2Fnobody%2Fx/enable")
    assert status_code == 404 and "no destination acme/nobody/x" in body["details"][0]


async def test_replay_and_reveal_through_the_api(relay_client: Any, tmp_path: Path) -> None:
    client = await relay_client(build_config(admin_config_dict(tmp_path), tmp_path))
    await post_fixture(client, "billet_printed_no_affiliate.json")
    status_code, body = await api_json(client, "POST", "/api/deliveries/1/replay")
    assert status_code == 409 and "not replayable" in body["details"][0]  # ignored: never sent
    status_code, body = await api_json(client, "POST", "/api/deliveries/77/replay")
    assert status_code == 404
    status_code, body = await api_json(client, "POST", "/api/replay", json={"ids": [1, 77]})
    assert status_code == 202
    assert [r["id"] for r in body["not_replayable"]] == [1, 77] and body["queued"] == []
    status_code, body = await api_json(client, "POST", "/api/replay", json={})
    assert status_code == 400
    status_code, body = await api_json(
        client, "POST", "/api/replay", json={"ids": [1], "failed_since": "1h"}
    )
    assert status_code == 400
    status_code, body = await api_json(
        client, "POST", "/api/replay", json={"failed_since": "banana"}
    )
    assert status_code == 400 and body["details"][0]["field"] == "failed_since"
    status_code, body = await api_json(client, "POST", "/api/replay", json={"failed_since": "7d"})
    assert status_code == 202 and body["message"] == "nothing to replay"
    status_code, body = await api_json(client, "POST", "/api/deliveries/1/reveal")
    assert status_code == 200 and body["event"]["buyer_revealed"] is True
    status_code, body = await api_json(client, "GET", "/api/audit")
    actions = [entry["action"] for entry in body["entries"]]
    assert actions == ["reveal", "replay-failed", "replay", "replay"]
    assert (await client.get("/api/deliveries/99999999999999999999", headers=BEARER)).status == 404


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """`relay serve` with an admin token and a few events of every kind in its history."""
    workdir = tmp_path_factory.mktemp("schemathesis")
    raw = relay_config(workdir)
    raw["admin"] = {"token": ADMIN_TOKEN}
    relay = Relay.from_config(raw, workdir)
    with running(relay):
        for name in (
            "billet_printed_oxxo.json",
            "billet_printed_boleto.json",
            "billet_printed_no_affiliate.json",
        ):
            assert relay.post(fixture_json(name)).status == 200
        yield relay


def test_generated_requests_get_no_5xx_and_only_documented_answers(served: Relay) -> None:
    base_url = f"http://127.0.0.1:{served.port}"
    schema = schemathesis.openapi.from_url(f"{base_url}/api/openapi.json", headers=BEARER)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 11  # every route (schemathesis may leave out the document)

    for operation in operations:

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,  # the same requests every run: a failure can be run again
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def check(case: Any) -> None:
            response = case.call(base_url=base_url, headers=BEARER)
            assert response.status_code < 500, (case.method, case.formatted_path, response.text)
            case.validate_response(response, headers=BEARER)

        check()
