"""The webhook channel against a real aiohttp receiver on loopback."""

from __future__ import annotations

import asyncio
import base64
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest
from aiohttp import web
from aiohttp.resolver import ThreadedResolver
from aiohttp.test_utils import TestServer
from standardwebhooks import Webhook

from relay.addresses import is_forbidden_address, parse_ip_literal
from relay.channels.address_guard import (
    AddressRefusedError,
    GuardedResolver,
)
from relay.channels.base import (
    MAX_RESPONSE_EXCERPT_BYTES,
    PermanentError,
    TransientError,
    WebhookMessage,
)
from relay.channels.webhook import WebhookChannel, open_webhook_channel, parse_retry_after_s
from tests.peers import FixedResolver

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
BODY = b'{"event": "BILLET_PRINTED", "buyer": {"email": "buyer@example.com"}}'
REFUSAL = "resolves to a private address (set delivery.allow_private_networks = true to allow)"


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """An affiliate's webhook endpoint that records what it gets."""

    server: TestServer
    requests: list[Received] = field(default_factory=list)
    release_slow: asyncio.Event = field(default_factory=asyncio.Event)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.server.port}{path}"


def _make_app(receiver_ref: list[Receiver]) -> web.Application:
    async def record(request: web.Request) -> Received:
        received = Received(request.path, dict(request.headers), await request.read())
        receiver_ref[0].requests.append(received)
        return received

    async def status(request: web.Request) -> web.Response:
        await record(request)
        code = int(request.match_info["code"])
        headers = {}
        if "retry_after" in request.query:
            headers["Retry-After"] = request.query["retry_after"]
        return web.Response(status=code, text=f"status {code}", headers=headers)

    async def ok(request: web.Request) -> web.Response:
        await record(request)
        return web.Response(text="thanks", headers={"X-Request-Id": "req-1", "X-Other": "no"})

    async def redirect(request: web.Request) -> web.Response:
        await record(request)
        raise web.HTTPFound(location=str(request.url.with_path("/target")))

    async def slow(request: web.Request) -> web.Response:
        await record(request)
        await asyncio.wait_for(receiver_ref[0].release_slow.wait(), timeout=5)
        return web.Response(text="late")

    async def latin1(request: web.Request) -> web.Response:
        await record(request)
        return web.Response(body=b"\xe9" * 30_000, content_type="text/plain", charset="latin-1")

    async def bogus_charset(request: web.Request) -> web.Response:
        await record(request)
        return web.Response(body="olá".encode(), content_type="text/plain", charset="x-bogus")

    async def big(request: web.Request) -> web.Response:
        await record(request)
        return web.Response(body=b"x" * 100_000, content_type="text/plain")

    app = web.Application()
    app.router.add_post("/status/{code}", status)
    app.router.add_post("/ok", ok)
    app.router.add_post("/redirect", redirect)
    app.router.add_post("/target", ok)
    app.router.add_post("/slow", slow)
    app.router.add_post("/big", big)
    app.router.add_post("/latin1", latin1)
    app.router.add_post("/bogus-charset", bogus_charset)
    return app


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    ref: list[Receiver] = []
    server = TestServer(_make_app(ref), host="127.0.0.1", port=0)
    ref.append(Receiver(server))
    await server.start_server()
    try:
        yield ref[0]
    finally:
        ref[0].release_slow.set()
        await server.close()


# Generous: a loaded CI machine must never turn an answer into a timeout. Only the
# timeout test uses a short one (impatient_channel).
PATIENT_S = 10.0


@pytest.fixture
async def channel() -> AsyncIterator[WebhookChannel]:
    async with open_webhook_channel(
        timeout_s=PATIENT_S, concurrency=4, allow_private_networks=True
    ) as opened:
        yield opened


@pytest.fixture
async def impatient_channel() -> AsyncIterator[WebhookChannel]:
    async with open_webhook_channel(
        timeout_s=0.2, concurrency=4, allow_private_networks=True
    ) as opened:
        yield opened


@pytest.fixture
async def guarded_channel() -> AsyncIterator[WebhookChannel]:
    async with open_webhook_channel(
        timeout_s=PATIENT_S, concurrency=4, allow_private_networks=False
    ) as opened:
        yield opened


def _message(url: str, message_id: str = "msg_1") -> WebhookMessage:
    return WebhookMessage(url=url, secret=SECRET, message_id=message_id, body=BODY)


