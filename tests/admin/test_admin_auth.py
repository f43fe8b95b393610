"""Who may use the admin page and its API: every page redirects to the login and every
API route answers 401 without the token; cookies are signed and flagged; forms need
their CSRF token; wrong tokens are limited by rate; no secret ever shows."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from relay.admin.auth import SESSION_COOKIE, SESSION_TTL_S, AdminKeys
from relay.admin.ratelimit import LoginLimiter
from relay.admin.state import ADMIN
from tests.admin.admin_kit import (
    ADMIN_TOKEN,
    BEARER,
    SMTP_PASSWORD,
    admin_config_dict,
    log_in,
    post_fixture,
)
from tests.conftest import HOTTOK, SECRET, build_config, relay_of
from tests.peers import wait_until, webhook_sink

SAMPLE = {"id": "1", "name": "admin.css", "key": "acme/K12345678M/crm"}


def routes_under(app: web.Application, prefix: str) -> Iterator[tuple[str, str]]:
    """(method, path) of every route the sub-app at `prefix` has, its variables filled in."""
    for resource in app.router.resources():
        info = resource.get_info()
        if isinstance(resource, web.PrefixedSubAppResource) and info["prefix"] == prefix:
            for route in info["app"].router.routes():
                if route.method == "HEAD":
                    continue
                path = re.sub(
                    r"\{(\w+)(:[^}]*)?\}", lambda m: SAMPLE[m[1]], route.resource.canonical
                )
                yield route.method, path


@pytest.fixture
async def client(relay_client: Any, tmp_path: Path) -> TestClient[Any, Any]:
    started: TestClient[Any, Any] = await relay_client(
        build_config(admin_config_dict(tmp_path), tmp_path)
    )
    return started


async def test_without_a_session_every_page_redirects_to_the_login(
    client: TestClient[Any, Any],
) -> None:
    seen = 0
    for method, path in routes_under(client.app, "/admin"):
        if path.startswith(("/admin/login", "/admin/static/")):
            continue
        resp = await client.request(method, path, allow_redirects=False)
        assert resp.status == 303, (method, path, resp.status)
        assert resp.headers["Location"].startswith("/admin/login"), (method, path)
        seen += 1
    assert seen >= 12  # every page and every action, not a lucky few
    resp = await client.get("/admin/deliveries?status=failed", allow_redirects=False)
    assert resp.headers["Location"] == "/admin/login?next=/admin/deliveries%3Fstatus%3Dfailed"


async def test_without_the_token_every_api_route_answers_401_in_json(
    client: TestClient[Any, Any],
) -> None:
    seen = 0
    for method, path in routes_under(client.app, "/api"):
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": ADMIN_TOKEN}):
            relay_of(client)  # the app is up
            client.app[ADMIN].limiter = LoginLimiter()  # these guesses are not the point here
            resp = await client.request(method, path, headers=headers)
            assert resp.status == 401, (method, path, headers)
            body = await resp.json()
            assert body["error"] == "unauthorized"
            assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        seen += 1
    assert seen >= 11


async def test_the_api_takes_the_bearer_token_in_any_case_of_the_scheme(
    client: TestClient[Any, Any],
) -> None:
    for scheme in ("Bearer", "bearer", "BEARER"):
        resp = await client.get(
            "/api/destinations", headers={"Authorization": f"{scheme} {ADMIN_TOKEN}"}
        )
        assert resp.status == 200


async def test_login_sets_a_signed_httponly_strict_cookie(client: TestClient[Any, Any]) -> None:
    resp = await client.post(
        "/admin/login",
        data={"token": ADMIN_TOKEN, "next": "/admin/destinations"},
        allow_redirects=False,
    )
    assert resp.status == 303
    assert resp.headers["Location"] == "/admin/destinations"
    cookie = resp.cookies[SESSION_COOKIE]
    assert cookie["httponly"] is True
    assert cookie["samesite"] == "Strict"
    assert cookie["path"] == "/admin/"
    assert not cookie["secure"]  # plain http here: a Secure cookie would never come back
    assert ADMIN_TOKEN not in cookie.value


async def test_the_cookie_is_secure_when_the_request_came_over_https(
    client: TestClient[Any, Any],
) -> None:
    resp = await client.post(
        "/admin/login",
        data={"token": ADMIN_TOKEN},
        headers={"X-Forwarded-Proto": "https"},
        allow_redirects=False,
    )
    assert resp.cookies[SESSION_COOKIE]["secure"] is True


async def test_a_wrong_token_gets_no_cookie(client: TestClient[Any, Any]) -> None:
    resp = await client.post("/admin/login", data={"token": "guess"}, allow_redirects=False)
    assert resp.status == 401
    assert SESSION_COOKIE not in resp.cookies
    assert "Wrong token" in await resp.text()
    assert "guess" not in await resp.text()


async def test_login_goes_back_only_to_a_page_of_this_admin(client: TestClient[Any, Any]) -> None:
    for target in ("//evil.example/x", "https://evil.example/", "/admin//evil.example", "/\\evil"):
        resp = await client.post(
            "/admin/login", data={"token": ADMIN_TOKEN, "next": target}, allow_redirects=False
        )
        assert resp.headers["Location"] == "/admin/deliveries", target


async def test_forged_expired_and_foreign_cookies_are_refused(
    client: TestClient[Any, Any],
) -> None:
    admin = client.app[ADMIN]
    now = admin.now_s()
    other = AdminKeys("another-token").new_session(now)
    expired = admin.keys.new_session(now - SESSION_TTL_S - 1)
    valid = admin.keys.new_session(now)
    forged = valid[:-2] + ("AA" if not valid.endswith("AA") else "BB")
    for value in (other, expired, forged, "v1.x.y.z", "", valid + "x" * 300):
        client.session.cookie_jar.clear()
        client.session.cookie_jar.update_cookies({SESSION_COOKIE: value})
        resp = await client.get("/admin/deliveries", allow_redirects=False)
        assert resp.status == 303, value
    client.session.cookie_jar.update_cookies({SESSION_COOKIE: valid})
    assert (await client.get("/admin/deliveries", allow_redirects=False)).status == 200


async def test_a_session_ends_after_its_lifetime(client: TestClient[Any, Any]) -> None:
    await log_in(client)
    admin = client.app[ADMIN]
    started = admin.now_s()
    admin.wall_clock_s = lambda: started + SESSION_TTL_S + 1
    resp = await client.get("/admin/deliveries", allow_redirects=False)
    assert resp.status == 303


async def test_a_form_without_its_csrf_token_is_refused_and_changes_nothing(
    client: TestClient[Any, Any],
) -> None:
    csrf = await log_in(client)
    key = (await (await client.get("/api/destinations", headers=BEARER)).json())["destinations"][0][
        "key"
    ]
    for token in (None, "", "x" * 43, AdminKeys("another-token").csrf_token(_session())):
        data = {"key": key} if token is None else {"key": key, "csrf": token}
        resp = await client.post("/admin/destinations/disable", data=data, allow_redirects=False)
        assert resp.status == 403
        assert "Form refused" in await resp.text()
    states = (await (await client.get("/api/destinations", headers=BEARER)).json())["destinations"]
    assert all(d["enabled"] for d in states)
    assert await relay_of(client).store.audit_log() != []  # the login
    assert [e.action for e in await relay_of(client).store.audit_log()] == ["login"]
    # The same form with its token goes through.
    resp = await client.post(
        "/admin/destinations/disable", data={"key": key, "csrf": csrf}, allow_redirects=False
    )
    assert resp.status == 303


def _session() -> Any:
    from relay.admin.auth import Session

    return Session("nonce", 0)


async def test_logout_forgets_the_session(client: TestClient[Any, Any]) -> None:
    csrf = await log_in(client)
    resp = await client.post("/admin/logout", data={"csrf": csrf}, allow_redirects=False)
    assert resp.status == 303
    assert resp.cookies[SESSION_COOKIE].value == ""
    resp = await client.get("/admin/deliveries", allow_redirects=False)
    assert resp.status == 303


async def test_wrong_tokens_are_limited_by_rate_per_address(
    client: TestClient[Any, Any],
) -> None:
    now = [1000.0]
    client.app[ADMIN].limiter = LoginLimiter(burst=3, refill_per_s=0.1, clock=lambda: now[0])
    for _ in range(3):
        assert (await client.post("/admin/login", data={"token": "guess"})).status == 401
    refused = await client.post("/admin/login", data={"token": ADMIN_TOKEN})
    assert refused.status == 429  # even the right token: else the limit would tell guesses apart
    assert refused.headers["Retry-After"] == "10"
    assert SESSION_COOKIE not in refused.cookies
    api = await client.get("/api/deliveries", headers=BEARER)
    assert api.status == 429  # the API's guesses and the form's share one budget
    assert (await api.json())["error"] == "too many wrong tokens"
    now[0] += 10
    assert (await client.get("/api/deliveries", headers=BEARER)).status == 200
    assert (await client.post("/admin/login", data={"token": ADMIN_TOKEN})).status == 200


def test_the_limiter_keeps_bounded_memory_and_forgets_the_oldest() -> None:
    now = [0.0]
    limiter = LoginLimiter(burst=1, refill_per_s=0.001, max_addresses=100, clock=lambda: now[0])
    for n in range(1000):
        limiter.failed(f"10.0.{n // 256}.{n % 256}")
    assert limiter.tracked() == 100
    assert limiter.retry_after_s("10.0.3.231") is not None  # the newest are remembered
    assert limiter.retry_after_s("10.0.0.0") is None  # the oldest were let go


async def test_pages_send_a_strict_content_security_policy(client: TestClient[Any, Any]) -> None:
    pages = [await client.get("/admin/login")]
    await log_in(client)
    pages += [
        await client.get("/admin/deliveries"),
        await client.get("/admin/deliveries/999"),  # an error page too
        await client.post("/admin/replay", data={}),  # a refused form too
    ]
    for resp in pages:
        assert "default-src 'none'" in resp.headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"]
        assert resp.headers["X-Frame-Options"] == "DENY"
        assert resp.headers["Referrer-Policy"] == "no-referrer"
        assert resp.headers["Cache-Control"] == "no-store"
    assert "<script>" not in await pages[1].text()  # scripts only from the stylesheet's origin


async def test_without_an_admin_token_the_admin_and_api_are_off_and_say_so(
    relay_client: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    raw = admin_config_dict(tmp_path)
    del raw["admin"]
    client = await relay_client(build_config(raw, tmp_path))
    for path in ("/admin/", "/admin/deliveries", "/api/deliveries", "/api/openapi.json"):
        resp = await client.get(path, headers=BEARER)
        assert resp.status == 404
        assert "set admin.token" in (await resp.json())["details"][0]
    assert any("admin page and API are off" in r.getMessage() for r in caplog.records)


async def test_no_secret_appears_on_any_page_or_api_answer(
    relay_client: Any, tmp_path: Path
) -> None:
    async with webhook_sink() as sink:
        client = await relay_client(
            build_config(admin_config_dict(tmp_path, sink.url("/hook")), tmp_path)
        )
        await post_fixture(client, "billet_printed_oxxo.json")
        await post_fixture(client, "billet_printed_boleto.json")
        await wait_until(lambda: sink.hits)
        csrf = await log_in(client)
        bodies = [await (await client.get("/admin/login")).text()]
        for path in ("/admin/deliveries", "/admin/destinations", "/admin/audit"):
            bodies.append(await (await client.get(path)).text())
        for delivery_id in (1, 2):
            bodies.append(await (await client.get(f"/admin/deliveries/{delivery_id}")).text())
            reveal = await client.post(
                f"/admin/deliveries/{delivery_id}/reveal", data={"csrf": csrf}
            )
            bodies.append(await reveal.text())
            bodies.append(await (await client.get(f"/admin/events/{delivery_id}")).text())
        for path in (
            "/api/deliveries",
            "/api/deliveries/1",
            "/api/events/1",
            "/api/destinations",
            "/api/audit",
            "/api/openapi.json",
        ):
            bodies.append(await (await client.get(path, headers=BEARER)).text())
        bodies.append(await (await client.post("/api/deliveries/1/reveal", headers=BEARER)).text())
        everything = "\n".join(bodies)
        assert "acme/K12345678M/crm" in everything  # the pages were really rendered
        for secret in (ADMIN_TOKEN, SMTP_PASSWORD, SECRET, SECRET.removeprefix("whsec_"), HOTTOK):
            assert secret not in everything, secret
