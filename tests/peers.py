"""Real peers on loopback for delivery tests: an aiosmtpd server and an aiohttp webhook sink."""

from __future__ import annotations

import asyncio
import email
import email.policy
import socket
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from aiosmtpd.controller import Controller


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class ReceivedMail:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage


@dataclass
class SmtpRecorder:
    """aiosmtpd handler: records each message; `script` queues replies for DATA."""

    received: list[ReceivedMail] = field(default_factory=list)
    script: deque[str] = field(default_factory=deque)  # e.g. "451 try later"; empty: accept

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.script:
            return self.script.popleft()
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.received.append(ReceivedMail(envelope.mail_from, list(envelope.rcpt_tos), message))
        return "250 OK"

    def to(self, address: str) -> list[EmailMessage]:
        return [m.message for m in self.received if address in m.rcpt_tos]


@asynccontextmanager
async def smtp_server() -> AsyncIterator[tuple[SmtpRecorder, int]]:
    recorder = SmtpRecorder()
    port = free_port()
    controller = Controller(recorder, hostname="127.0.0.1", port=port)
    await asyncio.to_thread(controller.start)
    try:
        yield recorder, port
    finally:
        await asyncio.to_thread(controller.stop)


@dataclass
class Hit:
    path: str
    headers: dict[str, str]
    body: bytes
    received_at: float  # time.time()


Reply = Callable[[web.Request], Any]


@dataclass
class WebhookSink:
    """An affiliate's webhook: records every request; `script` queues replies per path."""

    hits: list[Hit] = field(default_factory=list)
    script: dict[str, deque[Reply]] = field(default_factory=dict)
    base_url: str = ""

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def on(self, path: str, *replies: Reply) -> None:
        self.script.setdefault(path, deque()).extend(replies)

    def at(self, path: str) -> list[Hit]:
        return [hit for hit in self.hits if hit.path == path]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.hits.append(Hit(request.path, dict(request.headers), body, time.time()))
        replies = self.script.get(request.path)
        if replies:
            reply = replies.popleft()
            result = reply(request)
            if asyncio.iscoroutine(result):
                result = await result
            assert isinstance(result, web.StreamResponse)
            return result
        return web.Response(text="ok")


def status(code: int, headers: dict[str, str] | None = None) -> Reply:
    return lambda request: web.Response(status=code, text=f"status {code}", headers=headers)


def slow(seconds: float, code: int = 200) -> Reply:
    async def reply(request: web.Request) -> web.Response:
        await asyncio.sleep(seconds)
        return web.Response(status=code, text="slow")

    return reply


@asynccontextmanager
async def webhook_sink(port: int = 0) -> AsyncIterator[WebhookSink]:
    sink = WebhookSink()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", sink.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    bound = runner.addresses[0][1]
    sink.base_url = f"http://127.0.0.1:{bound}"
    try:
        yield sink
    finally:
        await runner.cleanup()


async def wait_until(predicate: Callable[[], Any], timeout_s: float = 10.0) -> None:
    """Poll an async or sync predicate; tests wait for outcomes, never for retry delays."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


class FixedResolver(AbstractResolver):
    """A DNS answer chosen by the test: the seam the SSRF guard wraps."""

    def __init__(self, *addresses: str) -> None:
        self._addresses = addresses

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(hostname=host, host=address, port=port, family=family, proto=0, flags=0)
            for address in self._addresses
        ]

    async def close(self) -> None:
        pass