async def test_2xx_returns_report_with_verifiable_signature(
    channel: WebhookChannel, receiver: Receiver
) -> None:
    report = await channel.send(_message(receiver.url("/ok")))

    assert report.status_code == 200
    assert report.response_excerpt == "thanks"
    assert report.latency_ms > 0
    assert report.response_headers["x-request-id"] == "req-1"
    assert "x-other" not in report.response_headers
    assert report.response_headers["content-type"].startswith("text/plain")
    [received] = receiver.requests
    assert received.body == BODY
    assert Webhook(SECRET).verify(received.body, received.headers) is not None
    assert received.headers["webhook-id"] == "msg_1"
    assert received.headers["Content-Type"] == "application/json"
    assert received.headers["User-Agent"] == "relay/0.1"


async def test_every_attempt_carries_the_same_id_and_the_given_timestamp(
    channel: WebhookChannel, receiver: Receiver
) -> None:
    now_s = datetime.now(UTC).timestamp()
    await channel.send(_message(receiver.url("/ok"), "msg_same"), now_s=now_s)
    await channel.send(_message(receiver.url("/ok"), "msg_same"), now_s=now_s + 60)

    first, second = receiver.requests
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == "msg_same"
    assert first.headers["webhook-timestamp"] == str(int(now_s))
    assert second.headers["webhook-timestamp"] == str(int(now_s + 60))
    for received in (first, second):
        Webhook(SECRET).verify(received.body, received.headers)


@pytest.mark.parametrize("code", [500, 502, 503, 408, 429])
async def test_retryable_statuses_are_transient(
    channel: WebhookChannel, receiver: Receiver, code: int
) -> None:
    with pytest.raises(TransientError) as caught:
        await channel.send(_message(receiver.url(f"/status/{code}")))

    assert caught.value.report.status_code == code
    assert caught.value.report.response_excerpt == f"status {code}"
    assert caught.value.retry_after_s is None


@pytest.mark.parametrize("code", [429, 503])
async def test_retry_after_is_read_for_429_and_503(
    channel: WebhookChannel, receiver: Receiver, code: int
) -> None:
    with pytest.raises(TransientError) as caught:
        await channel.send(_message(receiver.url(f"/status/{code}?retry_after=7")))

    assert caught.value.retry_after_s == 7.0
    assert caught.value.report.response_headers["retry-after"] == "7"


@pytest.mark.parametrize("code", [400, 401, 404, 422])
async def test_other_4xx_are_permanent(
    channel: WebhookChannel, receiver: Receiver, code: int
) -> None:
    with pytest.raises(PermanentError) as caught:
        await channel.send(_message(receiver.url(f"/status/{code}")))

    assert caught.value.report.status_code == code
    assert not caught.value.disable_destination


async def test_410_disables_the_destination(channel: WebhookChannel, receiver: Receiver) -> None:
    with pytest.raises(PermanentError) as caught:
        await channel.send(_message(receiver.url("/status/410")))

    assert caught.value.disable_destination
    assert caught.value.report.status_code == 410


async def test_redirect_is_a_failure_and_is_not_followed(
    channel: WebhookChannel, receiver: Receiver
) -> None:
    with pytest.raises(TransientError) as caught:
        await channel.send(_message(receiver.url("/redirect")))

    assert caught.value.reason.startswith("redirect not followed (302 to http://127.0.0.1:")
    assert caught.value.report.status_code == 302
    assert caught.value.report.response_headers["location"].endswith("/target")
    assert [r.path for r in receiver.requests] == ["/redirect"]


async def test_slow_receiver_times_out_as_transient(
    impatient_channel: WebhookChannel, receiver: Receiver
) -> None:
    with pytest.raises(TransientError) as caught:
        await impatient_channel.send(_message(receiver.url("/slow")))

    assert "timed out after 0.2s" in caught.value.reason
    assert caught.value.report.status_code is None
    assert 150 < caught.value.report.latency_ms < 1500


async def test_connection_refused_is_transient(channel: WebhookChannel) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]

    with pytest.raises(TransientError) as caught:
        await channel.send(_message(f"http://127.0.0.1:{closed_port}/ok"))

    assert caught.value.reason.startswith("connection failed:")


async def test_response_excerpt_is_bounded(channel: WebhookChannel, receiver: Receiver) -> None:
    report = await channel.send(_message(receiver.url("/big")))

    assert len(report.response_excerpt.encode()) == MAX_RESPONSE_EXCERPT_BYTES


async def test_excerpt_decodes_the_charset_and_stays_within_the_byte_bound(
    channel: WebhookChannel, receiver: Receiver
) -> None:
    report = await channel.send(_message(receiver.url("/latin1")))

    assert report.response_excerpt == "é" * (MAX_RESPONSE_EXCERPT_BYTES // 2)


async def test_excerpt_of_an_unknown_charset_is_read_as_utf8(
    channel: WebhookChannel, receiver: Receiver
) -> None:
    report = await channel.send(_message(receiver.url("/bogus-charset")))

    assert report.response_excerpt == "olá"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://example.com/hook", r"not an http\(s\) URL"),
        ("http://127.1:9/hook", "invalid URL"),
        ("http://[::1/hook", "not a valid URL"),
    ],
)
async def test_unusable_urls_are_permanent(channel: WebhookChannel, url: str, reason: str) -> None:
    with pytest.raises(PermanentError, match=reason):
        await channel.send(_message(url))


async def test_a_body_that_is_not_utf8_is_permanent(
    channel: WebhookChannel, receiver: Receiver
) -> None:
    message = WebhookMessage(url=receiver.url("/ok"), secret=SECRET, message_id="m", body=b"\xff")

    with pytest.raises(PermanentError, match="UTF-8"):
        await channel.send(message)

    assert receiver.requests == []


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_private_destination_is_refused_before_anything_is_sent(
    guarded_channel: WebhookChannel, receiver: Receiver, host: str
) -> None:
    with pytest.raises(PermanentError) as caught:
        await guarded_channel.send(_message(receiver.url("/ok", host=host)))

    assert caught.value.reason == f"refused: {host} {REFUSAL}"
    assert not caught.value.disable_destination
    assert receiver.requests == []


async def test_invalid_secret_is_permanent(channel: WebhookChannel, receiver: Receiver) -> None:
    message = WebhookMessage(url=receiver.url("/ok"), secret="whsec_", message_id="m", body=BODY)

    with pytest.raises(PermanentError, match="secret"):
        await channel.send(message)

    assert receiver.requests == []


async def test_guarded_resolver_refuses_a_name_that_resolves_to_loopback() -> None:
    resolver = GuardedResolver(ThreadedResolver())
    try:
        with pytest.raises(AddressRefusedError) as caught:
            await resolver.resolve("localhost", 80)
    finally:
        await resolver.close()

    assert caught.value.host == "localhost"


async def test_guarded_resolver_keeps_only_public_addresses() -> None:
    resolver = GuardedResolver(FixedResolver("10.0.0.5", "93.184.216.34", "169.254.169.254"))

    results = await resolver.resolve("mixed.example", 443)

    assert [r["host"] for r in results] == ["93.184.216.34"]


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",  # noqa: S104 - the unspecified address, listed to be refused
        "224.0.0.1",
        "240.0.0.1",
        "::1",
        "::",
        "fe80::1",
        "fd00:ec2::254",
        "fc00::1",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
    ],
)
def test_non_public_addresses_are_forbidden(address: str) -> None:
    parsed = parse_ip_literal(address)
    assert parsed is not None
    assert is_forbidden_address(parsed)


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses_are_allowed(address: str) -> None:
    parsed = parse_ip_literal(address)
    assert parsed is not None
    assert not is_forbidden_address(parsed)


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    now_s = 1_700_000_000.0
    later = format_datetime(datetime.fromtimestamp(now_s + 120, UTC), usegmt=True)
    earlier = format_datetime(datetime.fromtimestamp(now_s - 120, UTC), usegmt=True)

    assert parse_retry_after_s("7", now_s=now_s) == 7.0
    assert parse_retry_after_s(later, now_s=now_s) == 120.0
    assert parse_retry_after_s(earlier, now_s=now_s) == 0.0
    assert parse_retry_after_s("Tue, 14 Nov 2023 22:15:20 -0000", now_s=now_s) == 120.0
    assert parse_retry_after_s("", now_s=now_s) is None
    assert parse_retry_after_s("soon", now_s=now_s) is None
    assert parse_retry_after_s("-5", now_s=now_s) is None
